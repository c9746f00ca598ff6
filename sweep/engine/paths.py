"""Path patching (Wang et al. 2022, the IOI paper's recipe) on the suffix forward.

The effect of a sender head on the model's output *through* a set of receivers only:

1. Pass one: the base run, with the sender head's output (its z) taken from the source
   run and every other head frozen at its base value (its z is the base run's, whatever
   its input); MLPs and norms recompute. The receivers' inputs are recorded: the q, k or v
   of each receiver head (a grouped-query model's k and v per key/value head), or, for the
   direct path to the logits, the final residual stream.
2. Pass two: the base run with only the receivers' recorded inputs patched in;
   everything after them recomputes. (For the logits, pass one's final residual is the
   patched input, so its logits are the answer.)

Both passes start at the sender's layer (pass two at the first receiver after it) and at
the first position where the sender's output changes, from the cached base run; one
batched forward holds many heads of one sender layer.

One position at a time (``grid.positions``), the sender's output is the source run's at
that token only. In pass one every other head is frozen, so nothing mixes positions: the
receivers' inputs change at that token alone, which is the paper's "into the receivers at
END" as well as "from the sender at END".
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from sweep.edges.graph import Node
from sweep.engine.forward.suffix import Rows, SuffixForward, Trace

if TYPE_CHECKING:
    from sweep.engine.runs import BlockRuns

KINDS = ("q", "k", "v")


def path_hooks(n_layers: int, first: int) -> set[str]:
    """The hooks pass one reads: every head's z from the first sender layer on (frozen
    heads take the base run's; a sender, the source run's)."""
    return {f"blocks.{i}.attn.hook_z" for i in range(first, n_layers)}


def sender_rows(
    block: BlockRuns, layer: int, heads: Sequence[int], at: torch.Tensor | None = None
) -> Rows:
    """Rows head-major (``len(heads)`` copies of the block's prompts), each starting at the
    first position where its head's z differs between the runs (the last position where
    it never does); or, with ``at`` [prompt] (one token per prompt, -1: none), there."""
    z = f"blocks.{layer}.attn.hook_z"
    n = block.n
    prompt = torch.arange(n, device=block.last.device).repeat(len(heads))
    last = block.last[prompt]
    if at is not None:
        start = torch.where(at[prompt] >= 0, at[prompt], last)
        return Rows.make(prompt, torch.minimum(start, last), last, block.reads)
    change = (block.source[z] - block.base[z]).abs().amax(-1)  # [prompt, pos, head]
    seq = change.shape[1]
    inside = torch.arange(seq, device=change.device)[None, :] <= block.last[:, None]
    moved = (change > 0) & inside[..., None]
    first = torch.where(moved, torch.arange(seq, device=change.device)[None, :, None], seq)
    first = first.amin(1)  # [prompt, head]
    head = torch.tensor(list(heads), device=change.device).repeat_interleave(n)
    return Rows.make(prompt, torch.minimum(first[prompt, head], last), last, block.reads)


class PathForward:
    """Senders of one layer into a fixed set of receivers, on a family's suffix forward."""

    def __init__(self, forward: SuffixForward, receivers: Sequence[Node]) -> None:
        self.fw = forward
        self.receivers = tuple(receivers)
        self.direct = all(r.kind == "logits" for r in receivers)

    def logits(
        self, layer: int, heads: Sequence[int], block: BlockRuns, at: torch.Tensor | None = None
    ) -> torch.Tensor:
        """[rows, vocab] at each row's last position ([rows, reads, vocab]), rows
        head-major: each head of
        ``layer`` patched along the paths into the receivers (at the token ``at`` [prompt]
        of each prompt only, when given)."""
        fw = self.fw
        rows = sender_rows(block, layer, heads, at)
        sender = torch.tensor(list(heads), device=rows.prompt.device)[rows.tok_row // block.n]
        # Which packed tokens take the sender's source output: all, or the chosen token.
        patched = None if at is None else rows.tok_pos == at[rows.tok_prompt]
        later = [r for r in self.receivers if r.layer > layer]
        assert later, f"no receiver after layer {layer} (the plan never sends such senders)"
        stop = fw.n_layers if self.direct else max(r.layer for r in later)
        recorded: dict[tuple[int, str], torch.Tensor] = {}
        x = self._start(layer, rows, block)
        for i in range(layer, stop + (0 if self.direct else 1)):
            trace = self._pass_one(i, layer, rows, sender, block, recorded, patched)
            x = fw.block(i, x, rows, *self._kv(i, block), trace, False)
        if self.direct:
            return fw.final_logits(x[rows.final])
        first = min(r.layer for r in later)
        x = self._start(first, rows, block)
        for i in range(first, fw.n_layers):
            trace = self._pass_two(i, later, recorded)
            x = fw.block(i, x, rows, *self._kv(i, block), trace, False)
        return fw.final_logits(x[rows.final])

    def _start(self, layer: int, rows: Rows, block: BlockRuns) -> torch.Tensor:
        return block.base[f"blocks.{layer}.hook_resid_pre"][rows.tok_prompt, rows.tok_pos]

    def _kv(self, i: int, block: BlockRuns) -> tuple[torch.Tensor, torch.Tensor]:
        return block.base[f"blocks.{i}.attn.hook_k"], block.base[f"blocks.{i}.attn.hook_v"]

    def _pass_one(
        self, i: int, layer: int, rows: Rows, sender: torch.Tensor, block: BlockRuns,
        recorded: dict[tuple[int, str], torch.Tensor], patched: torch.Tensor | None,
    ) -> Trace:  # fmt: skip
        """Every head's z frozen at the base run's, but the row's sender (at ``layer``)
        at the source run's (at the ``patched`` tokens only, when given); the receivers'
        q, k and v recorded."""
        z = f"blocks.{i}.attn.hook_z"
        base_z = block.base[z][rows.tok_prompt, rows.tok_pos]
        kinds = {r.kind for r in self.receivers if r.layer == i}

        def at(name: str, act: torch.Tensor) -> torch.Tensor:
            if name == "z":
                act = base_z.to(act.dtype).clone()
                if i == layer:
                    tok = torch.arange(len(sender), device=act.device)
                    if patched is not None:
                        tok = tok[patched]
                    source = block.source[z][rows.tok_prompt, rows.tok_pos]
                    act[tok, sender[tok]] = source[tok, sender[tok]].to(act.dtype)
            elif name in kinds:
                recorded[(i, name)] = act
            return act

        return at

    def _pass_two(
        self, i: int, later: list[Node], recorded: dict[tuple[int, str], torch.Tensor]
    ) -> Trace:
        """The receivers of layer ``i`` read what pass one recorded; nothing else changes."""
        heads = {k: [r.head for r in later if r.layer == i and r.kind == k] for k in KINDS}

        def at(name: str, act: torch.Tensor) -> torch.Tensor:
            if heads.get(name):
                act = act.clone()
                act[:, heads[name]] = recorded[(i, name)][:, heads[name]].to(act.dtype)
            return act

        return at


def path_values(
    forward: SuffixForward,
    block: BlockRuns,
    receivers: Sequence[Node],
    layer: int,
    heads: Sequence[int],
    metrics: tuple[str, ...],
    per_forward: int = 64,
    at: torch.Tensor | None = None,
) -> torch.Tensor:
    """[metric, head, prompt] the metric with each sender head of ``layer`` path-patched
    into ``receivers``, ``per_forward`` heads per batched forward; with ``at`` [prompt],
    at that token of each prompt only (NaN for a prompt without one)."""
    run = PathForward(forward, receivers)
    parts = []
    with torch.inference_mode():
        for a in range(0, len(heads), per_forward):
            part = list(heads[a : a + per_forward])
            values = block.evaluate(metrics, run.logits(layer, part, block, at))
            parts.append(values.reshape(len(metrics), len(part), block.n))
    out = torch.cat(parts, dim=1)
    if at is not None:
        out[:, :, at < 0] = float("nan")
    return out
