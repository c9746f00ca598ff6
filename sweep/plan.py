"""The planner: config + model shape + task shape -> frozen work units.

Pure: no model, no Ray, no disk. One work unit fills exactly one zarr chunk of one
result variable, so writers never share a chunk (zarr loses data when they do).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sweep.components import COMPONENTS, Component
from sweep.errors import ConfigError
from sweep.spec import GridSpec

BYTES_PER_VALUE = 4  # results are float32


@dataclass(frozen=True, slots=True)
class ModelShape:
    n_layers: int
    n_heads: int


@dataclass(frozen=True, slots=True)
class Axes:
    """The coordinates of the grid, shared by every component in the store."""

    layers: tuple[int, ...]
    positions: tuple[int, ...]
    heads: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class WorkUnit:
    """One zarr chunk of one component: a block of layers, every pos/head cell of them."""

    index: int
    """Stable id across runs of the same config (the store's done record uses it)."""
    component: str
    layer_start: int
    """First index into ``Axes.layers`` (the chunk's offset on the layer axis)."""
    layers: tuple[int, ...]
    """Model layer numbers this unit patches."""
    positions: tuple[int, ...]
    """Positions patched one at a time; empty for all-position components."""
    heads: tuple[int, ...]
    """Heads patched one at a time; empty for components without heads."""

    @property
    def spec(self) -> Component:
        return COMPONENTS[self.component]

    @property
    def cells_per_layer(self) -> int:
        return max(len(self.positions), 1) * max(len(self.heads), 1)

    @property
    def n_cells(self) -> int:
        return len(self.layers) * self.cells_per_layer


@dataclass(frozen=True, slots=True)
class Plan:
    axes: Axes
    components: tuple[Component, ...]
    metrics: tuple[str, ...]
    n_prompts: int
    units: tuple[WorkUnit, ...]

    def shape(self, c: Component) -> tuple[int, ...]:
        """Store shape of one component: metric, layer, [pos], [head], prompt."""
        return (len(self.metrics), len(self.axes.layers), *self._grid(c), self.n_prompts)

    def chunks(self, c: Component) -> tuple[int, ...]:
        sizes = [u.layers for u in self.units if u.component == c.name]
        return (len(self.metrics), len(sizes[0]), *self._grid(c), self.n_prompts)

    def _grid(self, c: Component) -> tuple[int, ...]:
        out = []
        if c.has_pos:
            out.append(len(self.axes.positions))
        if c.has_head:
            out.append(len(self.axes.heads))
        return tuple(out)


def make_axes(grid: GridSpec, shape: ModelShape, seq_len: int) -> Axes:
    """Check the grid's restrictions against the model and task; normalise negatives."""
    layers = _check("grid.layers", grid.layers, shape.n_layers, "layers")
    heads = _check("grid.heads", grid.heads, shape.n_heads, "heads")
    positions = grid.positions
    if positions is not None:
        bad = [p for p in positions if not -seq_len <= p < seq_len]
        if bad:
            raise ConfigError(
                f"grid.positions: {bad} out of range; the longest prompt has {seq_len} token "
                f"positions (0..{seq_len - 1}, or -{seq_len}..-1 from the end)"
            )
        positions = tuple(p + seq_len if p < 0 else p for p in positions)
        if len(set(positions)) != len(positions):
            raise ConfigError(f"grid.positions: {list(grid.positions or ())} name a position twice")
    return Axes(layers, _check("grid.positions", positions, seq_len, "token positions"), heads)


def _check(key: str, chosen: tuple[int, ...] | None, size: int, what: str) -> tuple[int, ...]:
    if chosen is None:
        return tuple(range(size))
    bad = [i for i in chosen if not 0 <= i < size]
    if bad:
        raise ConfigError(f"{key}: {bad} out of range; there are {size} {what} (0..{size - 1})")
    return tuple(chosen)


def make_plan(
    grid: GridSpec,
    shape: ModelShape,
    seq_len: int,
    n_prompts: int,
    metrics: tuple[str, ...],
    chunk_bytes: int,
) -> Plan:
    """Split each component's grid into layer blocks of about ``chunk_bytes`` each."""
    axes = make_axes(grid, shape, seq_len)
    units: list[WorkUnit] = []
    for c in grid.components:
        pos = axes.positions if c.has_pos else ()
        heads = axes.heads if c.has_head else ()
        layer_bytes = len(metrics) * max(len(pos), 1) * max(len(heads), 1) * n_prompts
        per_chunk = min(
            len(axes.layers), max(1, math.ceil(chunk_bytes / (layer_bytes * BYTES_PER_VALUE)))
        )
        for start in range(0, len(axes.layers), per_chunk):
            block = axes.layers[start : start + per_chunk]
            units.append(WorkUnit(len(units), c.name, start, block, pos, heads))
    return Plan(axes, grid.components, metrics, n_prompts, tuple(units))
