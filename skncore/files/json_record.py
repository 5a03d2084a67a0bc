"""A JSON object read strictly into typed values, each error naming the file and key.

    r = root_object(path, content)              # content: json.loads of the file at path
    r.text("model"); r.integer("sets", 0); r.need("config").num("alpha")

A missing required key, or a value of the wrong kind, is one RunDirError naming the file and the key's full
path ("ablation.json: field 'controls_summary.loss.p' must be a number or null"); an optional key that is
absent reads as its default.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TypeVar

from skn.errors import RunDirError

E = TypeVar("E", bound=Enum)
_MISSING = object()


@dataclass(frozen=True)
class JsonObject:
    """A JSON object of the file at `prefix` (for messages), read field by field."""

    path: Path
    data: Mapping[str, object]
    prefix: str = ""

    def name(self, key: str) -> str:
        return f"{self.prefix}{key}"

    def bad(self, key: str, want: str) -> RunDirError:
        return RunDirError(f"{self.path}: field '{self.name(key)}' must be {want}")

    def raw(self, key: str, default: object = _MISSING) -> object:
        if key not in self.data:
            if default is _MISSING:
                raise RunDirError(f"{self.path}: field '{self.name(key)}' is missing")
            return default
        return self.data[key]

    def num(self, key: str, required: bool = False) -> float | None:
        value = self.raw(key) if required else self.raw(key, None)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.bad(key, "a number or null")
        return float(value)

    def integer(self, key: str, default: int | None = None) -> int:
        value = self.raw(key) if default is None else self.raw(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.bad(key, "an integer")
        return value

    def opt_integer(self, key: str) -> int | None:
        value = self.raw(key, None)
        return None if value is None else self.integer(key)

    def text(self, key: str, default: str | None = None) -> str:
        value = self.raw(key) if default is None else self.raw(key, default)
        if not isinstance(value, str):
            raise self.bad(key, "a string")
        return value

    def boolean(self, key: str) -> bool | None:
        value = self.raw(key, None)
        if value is not None and not isinstance(value, bool):
            raise self.bad(key, "true, false or null")
        return value

    def choice(self, key: str, kind: type[E], default: E | None = None) -> E | None:
        value = self.raw(key, None)
        if value is None:
            return default
        try:
            return kind(value)
        except ValueError:
            raise self.bad(key, "one of " + ", ".join(str(m.value) for m in kind)) from None

    def obj(self, key: str, required: bool = True) -> JsonObject | None:
        value = self.raw(key) if required else self.raw(key, None)
        if value is None and not required:
            return None
        if not isinstance(value, Mapping):
            raise self.bad(key, "an object")
        return JsonObject(self.path, value, f"{self.name(key)}.")

    def need(self, key: str) -> JsonObject:
        found = self.obj(key)
        assert found is not None  # required: obj raised otherwise
        return found

    def items(self, key: str, required: bool = True) -> tuple[object, ...]:
        value = self.raw(key) if required else self.raw(key, None)
        if value is None and not required:
            return ()
        if not isinstance(value, list):
            raise self.bad(key, "a list")
        return tuple(value)

    def objs(self, key: str, required: bool = True) -> tuple[JsonObject, ...]:
        out = []
        for n, value in enumerate(self.items(key, required)):
            if not isinstance(value, Mapping):
                raise self.bad(f"{key}[{n}]", "an object")
            out.append(JsonObject(self.path, value, f"{self.name(key)}[{n}]."))
        return tuple(out)

    def texts(self, key: str) -> tuple[str, ...]:
        values = self.items(key)
        for n, value in enumerate(values):
            if not isinstance(value, str):
                raise self.bad(f"{key}[{n}]", "a string")
        return tuple(str(v) for v in values)

    def nums(self, key: str) -> tuple[float | None, ...]:
        values = self.items(key, required=False)
        holder = JsonObject(self.path, {f"{key}[{n}]": v for n, v in enumerate(values)}, self.prefix)
        return tuple(holder.num(f"{key}[{n}]") for n in range(len(values)))


def root_object(path: Path, content: object) -> JsonObject:
    """The file's `content` as its top-level object; anything else is a RunDirError naming `path`."""
    if not isinstance(content, Mapping):
        raise RunDirError(f"{path}: not a JSON object")
    return JsonObject(path, content)


__all__ = ["JsonObject", "root_object"]
