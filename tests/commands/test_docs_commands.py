"""Every `skn` command shown in README.md and docs/*.md parses against the real Click command tree.

What is checked, without running anything:

- Command lines in code blocks (fenced blocks without a language or with a shell one, and 4-space indented
  blocks): lines joined at a trailing backslash, a leading `$ ` prompt dropped, split the way a shell splits
  them (quotes, `# comment`, and `;`, `&&`, `||`, `|`, `&`, `(`, `)`, redirections end a command). A skn
  command is `skn ...` (after env assignments such as `TRITON_INTERPRET=1` and wrappers such as
  `/usr/bin/time -v`) or `... -m skn ...` (`python -m skn`, `torchrun --nproc-per-node 4 -m skn`). Lines
  whose first word is not a program (the `Next: skn report RUN` of printed output) are not commands.
  Each command goes through `make_context` of the group and of its subcommand, Click's own parser (no
  option of cli/ has a callback, so this converts values and invokes nothing): the subcommand exists,
  every option exists for it, an option that takes a value gets one, no extra arguments, required
  arguments are there, and a literal value converts (a choice is one of the choices, an integer is one).
  A placeholder value (an upper-case word: RUN, N, K, FILE.gguf) of an option is swapped for a valid
  value of that option's type first; paths need not exist. Code blocks are meant to be pasted, so doc
  grammar (`[--opt X]`, `a|b`, `...`) is not allowed there.
- Inline spans (`skn plot RUN [--neuron L.I] ...` in text and tables): the subcommand exists and every
  `--option` named is one of its options (or of `skn` itself). A span without doc grammar is parsed as
  above, except that a mention (`skn compare`, `skn probe --seeds`) may leave out required values.

Not checked: what the command body parses itself (`--value mean,zero`, `--neuron 3.117@5`, `--seeds`),
that files and models exist, that option combinations make sense, and the printed output shown in docs.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import click

from skn.cli.main import cli

ROOT = Path(__file__).resolve().parents[2]
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

SHELL_LANGUAGES = {"", "sh", "bash", "shell", "console", "text", "zsh"}
WRAPPERS = {"time", "/usr/bin/time", "-v", "-p", "env", "nohup", "exec"}
MENTIONS_SKN = re.compile(r"(?<![\w.\-/])(?:\S*/)?skn(?![\w.\[\-])")
FIRST_WORD = re.compile(r"\(?(?:[A-Za-z_]\w*=\S*|[\w./~+\-]+)")
ENV_ASSIGNMENT = re.compile(r"[A-Za-z_]\w*=.*")
PLACEHOLDER = re.compile(r"[A-Z][A-Z0-9_]*(?:\.[a-z0-9]+)?")
CONTROL = {";", "&&", "||", "|", "&", "(", ")", "|&", ";;"}


@dataclass(frozen=True)
class Command:
    where: str  # file:line
    text: str  # the logical line as written
    args: tuple[str, ...]  # what follows `skn`


def block_lines(markdown: str) -> Iterator[tuple[int, str, str | None]]:
    """(line number, text, language) of every line of markdown: language is a fenced block's (`""` if none),
    `"indented"` for a 4-space indented block (text dedented), `"fence"` for a fence line, None in prose."""
    fence: str | None = None
    language = ""
    previous_blank = True
    in_indented = False
    for number, line in enumerate(markdown.splitlines(), start=1):
        stripped = line.strip()
        if fence is None and stripped.startswith(("```", "~~~")):
            fence, language = stripped[:3], stripped[3:].strip().lower()
            yield number, line, "fence"
        elif fence is not None:
            fence = None if stripped.startswith(fence) else fence
            yield number, line, language if fence is not None else "fence"
        elif line.startswith("    ") and (previous_blank or in_indented):
            in_indented = True
            yield number, line[4:], "indented"
        else:
            in_indented = in_indented and not stripped
            yield number, line, None
        previous_blank = not stripped


def code_lines(markdown: str) -> Iterator[tuple[int, str]]:
    """(line number, text) of each line of a shell code block (fenced or indented)."""
    for number, line, language in block_lines(markdown):
        if language == "indented" or language in SHELL_LANGUAGES:
            yield number, line


def logical_lines(markdown: str) -> Iterator[tuple[int, str]]:
    """Code lines joined at a trailing backslash, numbered by their first physical line."""
    start = 0
    parts: list[str] = []
    for number, line in code_lines(markdown):
        if not parts:
            start = number
        if line.rstrip().endswith("\\"):
            parts.append(line.rstrip()[:-1])
            continue
        parts.append(line)
        yield start, " ".join(part.strip() for part in parts)
        parts = []
    if parts:
        yield start, " ".join(part.strip() for part in parts)


def shell_words(line: str) -> list[str]:
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True  # `a#b` is a word, `  # note` a comment, `x&&y` three tokens
    return list(lexer)


def skn_args(words: Sequence[str]) -> tuple[str, ...] | None:
    """The arguments of the skn command that `words` (one simple command) runs, or None if it runs no skn."""
    for i, word in enumerate(words):
        if word == "skn" and i > 0 and words[i - 1] == "-m":  # python -m skn, torchrun ... -m skn
            return tuple(words[i + 1:])
        if word == "skn" or word.endswith("/skn"):
            launcher = words[:i]
            if all(w in WRAPPERS or ENV_ASSIGNMENT.fullmatch(w) for w in launcher):
                return tuple(words[i + 1:])
            return None
    return None


def extract(markdown: str, name: str) -> tuple[list[Command], list[str]]:
    """The skn commands in the code blocks of `markdown`, and the lines that could not be split."""
    commands: list[Command] = []
    broken: list[str] = []
    for number, line in logical_lines(markdown):
        line = line.strip()
        line = line[2:] if line.startswith("$ ") else line
        first = line.split(maxsplit=1)[0] if line else ""
        if not MENTIONS_SKN.search(line) or not FIRST_WORD.fullmatch(first):
            continue
        try:
            words = shell_words(line)
        except ValueError as error:
            broken.append(f"{name}:{number}: {line!r}: {error}")
            continue
        simple: list[str] = []
        for word in [*words, ";"]:
            if word not in CONTROL:
                simple.append(word)
                continue
            redirect = next((i for i, w in enumerate(simple) if w and set(w) <= set("<>&")), len(simple))
            args = skn_args(simple[:redirect])
            if args is not None:
                commands.append(Command(f"{name}:{number}", line, args))
            simple = []
    return commands, broken


def sample_value(param: click.Parameter) -> str | None:
    """A value that `param`'s type accepts, to stand in for a placeholder."""
    if isinstance(param.type, click.Choice):
        return str(param.type.choices[0])
    for candidate in ("1", "0.5", "text"):
        try:
            param.type.convert(candidate, param, None)
        except click.BadParameter:
            continue
        return candidate
    return None


def with_placeholders_filled(command: click.Command, args: Sequence[str]) -> list[str]:
    """`args` with each upper-case placeholder given to an option replaced by a valid value of its type."""
    by_name = {opt: p for p in command.params if isinstance(p, click.Option) for opt in p.opts + p.secondary_opts}
    filled = list(args)
    for i, word in enumerate(args):
        name, eq, value = word.partition("=")
        option = by_name.get(name)
        if option is None or option.is_flag or option.count:
            continue
        if eq and PLACEHOLDER.fullmatch(value):
            filled[i] = f"{name}={sample_value(option) or value}"
        elif not eq and i + 1 < len(args) and PLACEHOLDER.fullmatch(args[i + 1]):
            filled[i + 1] = sample_value(option) or args[i + 1]
    return filled


def parse_error(args: Sequence[str]) -> str | None:
    """Why Click would refuse `skn ARGS` before running anything, or None if it parses."""
    split = next((i for i, a in enumerate(args) if not a.startswith("-")), len(args))
    group_args, rest = list(args[:split]), list(args[split:])
    try:
        parent = cli.make_context("skn", group_args) if group_args else click.Context(cli, info_name="skn",
                                                                                       **cli.context_settings)
        if not rest:
            return None if group_args else "no subcommand"
        command = cli.get_command(parent, rest[0])
        if command is None:
            return f"no such command {rest[0]!r}"
        command.make_context(rest[0], with_placeholders_filled(command, rest[1:]), parent=parent)
    except click.exceptions.Exit:  # --help, --version
        return None
    except click.BadParameter as error:
        return None if "does not exist" in error.format_message() else error.format_message()
    except click.ClickException as error:
        return error.format_message()
    return None


def inline_spans(markdown: str) -> Iterator[tuple[int, str]]:
    """(line, text) of each inline code span in prose (not in any code block) that starts with `skn `."""
    prose = "\n".join(line if language is None else "" for _, line, language in block_lines(markdown))
    for match in re.finditer(r"(?<!`)`(skn\s[^`]*)`(?!`)", prose):
        yield prose.count("\n", 0, match.start()) + 1, " ".join(match.group(1).split())


def inline_error(span: str) -> str | None:
    """Whether the subcommand of an inline span exists and each `--option` it names is one of its own."""
    parent = click.Context(cli, info_name="skn", **cli.context_settings)
    words = span.split()[1:]
    name = next((w for w in words if not w.startswith("-")), "")
    command = cli.get_command(parent, name)
    if command is None and re.fullmatch(r"[a-z][a-z-]*", name):
        return f"no such command {name!r}"
    known = {opt for p in cli.get_params(parent) for opt in p.opts + p.secondary_opts}
    if command is not None:
        known |= {opt for p in command.get_params(click.Context(command, parent=parent)) for opt in p.opts + p.secondary_opts}
    unknown = sorted(set(re.findall(r"(?<![\w-])--[a-z0-9][a-z0-9-]*", span)) - known)
    if unknown:
        return f"no such option(s) {', '.join(unknown)}"
    if not re.search(r"[\[\]|\\]|\.\.\.", span):  # no grammar: parse it, but a mention may leave out what is required
        error = parse_error(shlex.split(span)[1:])
        if error and not re.search(r"Missing argument|Missing option|requires an argument|no subcommand", error):
            return error
    return None


def test_every_documented_command_parses() -> None:
    failures: list[str] = []
    found: dict[str, int] = {}
    for path in DOC_FILES:
        name = str(path.relative_to(ROOT))
        commands, broken = extract(path.read_text(encoding="utf-8"), name)
        failures += broken
        found[name] = len(commands)
        failures += [f"{c.where}: {c.text}\n    -> {error}" for c in commands if (error := parse_error(c.args))]
    assert sum(found.values()) >= 15, f"too few commands found, is the extractor broken? {found}"
    assert not failures, "documented commands that skn would refuse:\n" + "\n".join(failures)


def test_every_inline_command_names_real_options() -> None:
    failures: list[str] = []
    for path in DOC_FILES:
        name = str(path.relative_to(ROOT))
        for number, span in inline_spans(path.read_text(encoding="utf-8")):
            if error := inline_error(span):
                failures.append(f"{name}:{number}: `{span}`\n    -> {error}")
    assert not failures, "inline commands naming what skn does not have:\n" + "\n".join(failures)


SYNTHETIC = """\
Some prose with `skn probe --no-such-flag` inline, `skn compare`, `skn ablate RUN --test wrong`.

```bash
$ TRITON_INTERPRET=1 /usr/bin/time -v skn probe --steps N --model FILE.gguf --out RUN  # a comment --bogus
skn ablate RUN --curve --value zero \\
    --controls 60 --test empirical
torchrun --nproc-per-node 4 -m skn train --out RUN && skn show RUN | head
skn probe --steps 10 --bogus 3
```

    Next: skn report RUN (figures); skn ablate RUN (do they matter?).

    skn ablate RUN --test nonsense
    skn tasks --show
    skn plot RUN extra
    skn show
    skn nosuch RUN
    skn ablate RUN --curve [--controls 140]

```python
skn.run_probe(request)  # `skn probe --not-parsed`
```
"""


def test_the_checker_flags_wrong_commands() -> None:
    commands, broken = extract(SYNTHETIC, "x.md")
    assert not broken
    verdicts = {(c.where, c.args): parse_error(c.args) for c in commands}
    good = [args for (_, args), error in verdicts.items() if error is None]
    bad = {where: error for (where, _), error in verdicts.items() if error is not None}
    assert good == [("probe", "--steps", "N", "--model", "FILE.gguf", "--out", "RUN"),
                    ("ablate", "RUN", "--curve", "--value", "zero", "--controls", "60", "--test", "empirical"),
                    ("train", "--out", "RUN"), ("show", "RUN")]
    assert list(bad) == [f"x.md:{n}" for n in (8, 13, 14, 15, 16, 17, 18)]
    assert "--bogus" in str(bad["x.md:8"]) and "nonsense" in str(bad["x.md:13"])
    assert "requires an argument" in str(bad["x.md:14"]) and "extra argument" in str(bad["x.md:15"])
    assert "Missing argument" in str(bad["x.md:16"]) and "nosuch" in str(bad["x.md:17"])
    assert "extra argument" in str(bad["x.md:18"])  # doc grammar is not a command to paste
    inline = [inline_error(span) for _, span in inline_spans(SYNTHETIC)]
    assert inline[:2] == ["no such option(s) --no-such-flag", None] and "'wrong' is not one of" in str(inline[2])
    assert len(inline) == 3  # the span in the python block is code, not prose
