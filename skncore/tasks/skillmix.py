"""Skill-Mix's "spatial reasoning" and "metaphor" (the paper's RQ1) as a seeded, template-generated QA set.

No labelled Skill-Mix QA set is public (the paper's was written by GPT-4), so this module builds one:
short questions whose answer needs one of the two skills, set in everyday scenes. Every template and
word list here was written for skn; nothing is copied from Skill-Mix or elsewhere. The skills' names
and categories come from Skill-Mix's `skills.csv` when one is given (`--data skills.csv`), and its
`topics.txt` adds scenes ("At a gathering about Urbanism, ..."). A user's own generations (JSONL or
CSV with `instruction`, `completion` and a `skill` field) are read as they are.
"""

from __future__ import annotations

import csv
import io
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from skn.inputs.data import Example, check_header, load_examples, read_text
from skn.errors import DataError, UsageError

SPATIAL = "spatial reasoning"
METAPHOR = "metaphor"
SKILLS = (SPATIAL, METAPHOR)
CATEGORIES = {SPATIAL: "logical", METAPHOR: "literary"}  # Skill-Mix's categories for the two skills
PER_SKILL = 300


@dataclass(frozen=True)
class Skill:
    """One row of Skill-Mix's `skills.csv`."""

    category: str
    name: str
    definition: str
    example: str


@dataclass(frozen=True)
class Scene:
    """Where a question happens: a topic, a phrase for the place, things in it, people in it."""

    topic: str
    place: str  # "in the sewing room"
    things: tuple[str, ...]  # small objects that can sit in a row or a stack
    people: tuple[str, ...]


# Our own scenes. A topic read from topics.txt without a scene here gets `generic_scene`.
SCENES = (
    Scene("sewing", "in the sewing room", ("spool", "thimble", "pincushion", "tape measure", "button tin", "iron"),
          ("tailor", "apprentice")),
    Scene("beekeeping", "beside the apiary", ("smoker", "hive tool", "honey jar", "veil", "frame", "brush"),
          ("beekeeper", "neighbour")),
    Scene("gardening", "in the vegetable garden", ("watering can", "trowel", "seed tray", "rake", "bucket", "pot"),
          ("gardener", "child")),
    Scene("cooking", "in the kitchen", ("kettle", "bread bin", "salt jar", "teapot", "mixing bowl", "toaster"),
          ("cook", "guest")),
    Scene("sailing", "on the deck of the boat", ("lantern", "coil of rope", "compass", "bucket", "flag", "oar"),
          ("skipper", "deckhand")),
    Scene("chess", "at the chess club", ("clock", "board", "trophy", "score sheet", "cup of tea", "lamp"),
          ("player", "referee")),
    Scene("camping", "at the campsite", ("tent", "stove", "water bottle", "backpack", "torch", "map"),
          ("hiker", "ranger")),
    Scene("woodworking", "in the workshop", ("hammer", "saw", "plane", "jar of nails", "clamp", "chisel"),
          ("carpenter", "customer")),
    Scene("libraries", "in the reading room", ("atlas", "globe", "dictionary", "desk lamp", "stamp", "ledger"),
          ("librarian", "student")),
    Scene("railways", "on the station platform", ("suitcase", "bench", "ticket machine", "clock", "bin", "sign"),
          ("conductor", "traveller")),
)

_GENERIC_THINGS = ("lamp", "box", "chair", "vase", "basket", "notebook")


def generic_scene(topic: str) -> Scene:
    return Scene(topic, f"at a gathering about {topic}", _GENERIC_THINGS, ("organiser", "visitor"))


# ---------------------------------------------------------------- spatial reasoning

Question = tuple[str, str, str]  # (question, answer, question type)

_AXES = (  # (before, after, the "first" end, the "last" end): "A is BEFORE B" orders A first
    ("to the left of", "to the right of", "leftmost", "rightmost"),
    ("above", "below", "highest", "lowest"),
    ("in front of", "behind", "nearest the front", "furthest back"),
    ("north of", "south of", "furthest north", "furthest south"),
)
_SIDES = {"left": "right", "right": "left"}


def _the(thing: str) -> str:
    return f"the {thing}"


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _row(scene: Scene, rng: random.Random) -> Question:
    a, b, c = rng.sample(scene.things, 3)
    before, after, first, last = rng.choice(_AXES)
    if rng.random() < 0.5:
        facts = f"the {a} is {before} the {b}, and the {b} is {before} the {c}"
    else:
        facts = f"the {c} is {after} the {b}, and the {a} is {before} the {b}"
    ask = rng.choice(("first", "last", "middle"))
    if ask == "middle":
        question = rng.choice(("Which object is in the middle?", "Which one lies between the other two?"))
        return f"{_cap(scene.place)}, {facts}. {question}", _the(b), "order_middle"
    end, answer = (first, a) if ask == "first" else (last, c)
    question = rng.choice((f"Which object is {end}?", f"Of the three, which is {end}?"))
    return f"{_cap(scene.place)}, {facts}. {question}", _the(answer), "order_end"


def _stack(scene: Scene, rng: random.Random) -> Question:
    a, b, c = rng.sample(scene.things, 3)
    facts = rng.choice((
        f"the {a} rests on the {b}, and the {b} rests on the {c}",
        f"someone put the {b} on the {c} and then put the {a} on the {b}",
    ))
    if rng.random() < 0.5:
        q = rng.choice(("What is at the bottom of the pile?", "Which object is at the very bottom?"))
        return f"{_cap(scene.place)}, {facts}. {q}", _the(c), "stack_bottom"
    return f"{_cap(scene.place)}, {facts}. What is directly under the {a}?", _the(b), "stack_under"


def _fit(scene: Scene, rng: random.Random) -> Question:
    thing = rng.choice(scene.things)
    width, hole = rng.sample(range(2, 40), 2)
    holder = rng.choice(("box", "drawer", "crate", "cupboard", "bag"))
    q = rng.choice((
        f"The {thing} is {width} cm wide and the opening of the {holder} is {hole} cm wide. "
        f"Can the {thing} go into the {holder} without tilting it?",
        f"{_cap(scene.place)} there is a {holder} with an opening {hole} cm across. "
        f"Will a {thing} that is {width} cm wide pass straight through it?",
    ))
    answer = f"Yes, {width} cm is less than {hole} cm." if width < hole else f"No, {width} cm is more than {hole} cm."
    return q, answer, "fit"


def _turn(scene: Scene, rng: random.Random) -> Question:
    a, b = rng.sample(scene.things, 2)
    person = rng.choice(scene.people)
    side = rng.choice(("left", "right"))
    turn = rng.choice(("turns around", "turns to face the opposite way", "does a half turn"))
    q = (f"A {person} stands {scene.place} facing the {a}, with the {b} on the {side}. "
         f"The {person} {turn}. On which side is the {b} now?")
    return q, f"On the {_SIDES[side]}.", "turn"


def _distance(scene: Scene, rng: random.Random) -> Question:
    a, b = rng.sample(scene.things, 2)
    x, y = rng.sample(range(1, 30), 2)
    unit = rng.choice(("steps", "metres", "paces"))
    q = rng.choice((
        f"{_cap(scene.place)}, the {a} is {x} {unit} east of the door and the {b} is {y} {unit} east of the door. "
        f"How far apart are the {a} and the {b}?",
        f"Walking straight from the door {scene.place}, you reach the {a} after {x} {unit} "
        f"and the {b} after {y} {unit}. How far is it from the {a} to the {b}?",
    ))
    return q, f"{abs(x - y)} {unit}", "distance"


def _transitive(scene: Scene, rng: random.Random) -> Question:
    a, b, c = rng.sample(scene.things, 3)
    before, after, _, _ = rng.choice(_AXES)
    q = (f"{_cap(scene.place)}, the {a} is {before} the {b} and the {c} is {after} the {b}. "
         f"Is the {a} {before} the {c} or {after} it?")
    return q, f"{_cap(before)} it.", "transitive"


SPATIAL_MAKERS: tuple[Callable[[Scene, random.Random], Question], ...] = (
    _row, _stack, _fit, _turn, _distance, _transitive,
)

# ---------------------------------------------------------------- metaphor

_VEHICLES = (  # (vehicle, the quality it lends)
    ("fortress", "strong and hard to get into"),
    ("river", "always moving"),
    ("furnace", "very hot"),
    ("maze", "confusing"),
    ("feather", "very light"),
    ("clock", "regular and punctual"),
    ("volcano", "about to burst out"),
    ("statue", "perfectly still"),
    ("magnet", "attractive to everyone"),
    ("desert", "dry and empty"),
    ("beehive", "busy and full of activity"),
    ("rock", "dependable"),
    ("snail", "very slow"),
    ("whirlwind", "fast and chaotic"),
)
_SENTENCES = (
    "The {t} is a {v}.",
    "That {t} was a real {v}.",
    "By noon the {t} had become a {v}.",
    "To the {p}, the {t} is a {v}.",
    "Everyone agreed the {t} was a {v} that day.",
)


def _metaphor_parts(scene: Scene, rng: random.Random) -> tuple[str, str, str, str]:
    tenor = rng.choice(scene.people + scene.things)
    vehicle, quality = rng.choice(_VEHICLES)
    sentence = rng.choice(_SENTENCES).format(t=tenor, v=vehicle, p=rng.choice(scene.people))
    return tenor, vehicle, quality, sentence


def _compared(scene: Scene, rng: random.Random) -> Question:
    tenor, vehicle, _, sentence = _metaphor_parts(scene, rng)
    q = rng.choice((f'In "{sentence}", what is the {tenor} compared to?',
                    f'The sentence "{sentence}" describes the {tenor} as what?'))
    return q, f"a {vehicle}", "compared_to"


def _meaning(scene: Scene, rng: random.Random) -> Question:
    tenor, _, quality, sentence = _metaphor_parts(scene, rng)
    place = scene.place
    q = rng.choice((f'Someone {place} says: "{sentence}" What do they mean about the {tenor}?',
                    f'What does "{sentence}" suggest about the {tenor}?'))
    return q, f"That the {tenor} is {quality}.", "meaning"


def _literal(scene: Scene, rng: random.Random) -> Question:
    tenor, vehicle, quality, sentence = _metaphor_parts(scene, rng)
    q = f'A {rng.choice(scene.people)} {scene.place} says: "{sentence}" Is the {tenor} really a {vehicle}?'
    return q, f"No, the {tenor} only seems {quality}.", "literal"


def _rewrite(scene: Scene, rng: random.Random) -> Question:
    tenor, vehicle, _, _ = _metaphor_parts(scene, rng)
    article = "an" if vehicle[0] in "aeiou" else "a"
    q = rng.choice((f'Rewrite the simile "The {tenor} is like {article} {vehicle}." as a metaphor.',
                    f'Drop the comparison word: turn "The {tenor} is like {article} {vehicle}." into a metaphor.'))
    return q, f"The {tenor} is {article} {vehicle}.", "rewrite"


def _write(scene: Scene, rng: random.Random) -> Question:
    tenor = rng.choice(scene.people + scene.things)
    vehicle, quality = rng.choice(_VEHICLES)
    article = "an" if vehicle[0] in "aeiou" else "a"
    q = f"{_cap(scene.place)}, write a metaphor saying that the {tenor} is {quality}."
    return q, f"The {tenor} is {article} {vehicle}.", "write"


METAPHOR_MAKERS: tuple[Callable[[Scene, random.Random], Question], ...] = (
    _compared, _meaning, _literal, _rewrite, _write,
)

# ---------------------------------------------------------------- the generator


def instruction(question: str) -> str:
    return f"Question: {question}\nAnswer:"


def skill_categories(skills: Sequence[Skill]) -> dict[str, str]:
    """The two skills' categories: the built-in ones, or those of Skill-Mix's skills.csv (which must list both)."""
    categories = dict(CATEGORIES)
    if skills:
        by_name = {s.name.strip().lower(): s for s in skills}
        for name in SKILLS:
            if name not in by_name:
                raise DataError(f"the skill list has no '{name}' (it has: {', '.join(sorted(by_name))})")
            categories[name] = by_name[name].category
    return categories


def scenes_with(topics: Sequence[str]) -> tuple[Scene, ...]:
    """The built-in scenes, and a generic one for each topic (e.g. of Skill-Mix's topics.txt) not among them."""
    known = {s.topic.lower() for s in SCENES}
    return SCENES + tuple(generic_scene(t) for t in topics if t.strip() and t.strip().lower() not in known)


def generate_examples(
    per_skill: int = PER_SKILL,
    seed: int = 0,
    topics: Sequence[str] = (),
    skills: Sequence[Skill] = (),
) -> tuple[Example, ...]:
    """`per_skill` distinct QA pairs for each of spatial reasoning and metaphor, alternating skills.

    `topics` (e.g. Skill-Mix's topics.txt) add scenes to the built-in ones; `skills` (Skill-Mix's
    skills.csv) must contain both skills and supply their categories.
    """
    if per_skill < 1:
        raise UsageError(f"the number of questions per skill must be at least 1, got {per_skill}")
    categories = skill_categories(skills)
    scenes = scenes_with(topics)
    rng = random.Random(f"skn-skillmix|{seed}")
    makers = {SPATIAL: SPATIAL_MAKERS, METAPHOR: METAPHOR_MAKERS}
    out: dict[str, list[Example]] = {SPATIAL: [], METAPHOR: []}
    seen: set[str] = set()
    for skill in SKILLS:
        for _ in range(200 * per_skill):
            if len(out[skill]) == per_skill:
                break
            scene = rng.choice(scenes)
            question, answer, kind = rng.choice(makers[skill])(scene, rng)
            if question in seen:
                continue
            seen.add(question)
            answer = _cap(answer) if answer.endswith(".") else _cap(answer) + "."
            out[skill].append(Example(
                instruction=instruction(question),
                completion=" " + answer,
                meta={"skill": skill, "category": categories[skill], "topic": scene.topic, "question_type": kind},
                source=f"skillmix:seed={seed}#{skill}:{len(out[skill])}",
            ))
        if len(out[skill]) < per_skill:
            raise UsageError(f"could only make {len(out[skill])} distinct '{skill}' questions; ask for fewer")
    return tuple(e for pair in zip(out[SPATIAL], out[METAPHOR]) for e in pair)


# ---------------------------------------------------------------- reading files


def load_skills(path: Path) -> tuple[Skill, ...]:
    """Skill-Mix's `skills.csv` (columns category, skill, definition, example; others ignored)."""
    path = Path(path)
    try:
        text = read_text(path)  # UTF-8, or an error naming the line
    except OSError as err:
        raise DataError(f"{path}: cannot read ({err.strerror})") from None
    with io.StringIO(text, newline="") as handle:
        reader = csv.DictReader(handle)
        header = reader.fieldnames or []
        check_header(header, f"{path}:1")
        missing = [c for c in ("category", "skill", "definition", "example") if c not in header]
        if missing:
            raise DataError(f"{path}:1: the header lacks column(s) {', '.join(missing)} (found: {', '.join(header)})")
        skills = []
        for row in reader:
            where = f"{path}:{reader.line_num}"
            if None in row or any(row[c] is None for c in ("category", "skill", "definition", "example")):
                raise DataError(f"{where}: the row does not have the header's {len(header)} columns")
            if not row["skill"].strip():
                raise DataError(f"{where}: column 'skill' is empty")
            skills.append(Skill(row["category"].strip(), row["skill"].strip(), row["definition"].strip(),
                                row["example"].strip()))
    if not skills:
        raise DataError(f"{path}: no skills")
    return tuple(skills)


def load_topics(path: Path) -> tuple[str, ...]:
    """One topic a line (Skill-Mix's `topics.txt`); blank lines skipped."""
    try:
        lines = read_text(Path(path)).splitlines()
    except OSError as err:
        raise DataError(f"{path}: cannot read ({err.strerror})") from None
    topics = tuple(line.strip() for line in lines if line.strip())
    if not topics:
        raise DataError(f"{path}: no topics")
    return topics


def is_skills_file(path: Path) -> bool:
    """A CSV whose header names `skill` and `definition` (and not `instruction`)."""
    if Path(path).suffix.lower() != ".csv" or not Path(path).is_file():
        return False
    with Path(path).open(encoding="utf-8", errors="replace", newline="") as handle:  # a sniff: the reader names bad bytes
        header = next(csv.reader(handle), [])
    return "skill" in header and "definition" in header and "instruction" not in header


def load_generations(source: str | Path) -> tuple[Example, ...]:
    """A user's JSONL/CSV of generations: `instruction`, `completion` and a `skill` field on every row."""
    examples: tuple[Example, ...] = load_examples(source)
    for example in examples:
        skill = example.meta.get("skill")
        if not isinstance(skill, str) or not skill.strip():
            raise DataError(f"{example.source}: missing field 'skill' (a skillmix row needs the skill it shows)")
    return examples
