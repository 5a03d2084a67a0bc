"""Skill-Mix: the seeded generator, the real skill list and topics, a user's generations."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from skn.errors import DataError
from skn.tasks.skillmix import (
    METAPHOR,
    SPATIAL,
    Skill,
    generate_examples,
    is_skills_file,
    load_generations,
    load_skills,
    load_topics,
)

from helpers import SHARED  # noqa: E402
SKILLMIX = SHARED / "data" / "skillmix"
needs_skillmix = pytest.mark.skipif(not SKILLMIX.is_dir(), reason="../shared/data/skillmix is absent")


def test_generator_counts_balance_and_seed() -> None:
    examples = generate_examples(300, seed=0)
    assert len(examples) == 600
    assert Counter(e.meta["skill"] for e in examples) == {SPATIAL: 300, METAPHOR: 300}
    assert len({e.instruction for e in examples}) == 600
    assert examples == generate_examples(300, seed=0)
    assert examples != generate_examples(300, seed=1)
    assert [e.meta["skill"] for e in examples[:4]] == [SPATIAL, METAPHOR, SPATIAL, METAPHOR]


def test_generator_varies_its_wording() -> None:
    examples = generate_examples(300, seed=0)
    for skill in (SPATIAL, METAPHOR):
        mine = [e for e in examples if e.meta["skill"] == skill]
        kinds = Counter(e.meta["question_type"] for e in mine)
        assert len(kinds) >= 5 and min(kinds.values()) >= 10, kinds
        assert len({e.meta["topic"] for e in mine}) >= 8
        # many distinct sentence frames once the scene words are blanked out
        frames = {re.sub(r"\b(the|a|an) [a-z ]+?(?=[ ,.?\"])", "X", e.instruction) for e in mine}
        assert len(frames) >= 40


def test_template_and_answers_are_right() -> None:
    for e in generate_examples(200, seed=5):
        assert e.instruction.startswith("Question: ") and e.instruction.endswith("\nAnswer:")
        assert e.completion.startswith(" ") and e.completion.endswith(".") and not e.completion[1].islower()
        kind, question = e.meta["question_type"], e.instruction
        if kind == "distance":
            x, y = (int(n) for n in re.findall(r"\b(\d+) (?:steps|metres|paces)", question))
            assert e.completion.startswith(f" {abs(x - y)} ")
        if kind == "fit":
            numbers = [int(n) for n in re.findall(r"(\d+) cm", question)]
            thing_first = "The " in question.split("Question: ")[1][:4]
            width, hole = numbers if thing_first else numbers[::-1]
            assert e.completion.startswith(" Yes" if width < hole else " No")
        if kind == "turn":
            side = re.search(r"on the (left|right)\.", question)
            assert side is not None
            assert e.completion == (" On the right." if side[1] == "left" else " On the left.")


@needs_skillmix
def test_real_skill_list_and_topics() -> None:
    skills = load_skills(SKILLMIX / "skills.csv")
    assert len(skills) == 10
    by_name = {s.name: s for s in skills}
    assert by_name["spatial reasoning"].category == "logical" and by_name["metaphor"].category == "literary"
    assert by_name["metaphor"].definition.startswith("a figure of speech")
    assert "complex question (loaded question with implicit assumption )" in by_name
    topics = load_topics(SKILLMIX / "topics.txt")
    assert len(topics) == 10 and topics[0] == "Sewing" and topics[-1] == "Knots"
    assert is_skills_file(SKILLMIX / "skills.csv")
    examples = generate_examples(300, seed=0, topics=topics, skills=skills)
    used = {e.meta["topic"] for e in examples}
    assert {"Urbanism", "The Ottoman Empire"} <= used
    assert any("Urbanism" in e.instruction for e in examples)


def test_skill_list_without_the_two_skills(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="the skill list has no 'metaphor'"):
        generate_examples(5, skills=[Skill("logical", "spatial reasoning", "d", "e")])
    bad = tmp_path / "skills.csv"
    bad.write_text("category,skill,definition\nlogical,x,y\n")
    with pytest.raises(DataError, match=re.escape(f"{bad}:1: the header lacks column(s) example")):
        load_skills(bad)
    bad.write_text('category,skill,definition,example\nlogical,x,y\n')
    with pytest.raises(DataError, match=re.escape(f"{bad}:2: the row does not have")):
        load_skills(bad)


def test_user_generations(tmp_path: Path) -> None:
    path = tmp_path / "gen.jsonl"
    rows = [{"instruction": "Write about a box.", "completion": " The box is a fortress.", "skill": "metaphor"},
            {"instruction": "Where is the cup?", "completion": " Left of the plate.", "skill": "spatial reasoning"}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    examples = load_generations(path)
    assert [e.meta["skill"] for e in examples] == ["metaphor", "spatial reasoning"]
    path.write_text(json.dumps({"instruction": "a", "completion": "b"}) + "\n")
    with pytest.raises(DataError, match=re.escape(f"{path}:1: missing field 'skill'")):
        load_generations(path)
