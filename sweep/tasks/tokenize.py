"""Tokenizing a task: what only the model's tokenizer can check.

Equal token counts for clean and corrupted, single-token answers, prompts within the
model's context (tokenized without truncation, so a long prompt is refused, never cut).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from sweep.errors import TaskError
from sweep.tasks.base import Example
from sweep.tasks.prompts import json_lines


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


def token_ids(model: Any, text: str, bos: bool = False) -> list[int]:
    """Token ids of ``text``, never truncated to the model's context."""
    return [int(t) for t in model.to_tokens(text, prepend_bos=bos, truncate=False)[0]]


def single_token(model: Any) -> Any:
    return lambda s: len(token_ids(model, s)) == 1


def _answer_id(model: Any, text: str, where: str, field: str) -> int:
    ids = token_ids(model, text)
    if len(ids) != 1:
        pieces = model.to_str_tokens(text, prepend_bos=False)
        raise TaskError(
            f"{where}: {field} {text!r} is {len(ids)} tokens {pieces} for this model's "
            "tokenizer; it must be exactly one token (mind the leading space)"
        )
    return ids[0]


def _prompt_ids(model: Any, ex: Example, bos: bool) -> tuple[list[int], list[int]]:
    c, k = token_ids(model, ex.clean, bos), token_ids(model, ex.corrupted, bos)
    if len(c) != len(k):
        raise TaskError(
            f"{ex.source}: clean prompt is {len(c)} tokens but corrupted is {len(k)}; "
            "they must have the same number of tokens so positions line up"
        )
    n_ctx = int(model.cfg.n_ctx)
    if len(c) > n_ctx:
        raise TaskError(
            f"{ex.source}: prompt is {len(c)} tokens, longer than the model's context "
            f"(n_ctx {n_ctx}); shorten it or remove the line"
        )
    return c, k


def tokenize(examples: list[Example], model: Any) -> TokenizedTask:
    """Tokenize and validate every example; prompts of different lengths are right-padded."""
    bos = bool(model.cfg.default_prepend_bos)
    pairs = [_prompt_ids(model, ex, bos) for ex in examples]
    answer, wrong = [], []
    for ex in examples:
        a = _answer_id(model, ex.answer, ex.source, "answer")
        w = _answer_id(model, ex.wrong, ex.source, "wrong")
        if a == w:
            raise TaskError(
                f"{ex.source}: answer {ex.answer!r} and wrong {ex.wrong!r} are the same token "
                "for this tokenizer; the metric would be 0 everywhere"
            )
        answer.append(a)
        wrong.append(w)
    clean_ids, corr_ids = [c for c, _ in pairs], [k for _, k in pairs]
    width = max(len(c) for c in clean_ids)
    pad = _pad_id(model)
    return TokenizedTask(
        clean=_padded(clean_ids, pad),
        corrupted=_padded(corr_ids, pad),
        lengths=torch.tensor([len(c) for c in clean_ids]),
        answer=torch.tensor(answer),
        wrong=torch.tensor(wrong),
        clean_str=_strings(model, clean_ids, width),
        corrupted_str=_strings(model, corr_ids, width),
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
    for where, obj in json_lines(path):
        text = obj.get("prompt", obj.get("clean")) if isinstance(obj, dict) else None
        if not isinstance(text, str) or not text:
            raise TaskError(f'{where}: expected {{"prompt": "..."}} (or a task line with "clean")')
        ids = token_ids(model, text, bos)
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
