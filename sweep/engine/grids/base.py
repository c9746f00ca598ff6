"""What a worker does that depends on the grid's kind, behind one small protocol: the
forward it runs on, its axes, the activations an intervention prepares its sources for,
the cached runs of a prompt block, and the values of a work unit (and, where the kind
has them, of AtP's exact cells). One module per kind; ``sweep.engine.grids`` picks."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch

from sweep.components import COMPONENTS, Component
from sweep.edges.graph import Node
from sweep.engine.forward import FAMILIES, Forward
from sweep.engine.forward.suffix import SuffixForward
from sweep.errors import ConfigError
from sweep.plan import Axes, ExactJob, WorkUnit

if TYPE_CHECKING:
    from sweep.engine.runs import BlockRuns
    from sweep.engine.worker import Worker


class Grid(ABC):
    """A grid kind's part of a worker (``w``): set ``forward``, ``axes`` and ``hooks`` in
    ``__init__``; the worker owns the model, the task, the intervention and the cache."""

    NAME: ClassVar[str]
    """The override that picks the kind, as messages name it (``grid=edges``)."""
    STRICT: ClassVar[bool] = True
    """The fast forward must reproduce the model (else the sweep is refused); a kind that
    is not strict falls back to the hooked forward."""

    forward: Forward
    axes: Axes
    hooks: tuple[tuple[Component, int], ...] = ()
    """Every (component, layer) an intervention prepares its sources for (means, donors)."""

    def __init__(self, w: Worker) -> None:
        self.w = w

    @property
    def fw(self) -> Any:
        """The forward the worker runs on now (a kind that is not strict may fall back)."""
        return self.w.forward

    @abstractmethod
    def check_layer(self) -> int:
        """The first layer the kind's forwards start at: where the start-up check starts."""

    @abstractmethod
    def build(self, prompts: np.ndarray) -> BlockRuns:
        """The cached runs of these prompts, as the kind's units read them."""

    def latent_width(self) -> int:
        """SAE latents a token of the cached runs holds at each SAE (0: none)."""
        return 0

    def before(self, job: WorkUnit | ExactJob) -> None:
        """Called before a unit's or job's block is fetched: a kind may widen what the
        cached runs hold to what it asks."""
        return None

    @abstractmethod
    def values(self, unit: WorkUnit, block: BlockRuns) -> np.ndarray:
        """A unit's values, [metric, lead, *dims, prompt], float32."""

    def exact(self, job: ExactJob, block: BlockRuns) -> torch.Tensor:
        """AtP's and EAP's verification: [metric, cell, prompt] patched exactly."""
        raise ConfigError(f"{self.NAME}: has no estimates to verify (verify_top_k)")


def suffix_forward(model: Any, grid: str) -> SuffixForward:
    """The model family's suffix forward, which edge and path patching run on; a model
    without one is refused (the hooked forward cannot patch edges or paths)."""
    reasons = []
    for cls in FAMILIES:
        why = cls.unsupported(model)
        if why is None:
            forward = cls(model)
            assert isinstance(forward, SuffixForward)
            return forward
        reasons.append(why)
    raise ConfigError(
        f"{grid}: needs the fast forward of the model's family (GPT-2, Llama, Mistral, Qwen2, "
        f"Gemma 2, GPT-NeoX, GPT-J), and this model has none: {'; '.join(reasons)}"
    )


def edge_forward(model: Any, grid: str = "grid=edges") -> SuffixForward:
    """The forward edge sweeps patch on (``sweep.engine.edges``): a family's suffix
    forward whose heads each write a share of the residual stream of their own."""
    forward = suffix_forward(model, grid)
    why = forward.edges_unsupported()
    if why is not None:
        raise ConfigError(f"{grid}: {why}; edge and circuit sweeps cannot run on this model")
    return forward


def sender_grid(senders: list[Node]) -> tuple[tuple[Component, int], ...]:
    """The hooks whose activations make the senders' outputs, as (component, layer) pairs:
    an intervention prepares its sources for these (means, donors) as for a node grid."""
    pairs = set()
    for s in senders:
        if s.kind == "embed":
            pairs.add(("resid_pre", 0))
        else:
            pairs.add(("z" if s.kind == "head" else "mlp_out", s.layer))
    return tuple((COMPONENTS[name], layer) for name, layer in sorted(pairs))


def sender_sources(
    w: Worker, prompts: np.ndarray, start: set[str]
) -> tuple[BlockRuns, list[dict[str, torch.Tensor]]]:
    """The block's runs with the base run's ``start`` hooks and, per sample of the
    intervention, the activations every sender's source output is made of (the other
    run's when patching; zero, the task's mean or other prompts' when ablating): what
    edge and circuit sweeps ablate or patch from."""
    from sweep.engine.edges import edge_hooks
    from sweep.engine.runs import build_block

    iv = w.intervention
    outputs = edge_hooks(w.shape.n_layers, w.shape.mlp)
    other = outputs if iv.reads() == "other" else set()
    block = build_block(w.model, w.task, prompts, iv.base_run, start | outputs, other)
    iv.prepare_block(block)
    with torch.inference_mode():
        per_hook = [(c.hook_name(layer), iv.sources(c, layer, block)) for c, layer in w.grid]
        samples = [{hook: src[k] for hook, src in per_hook} for k in range(len(per_hook[0][1]))]
    return block, samples


def named_positions(block: BlockRuns) -> np.ndarray:
    """[prompt, name] the block's named positions (none: an empty table)."""
    return block.named.cpu().numpy() if block.named is not None else np.zeros((block.n, 0))
