"""The cached clean and corrupted runs of a prompt block, which every patched forward starts from.

The *base* run is the one an intervention changes (corrupted when denoising; clean when
noising or ablating); only the hooks that a forward starts from and the sources read are
kept, and only the logits the metric reads (each prompt's last position; a multi-token
answer's positions). ``BlockCache`` keeps as many blocks as
its share of ``runner.memory_mb`` holds, least recently used first out.
"""

from __future__ import annotations

import ctypes
import dataclasses
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from sweep.engine.cells import at_reads, read_positions
from sweep.metrics import evaluate
from sweep.tasks.tokenize import TokenizedTask


@dataclass
class BlockRuns:
    """Some prompts of the task (a block ``start..start + n - 1``, or any chosen ones),
    padded to their own longest."""

    prompts: np.ndarray
    """[prompt] the task's index of each prompt."""
    clean_tokens: torch.Tensor
    """[prompt, pos] on the model's device."""
    corrupted_tokens: torch.Tensor
    lengths: torch.Tensor
    """[prompt] real token counts, on the device."""
    answer: torch.Tensor
    wrong: torch.Tensor
    clean_logits: torch.Tensor
    """[prompt, vocab] at each prompt's last position ([prompt, reads, vocab] at its read
    positions, for a multi-token answer)."""
    corrupted_logits: torch.Tensor
    base_run: str
    base: dict[str, torch.Tensor]
    """The base run's activations at the hooks forwards and sources need."""
    source: dict[str, torch.Tensor]
    """The other run's activations at the grid's hooks (patching), else empty."""
    reads: int = 1
    """Positions the metric reads, ending at each prompt's last: a multi-token answer's
    tokens (``TokenizedTask.reads``)."""
    named: torch.Tensor | None = None
    """[prompt, name] each named position's token index (-1: none), on the device."""
    extras: dict[str, Any] = field(default_factory=dict)
    """Per-block state of an intervention (AtP's products, resampling donors' runs)."""

    @property
    def start(self) -> int:
        return int(self.prompts[0])

    @property
    def n(self) -> int:
        return int(self.lengths.shape[0])

    @property
    def seq_len(self) -> int:
        return int(self.clean_tokens.shape[1])

    @property
    def last(self) -> torch.Tensor:
        return self.lengths - 1

    @property
    def read_pos(self) -> torch.Tensor:
        """[prompt] the last position; [prompt, reads] the read positions."""
        return read_positions(self.last, self.reads)

    @property
    def base_logits(self) -> torch.Tensor:
        return self.clean_logits if self.base_run == "clean" else self.corrupted_logits

    def tokens(self, run: str) -> torch.Tensor:
        return self.clean_tokens if run == "clean" else self.corrupted_tokens

    def evaluate(self, metrics: tuple[str, ...], logits: torch.Tensor) -> torch.Tensor:
        """[metric, rows] for the read logits of ``rows / n`` stacked copies of the
        block's prompts."""
        reps = logits.shape[0] // self.n
        # repeat, not cat: a lower peak, measured (tests/engine/test_blocks.py)
        clean = self.clean_logits.repeat(reps, *([1] * (self.clean_logits.dim() - 1)))
        answer, wrong = (torch.cat([t] * reps) for t in (self.answer, self.wrong))
        return evaluate(metrics, logits, answer, wrong, clean)

    @property
    def nbytes(self) -> int:
        """What the block holds in memory (tensors only; the rest is small)."""
        return sum(_bytes(v) for v in (self.__dict__.values()))


def release_freed_memory() -> None:
    """Give memory freed by an evicted block back to the system (glibc keeps freed heap
    memory otherwise, and the process's footprint would creep past the budget)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass


def _bytes(x: Any) -> int:
    if isinstance(x, torch.Tensor):
        return x.numel() * x.element_size()
    if isinstance(x, dict):
        return sum(_bytes(v) for v in x.values())
    if isinstance(x, (list, tuple)):
        return sum(_bytes(v) for v in x)
    if dataclasses.is_dataclass(x) and not isinstance(x, type):  # EAP's gradients
        return sum(_bytes(v) for v in vars(x).values())
    return 0


def run_cached(
    model: Any,
    tokens: torch.Tensor,
    lengths: torch.Tensor,
    names: set[str] | frozenset[str],
    extra: list[tuple[str, Callable[[torch.Tensor, Any], None]]] | None = None,
    reads: int = 1,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Last-position logits ([prompt, reads, vocab] at the ``reads`` positions ending
    there) and the activations at ``names`` of one plain forward (names the model does not
    have, such as the MLP stages of an attention-only model, are left out); ``extra``
    hooks read the run too."""
    from sweep.models.sae import encode_hooks

    wanted = set(names)
    names = wanted & set(model.hook_dict)
    at = read_positions(lengths - 1, reads)
    cache: dict[str, torch.Tensor] = {}

    def keep(name: str) -> Callable[[torch.Tensor, Any], None]:
        def hook(act: torch.Tensor, hook: Any) -> None:
            cache[name] = act.detach().clone()  # by the requested name: the bridge aliases

        return hook

    def reads_only(act: torch.Tensor, hook: Any) -> torch.Tensor:
        picked = at_reads(act, at)  # never the [prompt, pos, vocab] logits
        return picked.unsqueeze(1) if reads == 1 else picked

    hooks = [(n, keep(n)) for n in sorted(names)] + [("unembed.hook_in", reads_only)]
    hooks += encode_hooks(model, wanted - names, cache)  # SAE latents (``sweep.engine.latents``)
    hooks += extra or []
    with torch.inference_mode():
        logits = model.run_with_hooks(tokens, fwd_hooks=hooks)
    return (logits[:, 0] if reads == 1 else logits), cache


def build_block(
    model: Any,
    task: TokenizedTask,
    prompts: np.ndarray,
    base_run: str,
    base_hooks: set[str],
    source_hooks: set[str],
) -> BlockRuns:
    """Run the prompts clean and corrupted once, keeping what is needed."""
    device = model.cfg.device
    clean, corrupted = (t.to(device) for t in task.rows(prompts))
    lengths = torch.from_numpy(task.lengths[prompts]).to(device)
    other = "corrupted" if base_run == "clean" else "clean"
    hooks = {base_run: base_hooks, other: source_hooks}
    reads = task.reads
    clean_logits, clean_cache = run_cached(model, clean, lengths, hooks["clean"], reads=reads)
    corr_logits, corr_cache = run_cached(model, corrupted, lengths, hooks["corrupted"], reads=reads)
    caches = {"clean": clean_cache, "corrupted": corr_cache}
    return BlockRuns(
        prompts=prompts,
        clean_tokens=clean,
        corrupted_tokens=corrupted,
        lengths=lengths,
        answer=task.answer[torch.from_numpy(prompts)].to(device),
        wrong=task.wrong[torch.from_numpy(prompts)].to(device),
        clean_logits=clean_logits,
        corrupted_logits=corr_logits,
        base_run=base_run,
        reads=reads,
        base=caches[base_run],
        source=caches[other],
        named=torch.from_numpy(task.named[prompts]).to(device),
    )


class BlockCache:
    """Blocks by (start, stop), built on first use and kept while they fit ``budget``
    bytes; the least recently used goes first, the one in use never."""

    def __init__(self, build: Callable[[int, int], BlockRuns], budget: int) -> None:
        self.build = build
        self.budget = budget
        self.blocks: OrderedDict[tuple[int, int], BlockRuns] = OrderedDict()
        self.builds = 0
        """Blocks built for units (the probe's block counts when a unit uses it)."""
        self.adopted: set[tuple[int, int]] = set()

    def get(self, start: int, stop: int) -> BlockRuns:
        key = (start, stop)
        if key in self.blocks:
            if key in self.adopted:  # built by the probe: counted once it serves a unit
                self.adopted.discard(key)
                self.builds += 1
            self.blocks.move_to_end(key)
            return self.blocks[key]
        evicted = False
        while self.blocks and self.held + self._guess(stop - start) > self.budget:
            gone, _ = self.blocks.popitem(last=False)
            self.adopted.discard(gone)
            evicted = True
        if evicted:
            release_freed_memory()
        block = self.build(start, stop)
        self.builds += 1
        self.blocks[key] = block
        return block

    def adopt(self, start: int, stop: int, block: BlockRuns) -> None:
        """Keep a block built elsewhere (the start-up probe's, when its prompts are a
        block's) as if ``get`` had built it, if it fits."""
        if (start, stop) not in self.blocks and self.held + block.nbytes <= self.budget:
            self.blocks[(start, stop)] = block
            self.adopted.add((start, stop))

    @property
    def held(self) -> int:
        return sum(b.nbytes for b in self.blocks.values())

    def _guess(self, n: int) -> int:
        """Bytes a new block of ``n`` prompts will take, from those held (0 if none)."""
        if not self.blocks:
            return 0
        per_prompt = max(b.nbytes / b.n for b in self.blocks.values())
        return int(per_prompt * n)
