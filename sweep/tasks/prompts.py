"""``task=prompts``: a JSON Lines file of ``{"clean", "corrupted", "answer", "wrong"}``,
each line optionally with ``"positions"`` (named token indices) and ``"template"`` (an id).
``answer`` and ``wrong`` are a text (one token, or several: teacher forced), or a list of
one-token texts (an answer set)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sweep.errors import ConfigError, TaskError
from sweep.spec import TaskSpec, existing_file
from sweep.tasks.base import FIELDS, Answer, CountTokens, Example, digest


@dataclass(frozen=True, slots=True)
class PromptsTaskSpec(TaskSpec):
    KIND = "prompts"

    kind: str = "prompts"
    path: str = "???"
    """JSON Lines file: {"clean", "corrupted", "answer", "wrong"} per line."""

    def __post_init__(self) -> None:
        if self.path in ("???", "", None):
            raise ConfigError("task.path: missing; pass task.path=FILE (a JSON Lines task file)")
        object.__setattr__(self, "path", existing_file("task.path", self.path))

    def identity(self) -> dict[str, Any]:
        """The prompts as read, not the path: ./t.jsonl and its absolute path resume alike,
        and a file that changed between runs is refused."""
        return {"kind": self.kind, "examples": digest(read_prompts(self.path))}

    def position_names(self) -> tuple[str, ...]:
        examples = read_prompts(self.path)
        return tuple(dict.fromkeys(name for e in examples for name, _ in e.positions))


def json_lines(path: str) -> Iterator[tuple[str, Any]]:
    """(``file:line``, object) for each non-blank line; errors name the file and line.

    Lines end at ``\\n`` only (JSON Lines), so a prompt holding U+2028 or another Unicode
    line separator stays one line; a UTF-8 byte-order mark is accepted.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise TaskError(f"{path}: cannot read it ({e.strerror})") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise TaskError(
            f"{path}: not UTF-8 text (byte {e.start} is {data[e.start]:#04x}); save it as UTF-8"
        ) from None
    for i, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        where = f"{path}:{i}"
        try:
            yield where, json.loads(line)
        except json.JSONDecodeError as e:
            raise TaskError(f"{where}: not valid JSON ({e.msg})") from None


def read_prompts(path: str) -> list[Example]:
    """Parse a JSON Lines task file; errors name the line."""
    out = [_example(obj, where) for where, obj in json_lines(path)]
    if not out:
        raise TaskError(f"{path}: no examples; write one JSON object per line with {FIELDS}")
    return out


def _example(obj: Any, where: str) -> Example:
    if not isinstance(obj, dict):
        raise TaskError(f"{where}: expected a JSON object with keys {', '.join(FIELDS)}")
    missing = [k for k in FIELDS if obj.get(k) in (None, "", [])]
    missing += [k for k in FIELDS[:2] if k not in missing and not isinstance(obj[k], str)]
    if missing:
        raise TaskError(f"{where}: missing or empty string field(s): {', '.join(missing)}")
    answer, wrong = (_answer(obj.get(k), k, where) for k in FIELDS[2:])
    template = obj.get("template", -1)
    if isinstance(template, bool) or not isinstance(template, int) or template < -1:
        raise TaskError(f"{where}: template must be a whole number (the template's id), "
                        f"got {template!r}")  # fmt: skip
    return Example(
        obj["clean"], obj["corrupted"], answer, wrong, where,
        positions=_positions(obj.get("positions", {}), where), template=template,
    )  # fmt: skip


def _answer(value: Any, key: str, where: str) -> Answer:
    """An answer field: a text, or a non-empty list of distinct ones."""
    if isinstance(value, str) and value:
        return value
    if isinstance(value, list) and value and all(isinstance(t, str) and t for t in value):
        twice = [t for i, t in enumerate(value) if t in value[:i]]
        if twice:
            raise TaskError(f"{where}: {key} lists {twice[0]!r} twice; list each token once")
        return value[0] if len(value) == 1 else tuple(value)
    raise TaskError(
        f"{where}: {key} must be a token's text or a list of them (an answer set), like "
        f'" Mary" or [" 51", " 52"]; got {value!r}'
    )


def _positions(value: Any, where: str) -> tuple[tuple[str, int], ...]:
    """A task line's named positions: ``{"IO": 4, "END": -1}``, name -> token index."""
    example = '{"IO": 4, "END": -1}'
    if not isinstance(value, dict):
        raise TaskError(f"{where}: positions must map names to token indices, like {example}")
    for name, index in value.items():
        if not name or not name.strip() or _is_int(name):
            raise TaskError(
                f"{where}: position name {name!r} must be a word (a number would read as a "
                f"token index in grid.positions), like {example}"
            )
        if isinstance(index, bool) or not isinstance(index, int):
            raise TaskError(
                f"{where}: position {name!r} is {index!r}; give a token index (negative "
                f"counts from the prompt's end), like {example}"
            )
    return tuple(value.items())


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


def examples(spec: PromptsTaskSpec, count: CountTokens) -> list[Example]:
    return read_prompts(spec.path)
