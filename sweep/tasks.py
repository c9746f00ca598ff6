"""Tasks: clean/corrupted prompt pairs with an answer and a wrong token.

Reading the task file happens before the model loads (fast failure on a bad file);
tokenizing needs the model's tokenizer and checks what only it can check: equal
token counts for clean and corrupted, single-token answers.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sweep import induction, ioi
from sweep.errors import TaskError
from sweep.spec import TaskSpec

log = logging.getLogger(__name__)

FIELDS = ("clean", "corrupted", "answer", "wrong")


@dataclass(frozen=True, slots=True)
class Example:
    clean: str
    corrupted: str
    answer: str
    wrong: str
    source: str
    """Where it came from, for messages (``file.jsonl:3`` or ``ioi #3``)."""


@dataclass(frozen=True)
class TokenizedTask:
    """Right-padded tokens: position p means the p-th token of every prompt."""

    clean: torch.Tensor
    """[prompt, pos] token ids."""
    corrupted: torch.Tensor
    lengths: torch.Tensor
    """[prompt] real token count; the metric reads position ``lengths - 1``."""
    answer: torch.Tensor
    """[prompt] answer token ids."""
    wrong: torch.Tensor
    clean_str: tuple[tuple[str, ...], ...]
    """[prompt][pos] token strings, '' on padding."""
    corrupted_str: tuple[tuple[str, ...], ...]

    @property
    def n_prompts(self) -> int:
        return int(self.clean.shape[0])

    @property
    def seq_len(self) -> int:
        return int(self.clean.shape[1])

    def digest(self) -> str:
        """Hash of everything that changes results, so a store can refuse another task."""
        h = hashlib.sha256()
        for t in (self.clean, self.corrupted, self.lengths, self.answer, self.wrong):
            h.update(np.ascontiguousarray(t.cpu().numpy()).tobytes())
        return h.hexdigest()[:16]


def _json_lines(path: str) -> Iterator[tuple[str, Any]]:
    """(``file:line``, object) for each non-blank line; bad JSON names its line."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}:{i}"
        try:
            yield where, json.loads(line)
        except json.JSONDecodeError as e:
            raise TaskError(f"{where}: not valid JSON ({e.msg})") from None


def read_prompts(path: str) -> list[Example]:
    """Parse a JSON Lines task file; errors name the line."""
    out = [_example(obj, where) for where, obj in _json_lines(path)]
    if not out:
        raise TaskError(f"{path}: no examples; write one JSON object per line with {FIELDS}")
    return out


def _example(obj: Any, where: str) -> Example:
    if not isinstance(obj, dict):
        raise TaskError(f"{where}: expected a JSON object with keys {', '.join(FIELDS)}")
    missing = [k for k in FIELDS if not isinstance(obj.get(k), str) or not obj.get(k)]
    if missing:
        raise TaskError(f"{where}: missing or empty string field(s): {', '.join(missing)}")
    return Example(obj["clean"], obj["corrupted"], obj["answer"], obj["wrong"], where)


def load_examples(spec: TaskSpec, model: Any) -> list[Example]:
    """The task's examples; IOI needs the tokenizer to pick single-token names."""
    if spec.kind == "prompts":
        assert spec.path is not None
        return read_prompts(spec.path)
    if spec.kind == "induction":
        return [
            Example(e.clean, e.corrupted, e.answer, e.wrong, f"induction #{i}")
            for i, e in enumerate(induction.make_induction(spec.n_prompts, spec.seed))
        ]
    names = ioi.usable_names(lambda s: len(_ids(model, s)) == 1)
    log.info("IOI: %d of %d names are single tokens for this tokenizer", len(names), len(ioi.NAMES))
    try:
        made = ioi.make_ioi(spec.n_prompts, spec.seed, names)
    except ValueError as e:
        raise TaskError(f"task=ioi: {e}; use task=prompts with your own prompts") from None
    return [
        Example(e.clean, e.corrupted, e.answer, e.wrong, f"ioi #{i}") for i, e in enumerate(made)
    ]


def _ids(model: Any, text: str, bos: bool = False) -> list[int]:
    return [int(t) for t in model.to_tokens(text, prepend_bos=bos)[0]]


def _answer_id(model: Any, text: str, where: str, field: str) -> int:
    ids = _ids(model, text)
    if len(ids) != 1:
        pieces = model.to_str_tokens(text, prepend_bos=False)
        raise TaskError(
            f"{where}: {field} {text!r} is {len(ids)} tokens {pieces} for this model's "
            "tokenizer; it must be exactly one token (mind the leading space)"
        )
    return ids[0]


def tokenize(examples: list[Example], model: Any) -> TokenizedTask:
    """Tokenize and validate every example; prompts of different lengths are right-padded."""
    bos = bool(model.cfg.default_prepend_bos)
    clean_ids, corr_ids = [], []
    for ex in examples:
        c, k = _ids(model, ex.clean, bos), _ids(model, ex.corrupted, bos)
        if len(c) != len(k):
            raise TaskError(
                f"{ex.source}: clean prompt is {len(c)} tokens but corrupted is {len(k)}; "
                "they must have the same number of tokens so positions line up"
            )
        clean_ids.append(c)
        corr_ids.append(k)
    answer = [_answer_id(model, ex.answer, ex.source, "answer") for ex in examples]
    wrong = [_answer_id(model, ex.wrong, ex.source, "wrong") for ex in examples]
    lengths = [len(c) for c in clean_ids]
    if max(lengths) > model.cfg.n_ctx:
        raise TaskError(
            f"longest prompt is {max(lengths)} tokens; the model's n_ctx is {model.cfg.n_ctx}"
        )
    pad = _pad_id(model)
    return TokenizedTask(
        clean=_padded(clean_ids, pad),
        corrupted=_padded(corr_ids, pad),
        lengths=torch.tensor(lengths),
        answer=torch.tensor(answer),
        wrong=torch.tensor(wrong),
        clean_str=_strings(model, clean_ids, max(lengths)),
        corrupted_str=_strings(model, corr_ids, max(lengths)),
    )


def _pad_id(model: Any) -> int:
    tok = model.tokenizer
    for t in (tok.pad_token_id, tok.eos_token_id, 0):
        if t is not None:
            return int(t)
    return 0


def _padded(rows: list[list[int]], pad: int) -> torch.Tensor:
    out = torch.full((len(rows), max(len(r) for r in rows)), pad, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.tensor(r)
    return out


def _strings(model: Any, rows: list[list[int]], width: int) -> tuple[tuple[str, ...], ...]:
    tok = model.tokenizer
    return tuple(tuple(tok.decode([t]) for t in r) + ("",) * (width - len(r)) for r in rows)


def reference_tokens(path: str, model: Any, seq_len: int) -> torch.Tensor:
    """[prompt, pos] tokens of a mean-ablation reference file; each prompt must have the
    task's token count, since the mean is taken position by position."""
    bos = bool(model.cfg.default_prepend_bos)
    rows = []
    for where, obj in _json_lines(path):
        text = obj.get("prompt", obj.get("clean")) if isinstance(obj, dict) else None
        if not isinstance(text, str) or not text:
            raise TaskError(f'{where}: expected {{"prompt": "..."}} (or a task line with "clean")')
        ids = _ids(model, text, bos)
        if len(ids) != seq_len:
            raise TaskError(
                f"{where}: reference prompt is {len(ids)} tokens but the task's prompts are "
                f"{seq_len}; mean ablation averages position by position, so reference "
                "prompts must have the task's token count"
            )
        rows.append(ids)
    if not rows:
        raise TaskError(f'{path}: no reference prompts; write one {{"prompt": ...}} per line')
    return torch.tensor(rows)
