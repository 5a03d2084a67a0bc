"""JSON for data files, read strictly: what `json.loads` lets through silently is an error naming the line.

    parse_json(text, "data.jsonl", first_line=7)   # one document; its first line is line 7 of the file

Refused, each as one `DataError` "FILE:LINE: ... at column C ...":

    a key twice in one object       json.loads would keep the last value without a word
    a lone surrogate (\\ud800)       not text: it cannot be tokenised, printed or written as UTF-8
    an integer of over 4300 digits  Python refuses to convert it (sys.get_int_max_str_digits)

The document is read once at C speed; only when it holds one of these problems is it read again with
json's pure-Python scanner, which says where each value starts, to name the line, column and field.
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from json.decoder import JSONArray, JSONObject, py_scanstring  # type: ignore[attr-defined]
from json.scanner import py_make_scanner  # type: ignore[attr-defined]
from typing import Any

from skn.errors import DataError

_SURROGATE = re.compile("[\ud800-\udfff]")  # json joins escaped pairs, so any left is a lone one
_CONSTANTS = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}  # as json.loads reads them


class _Problem(Exception):
    """A duplicate key or a key that is not text, raised by the pairs hook: the key and what is wrong."""

    def __init__(self, key: str, duplicate: bool) -> None:
        super().__init__(key)
        self.key = key
        self.duplicate = duplicate

    def parts(self) -> tuple[str, str]:
        if self.duplicate:
            return f"duplicate key '{_shown(self.key)}'", " (a key may appear once per object)"
        return f"key '{_shown(self.key)}' holds a lone surrogate ({_escaped(self.key)})", ", which is not text"


class _Found(Exception):
    """Where the pure-Python reading found the first problem: its offset in the text, and the message
    around the column (`head` at column C `tail`)."""

    def __init__(self, offset: int, head: str, tail: str = "") -> None:
        super().__init__(head + tail)
        self.offset = offset
        self.head = head
        self.tail = tail


def _lone_surrogate(text: str) -> bool:
    return not text.isascii() and _SURROGATE.search(text) is not None


def _shown(text: str) -> str:
    """`text` for a message: a lone surrogate as its escape (\\ud800), which a terminal can print."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8") if _lone_surrogate(text) else text


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    record: dict[str, Any] = {}
    for key, value in pairs:
        if key in record:
            raise _Problem(key, duplicate=True)
        if _lone_surrogate(key):
            raise _Problem(key, duplicate=False)
        record[key] = value
    return record


def _has_surrogate(value: object) -> bool:
    if isinstance(value, str):
        return _lone_surrogate(value)
    if isinstance(value, dict):
        return any(_has_surrogate(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_surrogate(v) for v in value)
    return False


class _LastKey(dict[str, str]):
    """json's memo of key strings; JSONObject calls `setdefault` with each key just before reading its value."""

    last = ""

    def setdefault(self, key: str, default: str | None = None) -> str:
        self.last = key
        return super().setdefault(key, key if default is None else default)


@dataclass(frozen=True)
class _Scanning:
    """What json's pure-Python scanner reads from its decoder: these parse functions, the rest as json's."""

    parse_object: Callable[..., Any]
    parse_array: Callable[..., Any]
    parse_string: Callable[..., Any]
    memo: dict[str, str]
    strict: bool = True
    parse_float: Callable[[str], Any] = float
    parse_int: Callable[[str], Any] = int
    parse_constant: Callable[[str], Any] = _CONSTANTS.__getitem__
    object_hook: None = None
    object_pairs_hook: Callable[..., Any] = _unique_pairs


def _locate(text: str) -> _Found | None:
    """Read `text` again with json's pure-Python scanner: the first problem, where its value starts."""
    keys = _LastKey()
    current = [""]  # the field whose value is being read

    def located(scan_once: Callable[[str, int], Any], label: Callable[[], str],
                starts: dict[str, list[int]] | None = None) -> Callable[[str, int], Any]:
        def scan(s: str, idx: int) -> Any:
            current[0] = label()
            if starts is not None:  # where each key's values start, to point at a duplicate
                starts.setdefault(current[0], []).append(idx)
            where = f"field '{_shown(current[0])}'" if current[0] else "the document"
            try:
                return scan_once(s, idx)
            except (json.JSONDecodeError, StopIteration, _Found):
                raise
            except ValueError:  # int(): more digits than Python converts
                raise _Found(idx, f"{where}: an integer of more than {sys.get_int_max_str_digits()} digits") from None
        return scan

    def parse_object(s_and_end: tuple[str, int], strict: bool, scan_once: Callable[[str, int], Any], *rest: Any) -> Any:
        starts: dict[str, list[int]] = {}
        try:
            return JSONObject(s_and_end, strict, located(scan_once, lambda: keys.last, starts), *rest)
        except _Problem as problem:
            seen = starts.get(problem.key, [])
            offset = seen[1 if problem.duplicate else 0] if len(seen) > int(problem.duplicate) else s_and_end[1] - 1
            raise _Found(offset, *problem.parts()) from None

    def parse_array(s_and_end: tuple[str, int], scan_once: Callable[[str, int], Any]) -> Any:
        outer = current[0]
        return JSONArray(s_and_end, located(scan_once, lambda: outer))

    def parse_string(s: str, end: int, strict: bool) -> tuple[str, int]:
        value, after = py_scanstring(s, end, strict)
        if _lone_surrogate(value):
            where = f"field '{_shown(current[0])}'" if current[0] else "the document"
            raise _Found(end - 1, f"{where} holds a lone surrogate ({_escaped(value)})", ", which is not text")
        return value, after

    context = _Scanning(parse_object, parse_array, parse_string, keys)
    scan = located(py_make_scanner(context), lambda: "")
    start = len(text) - len(text.lstrip(" \t\n\r"))
    try:
        scan(text, start)
    except _Found as found:
        return found
    except (json.JSONDecodeError, StopIteration):
        return None
    return None


def _escaped(value: str) -> str:
    """The first lone surrogate of `value` as JSON writes it, e.g. \\ud800."""
    match = _SURROGATE.search(value)
    return f"\\u{ord(match.group()):04x}" if match is not None else ""


_DECODER = json.JSONDecoder(object_pairs_hook=_unique_pairs)


def parse_json(text: str, path: str, first_line: int = 1) -> object:
    """One JSON document of the file `path`, whose first line is line `first_line` of the file; a syntax
    error, a duplicate key, a lone surrogate or an over-long integer is a DataError naming the line."""
    try:
        value = _DECODER.decode(text)
    except json.JSONDecodeError as err:
        raise DataError(f"{path}:{first_line + err.lineno - 1}: not valid JSON ({err.msg} at column {err.colno})") from None
    except (_Problem, ValueError):
        value, problem = None, True
    else:
        problem = _has_surrogate(value)
    if not problem:
        return value
    found = _locate(text)
    if found is None:  # not reached: the second reading finds what the first did
        raise DataError(f"{path}:{first_line}: not valid JSON data")
    line = first_line + text.count("\n", 0, found.offset)
    column = found.offset - text.rfind("\n", 0, found.offset)
    raise DataError(f"{path}:{line}: {found.head} at column {column}{found.tail}")


__all__ = ["parse_json"]
