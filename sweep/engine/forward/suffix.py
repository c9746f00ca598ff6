"""Suffix forwards: compute only what a patch at (layer, position) can change.

A patch at layer l, position p leaves every layer before l and, under causal attention,
every position before p unchanged. So a suffix forward starts at layer l from the cached
residual, recomputes positions p..last only, takes the keys and values of positions before
p from the cached run, and unembeds each row's last position only (or the positions of a
multi-token answer, which it then recomputes from the first of them).

Rows of one batch may start at different positions. Position-wise work (norms,
projections, MLP: almost all FLOPs) runs on the packed suffix tokens of all rows, so no
row pays for another's longer suffix; attention runs padded to [rows, heads, seq, seq],
which costs seq^2 rather than seq * d_model^2 per row.

This module holds what every model family shares (the layer loop, packing, attention over
cached keys and values, the start-up check); a family's module supplies its block
(``gpt2.py``).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F

from sweep.components import COMPONENTS, Component
from sweep.engine import latents
from sweep.engine.cells import Batch, packed_patch, read_positions
from sweep.engine.forward.base import Forward, activation_row_bytes
from sweep.models.sae import attached

if TYPE_CHECKING:
    from sweep.engine.runs import BlockRuns

Patch = Callable[[torch.Tensor], torch.Tensor]
Trace = Callable[[str, torch.Tensor], torch.Tensor]

STAGES = (
    "resid_pre",
    "q",
    "k",
    "v",
    "pattern",
    "z",
    "attn_out",
    "resid_mid",
    "mlp_out",
    "resid_post",
)
"""The points inside a block where a patch can land, in the order the block reaches them."""


@dataclass(frozen=True)
class Rows:
    """One batch: the prompt each row copies and the suffix of positions it recomputes.

    Tokens are packed row after row: row r owns tokens ``offset[r] .. offset[r] + n[r] - 1``,
    which are its positions ``start[r] .. last[r]``.
    """

    prompt: torch.Tensor
    """[R] index of the cached prompt this row starts from."""
    start: torch.Tensor
    """[R] first recomputed position."""
    last: torch.Tensor
    """[R] the position whose logits the metric reads."""
    offset: torch.Tensor
    """[R] index of the row's first packed token."""
    tok_row: torch.Tensor
    """[T] row of each packed token."""
    tok_pos: torch.Tensor
    """[T] position of each packed token."""
    reads: int = 1
    """Positions whose logits the metric reads, ending at ``last``: more than one for a
    multi-token answer, whose tokens but the last are fed in (teacher forcing)."""

    @classmethod
    def make(
        cls, prompt: torch.Tensor, start: torch.Tensor, last: torch.Tensor, reads: int = 1
    ) -> Rows:
        """Rows recomputing ``start..last``, or from the first read position where that
        comes first (positions before a patch recompute to their cached values)."""
        if reads > 1:
            start = torch.minimum(start, last - reads + 1).clamp(min=0)
        n = last - start + 1
        offset = torch.cumsum(n, 0) - n
        tok_row = torch.repeat_interleave(torch.arange(len(n), device=n.device), n)
        tok_pos = start[tok_row] + torch.arange(len(tok_row), device=n.device) - offset[tok_row]
        return cls(prompt, start, last, offset, tok_row, tok_pos, reads)

    @property
    def tok_prompt(self) -> torch.Tensor:
        return self.prompt[self.tok_row]

    @property
    def read_pos(self) -> torch.Tensor:
        """[R] each row's last position; [R, reads] the positions the metric reads."""
        return read_positions(self.last, self.reads)

    @property
    def final(self) -> torch.Tensor:
        """Packed index of each row's read positions ([R], or [R, reads])."""
        start = self.start if self.reads == 1 else self.start[:, None]
        offset = self.offset if self.reads == 1 else self.offset[:, None]
        return offset + self.read_pos - start


@dataclass(frozen=True)
class Projections:
    """How a block turns the residual into q, k and v, head by head: ``norm`` of the
    residual (any leading dims), then each head's weights [heads, d_head, d_model] and
    bias [heads, d_head] (or None) for q, k and v (k and v per key/value head); as ``qkv``
    computes them, before any rotary embedding."""

    norm: Callable[[torch.Tensor], torch.Tensor]
    weights: tuple[tuple[torch.Tensor, torch.Tensor | None], ...]


class SuffixForward(Forward):
    """The model's blocks, run on packed suffix tokens with cached keys and values."""

    NAME = "fast"
    PARALLEL: ClassVar[bool] = False
    """Attention and MLP read the same residual (Pythia, GPT-J): no ``resid_mid``."""

    def __init__(self, model: Any) -> None:
        super().__init__(model)
        self.n_layers = int(model.cfg.n_layers)
        self.ln_final = model.ln_final
        self.unembed = model.unembed

    @abstractmethod
    def block(
        self,
        i: int,
        x: torch.Tensor,
        rows: Rows,
        k_cache: torch.Tensor,
        v_cache: torch.Tensor,
        at: Trace,
        explicit: bool,
    ) -> torch.Tensor:
        """Block ``i`` on the packed tokens ``x`` [T, d_model]; every stage passes through
        ``at(stage, act)``, which patches or records it. ``explicit``: materialise the
        attention pattern (it is patched or traced) instead of the fused kernel."""

    # What edge patching recomputes for one receiver (``sweep.engine.edges``): the block's
    # own q/k/v and MLP of a residual, and each head's own write into the residual stream.

    @abstractmethod
    def qkv(self, i: int, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """q [T, heads, d_head], k and v [T, key/value heads, d_head] of the residual
        ``x`` [T, d_model], as block ``i``'s q, k and v stages see them."""

    def projections(self, i: int) -> Projections | None:
        """Block ``i``'s q, k and v as its norm and each head's own rows of the projections
        (``Projections``), so that inputs read head by head cost one projection, not one
        per head (EAP's and circuits' copies of the residual); None: not said, every copy
        computes every head (``sweep.engine.eap.per_copy_qkv``)."""
        return None

    @abstractmethod
    def mlp(self, i: int, x: torch.Tensor) -> torch.Tensor:
        """Block ``i``'s MLP output [T, d_model] from the residual it reads."""

    @abstractmethod
    def head_write(self, i: int, h: int, z: torch.Tensor) -> torch.Tensor:
        """[..., d_model]: head ``h``'s share of the attention output, from its z [..., d_head]."""

    def edges_unsupported(self) -> str | None:
        """Why edges of this model cannot be patched (a head's write is not its own), or None."""
        return None

    def base_hooks(self, layers: tuple[int, ...]) -> set[str]:
        first = min(layers)
        names = {f"blocks.{i}.hook_resid_pre" for i in layers}
        names |= {f"blocks.{i}.attn.hook_{kv}" for i in range(first, self.n_layers) for kv in "kv"}
        return names | {c.hook_name(first) for c in COMPONENTS.values()}  # for the check

    def row_bytes(self, seq_len: int, reads: int = 1) -> int:
        return activation_row_bytes(self.model, seq_len, reads)

    def logits(
        self, c: Component, layer: int, batch: Batch, src: torch.Tensor, block: BlockRuns
    ) -> torch.Tensor:
        last = block.last[batch.prompt]
        if c.has("pos"):  # a cell that does not exist recomputes only the last position
            start = torch.where(batch.valid, batch.index["pos"], last)
        else:
            start = torch.zeros_like(last)
        rows = Rows.make(batch.prompt, start, last, block.reads)
        if c.latents:  # through the SAE's decoder, from the block's own latents
            sae = attached(self.model)[c.model_hook(layer)]
            base = block.base[c.hook_name(layer)]
            patch = latents.packed_patch(c, src, base, batch, rows, sae)
        else:
            patch = packed_patch(c, src, batch, rows)
        return self.run(layer, rows, block, c.stage, patch)

    def run(
        self, layer: int, rows: Rows, block: BlockRuns, stage: str | None = None,
        patch: Patch | None = None, trace: dict[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:  # fmt: skip
        """Logits [R, vocab] at each row's last position ([R, reads, vocab] at its read
        positions); ``patch`` rewrites the activation
        at ``stage`` of ``layer``; ``trace`` records every stage of ``layer``."""
        x = block.base[f"blocks.{layer}.hook_resid_pre"][rows.tok_prompt, rows.tok_pos]
        for i in range(layer, self.n_layers):
            keys = block.base[f"blocks.{i}.attn.hook_k"]
            values = block.base[f"blocks.{i}.attn.hook_v"]

            def at(name: str, act: torch.Tensor, here: bool = i == layer) -> torch.Tensor:
                if here and patch is not None and name == stage:
                    act = patch(act)
                if here and trace is not None:
                    trace[name] = act
                return act

            explicit = i == layer and (trace is not None or stage == "pattern")
            x = self.block(i, x, rows, keys, values, at, explicit)
        return self.final_logits(x[rows.final])

    def final_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits [R, vocab] of each row's last residual [R, d_model] (or [R, reads, vocab]
        of [R, reads, d_model])."""
        lead = x.shape[:-1]  # [R] or [R, reads]: run as one sequence of R * reads tokens
        out = self.unembed(self.ln_final(x.reshape(1, -1, x.shape[-1])))[0]
        return out.reshape(*lead, out.shape[-1])

    @torch.inference_mode()
    def check(self, block: BlockRuns, layer: int) -> str | None:
        """Run the unpatched base from ``layer`` and compare every stage of that layer, in
        block order, and the logits with the model's own hooks and logits."""
        rows = Rows.make(
            torch.arange(block.n, device=block.last.device),
            0 * block.last,
            block.last,
            block.reads,
        )
        trace: dict[str, torch.Tensor] = {}
        got = {"logits": self.run(layer, rows, block, trace=trace)}
        want = {"logits": block.base_logits}
        valid = torch.arange(block.seq_len, device=block.last.device) <= block.last[:, None]
        by_stage = {c.stage: c for c in COMPONENTS.values()}
        checked = {}
        for stage in STAGES:
            hook = by_stage[stage].hook_name(layer)
            if hook not in block.base or stage not in trace:
                continue  # a stage this model does not have (MLP of attention-only models)
            ref = block.base[hook]
            if by_stage[stage].layout.axes[0] != "pos":  # the pattern: [prompt, head, q, k]
                mask = valid[:, None, :, None]
                checked[stage] = (trace[stage] * mask, ref * mask)
            else:
                checked[stage] = (trace[stage], ref[rows.tok_prompt, rows.tok_pos])
        pairs = {**checked, "logits": (got["logits"], want["logits"])}
        eps = torch.finfo(block.base_logits.dtype).eps
        for name, (a, b) in pairs.items():
            err = (a.float() - b.float()).abs().max().item()
            tol = max(1e-4, 20 * eps) * max(1.0, b.float().abs().max().item())
            if not err <= tol:
                return (
                    f"its blocks differ from the suffix forward at {name} "
                    f"(max abs difference {err:.3g} > {tol:.3g})"
                )
        return None


def attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    rows: Rows,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    scale: float,
    at: Trace | None,
) -> torch.Tensor:
    """Attention of the packed queries over cached prefix + recomputed suffix keys.

    With ``at`` the pattern is materialised and passed through it (to patch or trace it);
    otherwise the fused kernel runs.
    """
    r, p = rows.tok_row, rows.tok_pos
    keys = k_cache[rows.prompt]  # [R, S, H, dh]: the prefix stays as cached
    vals = v_cache[rows.prompt]
    keys[r, p] = k.to(keys.dtype)
    vals[r, p] = v.to(vals.dtype)
    queries = torch.zeros_like(keys)
    queries[r, p] = q.to(keys.dtype)
    qh, kh, vh = (t.transpose(1, 2) for t in (queries, keys, vals))  # [R, H, S, dh]
    if at is not None:
        seq = qh.shape[2]
        scores = (qh @ kh.transpose(-1, -2)) * scale
        mask = torch.ones(seq, seq, dtype=torch.bool, device=qh.device).tril()
        pattern = at("pattern", scores.masked_fill(~mask, float("-inf")).softmax(-1))
        out = pattern.to(vh.dtype) @ vh
    else:
        out = F.scaled_dot_product_attention(qh, kh, vh, is_causal=True, scale=scale)
    return out.transpose(1, 2)[r, p]  # [T, H, dh]
