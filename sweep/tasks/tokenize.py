"""Tokenizing a task: what only the model's tokenizer can check.

Equal token counts for clean and corrupted, answers the tokenizer knows (each member of an
answer set one token), prompts within the model's context (tokenized without truncation,
so a long prompt is refused, never cut). An answer of several tokens is teacher forced:
its tokens but the last are appended to both prompts, and the metric reads the logits at
the positions that predict each of its tokens (``TokenizedTask.reads``).
Prompts are tokenized in batches, as TransformerLens' ``to_tokens`` would one by one, and
kept ragged (no padding to the longest of the whole task): a prompt block pads only to its
own longest prompt.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from sweep.errors import TaskError
from sweep.tasks.base import Example, as_set
from sweep.tasks.prompts import json_lines

log = logging.getLogger(__name__)

BATCH = 1024
"""Examples tokenized per call of the tokenizer."""


@dataclass(frozen=True)
class TokenizedTask:
    """Every prompt's token ids, ragged: prompt i is ``ids[offsets[i]:offsets[i] + lengths[i]]``."""

    clean_ids: np.ndarray
    """[total tokens] int32, prompts one after another."""
    corrupted_ids: np.ndarray
    offsets: np.ndarray
    """[prompt] index of each prompt's first token."""
    lengths: np.ndarray
    """[prompt] real token count (a multi-token answer's appended tokens included); the
    metric reads position ``lengths - 1``, or the ``reads`` positions ending there."""
    answer: torch.Tensor
    """[prompt] answer token ids; [prompt, K] for answer sets, padded with -1; [prompt,
    reads] for multi-token answers, each right-aligned (padded with -1 in front)."""
    wrong: torch.Tensor

    @property
    def n_prompts(self) -> int:
        return len(self.lengths)

    @property
    def seq_len(self) -> int:
        """The longest prompt of the task."""
        return int(self.lengths.max())

    pad: int
    """Token id written past a prompt's end (never read: attention is causal)."""
    examples: tuple[Example, ...] = ()
    """The examples, in prompt order: their texts go into the store with each block."""
    position_names: tuple[str, ...] = ()
    """The task's named positions (IOI's ``S1``, ``IO``...), in the order first given."""
    named: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.int64))
    """[prompt, name] the token index of each named position in each prompt (-1: none)."""
    reads: int = 1
    """Positions the metric reads, ending at each prompt's last: the longest answer's
    token count (1 unless an answer is several tokens)."""
    continuations: tuple[bool, bool] = (False, False)
    """Whether ``answer`` and ``wrong`` hold token sequences (some answer or wrong text is
    several tokens) rather than one token or a set per prompt."""

    def several_tokens(self) -> str | None:
        """The first prompt whose answer or wrong is several tokens, said as its line and
        its token count; None if every one is one token (or a set of them)."""
        for side, many in zip(("answer", "wrong"), self.continuations, strict=True):
            ids = getattr(self, side)
            if many:
                i = int(torch.nonzero((ids >= 0).sum(1) > 1)[0, 0])
                ex = self.examples[i]
                count = int((ids[i] >= 0).sum())
                return f"{ex.source}: {side} {getattr(ex, side)!r} is {count} tokens"
        return None

    @property
    def forced(self) -> np.ndarray:
        """[prompt] how many of its tokens are the answer's, appended (teacher forcing)."""
        if not self.continuations[0] or self.reads == 1:
            return np.zeros(self.n_prompts, dtype=np.int64)
        return (self.answer >= 0).sum(1).numpy() - 1

    def rows(self, prompts: np.ndarray, width: int | None = None) -> tuple[torch.Tensor, ...]:
        """Clean and corrupted ids [prompt, pos] of the given prompts, right-padded to
        ``width`` (default: their own longest)."""
        lengths = self.lengths[prompts]
        out = np.full((2, len(prompts), width or int(lengths.max())), self.pad, dtype=np.int64)
        for j, (o, n) in enumerate(zip(self.offsets[prompts], lengths, strict=True)):
            out[0, j, :n] = self.clean_ids[o : o + n]
            out[1, j, :n] = self.corrupted_ids[o : o + n]
        return torch.from_numpy(out[0]), torch.from_numpy(out[1])


def _ids_batch(model: Any, texts: list[str], bos: bool) -> list[list[int]]:
    """What ``model.to_tokens(text, prepend_bos=bos, truncate=False)`` gives for each text,
    in one tokenizer call (TransformerLens 4.x's rules: it prepends the BOS string when the
    tokenizer does not, and strips the BOS a tokenizer adds when ``bos`` is False)."""
    tok = model.tokenizer
    cfg = model.cfg
    prepends = bool(getattr(cfg, "tokenizer_prepends_bos", True))
    if bos and not prepends and tok.bos_token is not None:
        if len(tok(tok.bos_token, add_special_tokens=False)["input_ids"]) == 1:
            texts = [tok.bos_token + t for t in texts]
    rows = [list(r) for r in tok(texts)["input_ids"]]
    eos = tok.eos_token_id
    if getattr(cfg, "tokenizer_appends_eos", False) and eos is not None:
        rows = [_strip_eos(r, eos) for r in rows]
    if not bos and prepends and tok.bos_token_id is not None:
        rows = [r[1:] if len(r) > 1 and r[0] == tok.bos_token_id else r for r in rows]
    return rows


def _strip_eos(row: list[int], eos: int) -> list[int]:
    while len(row) > 1 and row[-1] == eos:
        row = row[:-1]
    return row


def token_ids(model: Any, text: str, bos: bool = False) -> list[int]:
    """Token ids of one text, never truncated to the model's context."""
    return _ids_batch(model, [text], bos)[0]


@dataclass(frozen=True)
class TokenCounter:
    """How many tokens a text is (no BOS): what a task needs of the tokenizer to choose
    words; ``many`` counts a list of texts in one tokenizer call."""

    model: Any

    def __call__(self, text: str) -> int:
        return len(token_ids(self.model, text))

    def many(self, texts: list[str]) -> list[int]:
        return [len(r) for r in _ids_batch(self.model, texts, False)]


def count_tokens(model: Any) -> TokenCounter:
    """The model's ``TokenCounter``."""
    return TokenCounter(model)


def _batches(examples: Iterable[Example], size: int) -> Iterator[list[Example]]:
    batch: list[Example] = []
    for ex in examples:
        batch.append(ex)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def tokenize(examples: Iterable[Example], model: Any) -> TokenizedTask:
    """Tokenize and check every example, a batch of them per tokenizer call."""
    bos = bool(model.cfg.default_prepend_bos)
    n_ctx = int(model.cfg.n_ctx)
    clean_parts, corr_parts, lengths, answer, wrong = [], [], [], [], []
    kept: list[Example] = []
    where: list[dict[str, int]] = []
    unk = _unknown_id(model)
    with_unk = 0
    for batch in _batches(examples, BATCH):
        clean = _ids_batch(model, [ex.clean for ex in batch], bos)
        corrupted = _ids_batch(model, [ex.corrupted for ex in batch], bos)
        answers = _set_ids(model, [as_set(ex.answer) for ex in batch])
        wrongs = _set_ids(model, [as_set(ex.wrong) for ex in batch])
        _as_read_after(model, batch, clean, answers, bos, "answer")
        _as_read_after(model, batch, clean, wrongs, bos, "wrong")
        texts = [ex.clean[:at] for ex in batch for _, at in ex.words]
        starts = iter(_ids_batch(model, texts, bos) if texts else [])
        for ex, c, k, a, w in zip(batch, clean, corrupted, answers, wrongs, strict=True):
            _check(model, ex, c, k, a, w, n_ctx)
            where.append(_named(ex, c, [next(starts) for _ in ex.words]))
            with_unk += unk is not None and (unk in c or unk in k)
            kept.append(ex)
            forced = a[0][:-1] if isinstance(ex.answer, str) else []  # teacher forcing
            clean_parts.append(c + forced)
            corr_parts.append(k + forced)
            lengths.append(len(c) + len(forced))
            answer.append([i for ids in a for i in ids])
            wrong.append([i for ids in w for i in ids])
    if with_unk:
        # A warning, not a refusal: a prompt may hold a rare character on purpose, and its
        # metric still reads real answer tokens; only the answers must be known tokens.
        log.warning(
            "%d of %d prompts hold the tokenizer's unknown token %r (words it does not know); "
            "their activations at those positions stand for any unknown word",
            with_unk, len(lengths), model.tokenizer.unk_token,
        )  # fmt: skip
    n = np.array(lengths, dtype=np.int64)
    sequences = (_sequences(kept, "answer", answer), _sequences(kept, "wrong", wrong))
    names = tuple(dict.fromkeys(name for w in where for name in w))
    named = np.array([[w.get(name, -1) for name in names] for w in where], dtype=np.int64)
    return TokenizedTask(
        clean_ids=np.fromiter((t for r in clean_parts for t in r), np.int32, int(n.sum())),
        corrupted_ids=np.fromiter((t for r in corr_parts for t in r), np.int32, int(n.sum())),
        offsets=np.cumsum(n) - n,
        lengths=n,
        answer=_answer_tensor(answer, sequences[0]),
        wrong=_answer_tensor(wrong, sequences[1]),
        pad=_pad_id(model),
        examples=tuple(kept),
        position_names=names,
        named=named.reshape(len(where), len(names)),
        reads=max(len(r) for r in answer) if sequences[0] else 1,
        continuations=sequences,
    )


def _sequences(examples: list[Example], side: str, rows: list[list[int]]) -> bool:
    """Whether one side's ids are token sequences: some text of it (not a set) is several
    tokens. Then no prompt may give a set on that side."""
    texts = [getattr(ex, side) for ex in examples]
    long = [ex for ex, t, r in zip(examples, texts, rows, strict=True)
            if isinstance(t, str) and len(r) > 1]  # fmt: skip
    sets = [ex for ex, t in zip(examples, texts, strict=True) if not isinstance(t, str)]
    if long and sets:
        raise TaskError(
            f"{sets[0].source}: {side} is a set, but {long[0].source} gives a multi-token "
            f"{side} ({getattr(long[0], side)!r}); a task takes either one-token sets or "
            "answers of one or more tokens, not both"
        )
    return bool(long)


def _as_read_after(
    model: Any, batch: list[Example], clean: list[list[int]], ids: list, bos: bool, side: str
) -> None:
    """A one-string answer (or wrong) of several tokens alone becomes the tokens the
    tokenizer reads after the clean prompt (teacher forcing feeds those: a SentencePiece
    tokenizer reads " Paris" alone as '▁', '▁Paris' but after a prompt as '▁Paris'); one
    line if it merges with the prompt's last token."""
    texts = [getattr(ex, side) for ex in batch]
    at = [i for i, t in enumerate(texts) if isinstance(t, str) and len(ids[i][0]) > 1]
    if not at:
        return
    joined = _ids_batch(model, [batch[i].clean + texts[i] for i in at], bos)
    for i, row in zip(at, joined, strict=True):
        prompt = clean[i]
        if row[: len(prompt)] != prompt or len(row) == len(prompt):
            raise TaskError(
                f"{batch[i].source}: {side} {texts[i]!r} does not start a token after the "
                "clean prompt for this tokenizer (it merges with the prompt's last token); "
                f"end the prompt where the {side}'s first token starts (mind the leading space)"
            )
        ids[i][0] = row[len(prompt) :]


def _set_ids(model: Any, sets: list[tuple[str, ...]]) -> list[list[list[int]]]:
    """Each set's texts tokenized (no BOS), in one tokenizer call for the batch."""
    ids = iter(_ids_batch(model, [t for texts in sets for t in texts], False))
    return [[next(ids) for _ in texts] for texts in sets]


def _answer_tensor(rows: list[list[int]], sequence: bool = False) -> torch.Tensor:
    """[prompt] token ids where every answer is one token; else [prompt, K], padded -1
    after a set, or before a token sequence (right-aligned, as its read positions are)."""
    width = max(len(r) for r in rows)
    if width == 1:
        return torch.tensor([r[0] for r in rows], dtype=torch.long)
    if sequence:
        return torch.tensor([[-1] * (width - len(r)) + r for r in rows], dtype=torch.long)
    return torch.tensor([r + [-1] * (width - len(r)) for r in rows], dtype=torch.long)


def _named(ex: Example, clean: list[int], prefixes: list[list[int]]) -> dict[str, int]:
    """Each named position's token index in ``clean``: a word's is the token count of the
    text before it (which must tokenize as the start of the whole prompt does)."""
    out = {}
    for (name, at), ids in zip(ex.words, prefixes, strict=True):
        if clean[: len(ids)] != ids or len(ids) >= len(clean):
            raise TaskError(
                f"{ex.source}: named position {name} (character {at}) does not start a token "
                "for this tokenizer; name positions by token index instead"
            )
        out[name] = len(ids)
    for name, index in ex.positions:
        if not -len(clean) <= index < len(clean):
            raise TaskError(
                f"{ex.source}: position {name} is {index}, but the clean prompt is "
                f"{len(clean)} tokens (0..{len(clean) - 1}, or -{len(clean)}..-1 from its end)"
            )
        out[name] = index % len(clean)
    return out


def _check(
    model: Any,
    ex: Example,
    c: list[int],
    k: list[int],
    a: list[list[int]],
    w: list[list[int]],
    n_ctx: int,
) -> None:
    if len(c) != len(k):
        raise TaskError(
            f"{ex.source}: clean prompt is {len(c)} tokens but corrupted is {len(k)}; "
            "they must have the same number of tokens so positions line up"
        )
    forced = len(a[0]) - 1 if isinstance(ex.answer, str) else 0
    if len(c) + forced > n_ctx:
        with_answer = f" with the answer's first {forced} tokens" if forced else ""
        raise TaskError(
            f"{ex.source}: prompt is {len(c) + forced} tokens{with_answer}, longer than the "
            f"model's context (n_ctx {n_ctx}); shorten it or remove the line"
        )
    for what, texts, set_ids in (("answer", ex.answer, a), ("wrong", ex.wrong, w)):
        for text, ids in zip(as_set(texts), set_ids, strict=True):
            _check_answer(model, ex, what, text, ids, isinstance(texts, str))
    if isinstance(ex.answer, str) and isinstance(ex.wrong, str) and a[0] == w[0]:
        same = "the same token" if len(a[0]) == 1 else "the same tokens"
        raise TaskError(
            f"{ex.source}: answer {ex.answer!r} and wrong {ex.wrong!r} are {same} for this "
            "tokenizer; the metric would be 0 everywhere"
        )
    for what, set_ids in (("answer", a), ("wrong", w)):
        if len(set_ids) > 1 and len({i for (i,) in set_ids}) < len(set_ids):
            raise TaskError(
                f"{ex.source}: the {what} set holds one token twice for this tokenizer; "
                "list each token once"
            )
    if len(a[0]) > 1 or len(w[0]) > 1:  # a token sequence shares no member with a set
        return
    both = sorted({i for (i,) in a} & {i for (i,) in w})
    if both:
        raise TaskError(
            f"{ex.source}: token {model.tokenizer.decode(both[:1])!r} is in both the answer "
            "and the wrong set for this tokenizer; a token counts for one side only"
        )


def _check_answer(
    model: Any, ex: Example, what: str, text: str, ids: list[int], alone: bool
) -> None:
    """One answer text: one token in a set (``alone`` false), at least one token alone
    (several are teacher forced), and tokens the tokenizer knows."""
    if not ids:
        raise TaskError(f"{ex.source}: {what} {text!r} is no token for this model's tokenizer; "
                        "give the text it should predict")  # fmt: skip
    if len(ids) != 1 and not alone:
        pieces = model.to_str_tokens(text, prepend_bos=False)
        raise TaskError(
            f"{ex.source}: {what} set member {text!r} is {len(ids)} tokens {pieces} for this "
            "model's tokenizer; each member of a set must be one token (mind the leading "
            "space); a multi-token answer is given alone, as one string"
        )
    unk = model.tokenizer.unk_token
    if model.tokenizer.unk_token_id in ids and text.strip() != unk:
        raise TaskError(
            f"{ex.source}: {what} {text!r} is not in this model's vocabulary (the "
            f"tokenizer reads it as its unknown token {unk!r}); the metric would compare "
            "the unknown token's logit: use a word the tokenizer knows"
        )


def _unknown_id(model: Any) -> int | None:
    """The unknown token's id, where it is a token of its own: byte-level tokenizers such as
    GPT-2's never produce one and name their BOS/EOS as unknown, which prompts hold."""
    tok = model.tokenizer
    unk = tok.unk_token_id
    if unk is None or unk in (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id):
        return None
    return int(unk)


def token_strings(model: Any, ids: torch.Tensor, lengths: torch.Tensor) -> list[list[str]]:
    """[prompt][pos] each token as text ('' past a prompt's end), decoding each distinct id
    once."""
    tok = model.tokenizer
    rows = [r[: int(n)] for r, n in zip(ids.tolist(), lengths.tolist(), strict=True)]
    distinct = sorted({t for r in rows for t in r})
    text = dict(zip(distinct, tok.batch_decode([[t] for t in distinct]), strict=True))
    width = int(ids.shape[1])
    return [[text[t] for t in r] + [""] * (width - len(r)) for r in rows]


def _pad_id(model: Any) -> int:
    tok = model.tokenizer
    for t in (tok.pad_token_id, tok.eos_token_id, 0):
        if t is not None:
            return int(t)
    return 0


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
