"""Skill-Mix in minimal pairs: within a pair only the relation phrases differ, and the answers are right."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from skn.errors import DataError, UsageError
from skn.tasks import get_task, load_task
from skn.tasks.skillmix import METAPHOR, SCENES, SPATIAL
from skn.tasks.skillmix_pairs import METAPHORS, SPATIAL_RELATIONS, generate_pairs

from helpers import SHARED  # noqa: E402
SKILLMIX = SHARED / "data" / "skillmix"
PHRASE = "|".join(re.escape(r.phrase) for r in sorted(SPATIAL_RELATIONS + METAPHORS, key=lambda r: -len(r.phrase)))
CLAIM = re.compile(rf'the (\w+) says: "The ([a-z ]+?) is ({PHRASE}) the ([a-z ]+?), and the \4 is ({PHRASE}) the ([a-z ]+?)\." '
                   r"What does this tell us about the \2\?\nAnswer:$")


def _parts(instruction: str) -> tuple[str, str, str, str, str]:
    """(frame without the two relation phrases, first phrase, second phrase, first object, second object)."""
    m = CLAIM.search(instruction)
    assert m is not None, instruction
    frame = instruction[:m.start(3)] + "R1" + instruction[m.end(3):m.start(5)] + "R2" + instruction[m.end(5):]
    return frame, m[3], m[5], m[2], m[4]


def test_pairs_differ_only_in_their_relation_phrases() -> None:
    examples = generate_pairs(400, seed=0)
    assert len(examples) == 800 and examples == generate_pairs(400, seed=0) and examples != generate_pairs(400, seed=1)
    assert Counter(e.meta["skill"] for e in examples) == {SPATIAL: 400, METAPHOR: 400}
    frames = set()
    for spatial, metaphor in zip(examples[::2], examples[1::2]):
        assert (spatial.meta["skill"], metaphor.meta["skill"]) == (SPATIAL, METAPHOR)
        assert spatial.meta["pair"] == metaphor.meta["pair"] and spatial.meta["topic"] == metaphor.meta["topic"]
        s_frame, s1, s2, a, b = _parts(spatial.instruction)
        m_frame, m1, m2, a2, b2 = _parts(metaphor.instruction)
        assert s_frame == m_frame and (a, b) == (a2, b2)  # the wording outside the relations is the same
        assert len(spatial.instruction.split()) == len(metaphor.instruction.split())
        assert s1 == s2 and m1 != m2  # one spatial relation chained; two different metaphors
        relation = {r.phrase: r for r in SPATIAL_RELATIONS}[s1]
        figure = {r.phrase: r for r in METAPHORS}[m1]
        assert spatial.completion == " " + relation.answer
        assert metaphor.completion == " " + figure.answer.format(b=b) and f"the {b}" in metaphor.completion
        assert spatial.meta["relation"] == s1 and metaphor.meta["relation"] == m1
        frames.add(s_frame)
    assert len(frames) == 400  # no frame is used by two pairs
    assert len({e.meta["relation"] for e in examples if e.meta["skill"] == SPATIAL}) == len(SPATIAL_RELATIONS)
    assert len({e.meta["topic"] for e in examples}) == len(SCENES)


def test_every_spatial_length_has_two_metaphors_of_that_length() -> None:
    lengths = Counter(m.words for m in METAPHORS)
    assert all(lengths[r.words] >= 2 for r in SPATIAL_RELATIONS)
    assert len({r.phrase for r in SPATIAL_RELATIONS + METAPHORS}) == len(SPATIAL_RELATIONS) + len(METAPHORS)


def test_spatial_answers_follow_the_chain() -> None:
    """The first object is at the end the relation points to: 'A left of B, B left of C' -> A is leftmost."""
    ends = {"to the left of": "left", "to the right of": "right", "on top of": "top", "in front of": "front",
            "higher up than": "highest", "lower down than": "lowest", "further back than": "back"}
    assert set(ends) == {r.phrase for r in SPATIAL_RELATIONS}
    for r in SPATIAL_RELATIONS:
        assert ends[r.phrase] in r.answer, r


def test_limits_and_topics() -> None:
    with pytest.raises(UsageError, match="at least 1"):
        generate_pairs(0)
    with pytest.raises(UsageError, match=r"could only make 1200 distinct minimal pairs from 10 scenes"):
        generate_pairs(1201)
    more = generate_pairs(1300, seed=0, topics=["Urbanism", "sewing"])  # a known topic adds no scene
    assert "At a gathering about Urbanism, the" in " ".join(e.instruction for e in more)
    assert {e.meta["topic"] for e in more} == {s.topic for s in SCENES} | {"Urbanism"}


def test_task_loads_and_refuses_other_data(tmp_path: Path) -> None:
    data = load_task(get_task("skillmix-pairs"), [], [], 100, 200, seed=0)
    assert len(data.train) == 100 and len(data.val) == 200
    assert Counter(e.meta["skill"] for e in data.val) == {SPATIAL: 100, METAPHOR: 100}
    assert not {e.instruction for e in data.train} & {e.instruction for e in data.val}
    items = tmp_path / "mine.jsonl"
    items.write_text('{"instruction": "q", "completion": "a", "skill": "metaphor"}\n', encoding="utf-8")
    with pytest.raises(UsageError, match=r"mine.jsonl: skillmix-pairs generates its items; --data takes only"):
        load_task(get_task("skillmix-pairs"), [items], [], None, None, seed=0)


@pytest.mark.skipif(not SKILLMIX.is_dir(), reason="../shared/data/skillmix is absent")
def test_skill_mix_files_give_categories_and_scenes(tmp_path: Path) -> None:
    data = load_task(get_task("skillmix-pairs"), [SKILLMIX / "skills.csv", SKILLMIX / "topics.txt"], [], None, None, seed=0)
    assert {(e.meta["skill"], e.meta["category"]) for e in data.train + data.val} == {(SPATIAL, "logical"), (METAPHOR, "literary")}
    assert len({e.meta["topic"] for e in data.train + data.val}) > len(SCENES)
    partial = tmp_path / "skills.csv"
    partial.write_text("category,skill,definition,example\nlogical,spatial reasoning,d,e\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"the skill list has no 'metaphor' \(it has: spatial reasoning\)"):
        load_task(get_task("skillmix-pairs"), [partial], [], None, None, seed=0)
