"""The planner: config + model shape + task shape -> frozen work units.

Pure: no model, no Ray, no disk, no torch. One work unit fills exactly one zarr chunk of
one result variable (a block of layers x every cell of them x a block of prompts), so
writers never share a chunk (zarr loses data when they do).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from sweep.components import DIM_TABLE, Component, for_model, get_component
from sweep.edges.graph import GraphShape, Node, connects, edges, receivers, select, senders
from sweep.edges.ranking import (
    Ranking,
    circuit_sizes,
    edge_indices,
    members,
    threshold_size,
)
from sweep.errors import ConfigError
from sweep.spec import CircuitGridSpec, EdgeGridSpec, GridSpec, PathGridSpec

BYTES_PER_VALUE = 4  # results are float32
UNIT_ROWS = 1024
"""Layers are grouped into a unit up to ``store.chunk_kb`` and about this many patched rows
(cells x prompts), so a unit takes seconds: early first results, little lost to a kill."""

Cell = tuple[int, ...]
"""One coordinate per dim of a component, in its ``dims`` order."""

NAMED = 1 << 24
"""Position codes from here up stand for the task's named positions (``NAMED + k``: its
k-th name), found in each prompt as it is patched, as a negative position is."""


@dataclass(frozen=True, slots=True)
class ModelShape:
    n_layers: int
    n_heads: int
    n_kv_heads: int = 0
    """Key/value heads (fewer than ``n_heads`` with grouped-query attention; 0: as many)."""
    mlp: bool = True
    """Blocks have an MLP (attention-only models do not)."""
    parallel: bool = False
    """Attention and MLP read the same residual (Pythia, GPT-J)."""
    d_model: int = 0
    """The residual stream's width (0: not said)."""
    n_latents: int = 0
    """The SAEs' latents (``sae.path``; the widest SAE's d_sae), 0: no SAE."""
    sae_layers: tuple[int, ...] = ()
    """The layers the SAEs read."""
    sae_stage: str = ""
    """The hook of a block the SAEs read (``hook_resid_pre``...)."""
    top_latents: tuple[int, ...] = ()
    """``grid.latents=top:N``: each SAE's N most active latents on the task, together."""

    def __post_init__(self) -> None:
        if not self.n_kv_heads:
            object.__setattr__(self, "n_kv_heads", self.n_heads)

    @property
    def graph(self) -> GraphShape:
        """The model's graph of senders and receivers (edge sweeps)."""
        return GraphShape(self.n_layers, self.n_heads, self.n_kv_heads, self.mlp, self.parallel)

    def component(self, name: str) -> Component:
        """The component as this model lays it out (``components.for_model``)."""
        return for_model(get_component(name), self.n_heads, self.n_kv_heads, self.sae_stage)


@dataclass(frozen=True)
class TaskInfo:
    """What the driver needs from a worker to plan and create the store."""

    shape: ModelShape
    lengths: tuple[int, ...]
    """Token count of each prompt."""
    versions: dict[str, str]
    engine: str
    """``fast`` (a suffix forward) or ``hooks`` (the model's hooked forward)."""
    block_bytes: int
    """Bytes one prompt of a prompt block's cached runs takes (measured, an upper bound)."""
    row_bytes: int
    """Bytes one row of a patched forward takes, at the longest prompt."""
    position_names: tuple[str, ...] = ()
    """The task's named positions (IOI: ``S1``, ``IO``...)."""
    answer_widths: tuple[int, int] = (0, 0)
    """Tokens per answer and wrong set (0: one token per prompt, the store's ``answer_id``
    is [prompt]; K: [prompt, K], padded with -1)."""
    continuations: tuple[bool, bool] = (False, False)
    """Whether the answer and wrong ids are token sequences (multi-token answers, along
    ``answer_token``, right-aligned) rather than sets (along ``answer_set``)."""

    @property
    def n_prompts(self) -> int:
        return len(self.lengths)

    @property
    def seq_len(self) -> int:
        return max(self.lengths)


EDGES = "edges"
"""The store variable of an edge sweep."""
PATHS = "paths"
"""The store variable of a path-patching sweep."""
CIRCUIT = "circuit"
"""The store variable of a circuit sweep."""


@dataclass(frozen=True, slots=True)
class GraphVariable:
    """The store variable of an edge or path sweep: ``edges`` [metric, receiver, sender,
    prompt], units of receiver blocks x every sender; ``paths`` [metric, layer, head,
    prompt] (each sender head's path effect), units of sender-layer blocks x every head."""

    name: str
    lead: str
    """The dim its units are blocks of (as ``layer`` is a component's)."""
    dims: tuple[str, ...]


EDGE_VARIABLE = GraphVariable(EDGES, "receiver", ("sender",))
EDGE_POS_VARIABLE = GraphVariable(EDGES, "receiver", ("sender", "pos"))
"""Edges one position at a time (``grid.positions``)."""
PATH_VARIABLE = GraphVariable(PATHS, "layer", ("head",))
PATH_POS_VARIABLE = GraphVariable(PATHS, "layer", ("pos", "head"))
"""Paths one sender position at a time (``grid.positions``), laid out as ``z_by_pos``."""
CIRCUIT_VARIABLE = GraphVariable(CIRCUIT, "size", ())
"""``circuit`` [metric, size, prompt]: the metric with every edge outside the top ``size``
ablated; units of one size each (one forward per size and prompt block)."""

Variable = Component | GraphVariable
"""What a plan fills: one store variable, split into units along its lead dim."""


@dataclass(frozen=True)
class Axes:
    """The coordinates of the grid, shared by every component in the store."""

    layers: tuple[int, ...]
    coords: dict[str, tuple[int, ...]] = field(default_factory=dict)
    """Each grid dim after ``layer`` (``pos``, ``head``) -> its coordinate values. A
    negative position counts from each prompt's own end; ``NAMED + k`` is the task's k-th
    named position. An edge sweep's ``receiver`` and ``sender``: indices into the graph's
    receivers and senders (``sweep.edges.graph``)."""
    position_names: tuple[str, ...] = ()
    """The task's named positions, which ``NAMED + k`` codes stand for."""
    graph: GraphShape | None = None
    """The model's graph (edge sweeps), whose nodes ``receiver`` and ``sender`` index."""
    receivers: tuple[str, ...] = ()
    """A path sweep's receivers, by name (``sweep.edges.graph``)."""
    ranking: Ranking | None = None
    """A circuit sweep's edges, best first (its ``size`` coordinate counts them)."""
    prune: bool = True
    """A circuit sweep leaves out the edges of a top K that dangle (``edges.circuit``)."""
    thresholds: tuple[tuple[int, float], ...] = ()
    """A circuit sweep's sizes that thresholds picked: (size, threshold)."""

    def of(self, c: Variable) -> tuple[tuple[str, tuple[int, ...]], ...]:
        return tuple((d, self.coords[d]) for d in c.dims)

    def lead(self, c: Variable) -> tuple[int, ...]:
        """The values along a variable's lead dim: layers, or an edge sweep's receivers."""
        return self.layers if c.lead == "layer" else self.coords[c.lead]

    def nodes(self, dim: str) -> list[Node]:
        """The graph's receivers or senders, as ``receiver`` / ``sender`` index them."""
        assert self.graph is not None, "not an edge sweep"
        return receivers(self.graph) if dim == "receiver" else senders(self.graph)

    @property
    def named(self) -> bool:
        """Whether the ``pos`` axis is named positions (the store labels it by name)."""
        return any(v >= NAMED for v in self.coords.get("pos", ()))

    def edges_of(self, unit: WorkUnit) -> list[tuple[Node, Node]]:
        """The edges an edge unit patches: its receivers x the senders that reach them,
        receiver-major."""
        assert self.graph is not None, "not an edge sweep"
        into, out_of = self.nodes("receiver"), self.nodes("sender")
        chosen = [out_of[i] for i in unit.grid[0][1]]
        return [
            (s, into[r]) for r in unit.layers for s in chosen if connects(s, into[r], self.graph)
        ]

    def labels(self, dim: str) -> list[int] | list[str]:
        """The store's coordinate values of a dim: named positions and graph nodes by name."""
        if dim in ("receiver", "sender"):
            nodes = self.nodes(dim)
            return [nodes[i].name for i in self.coords[dim]]
        if dim == "pos" and self.named:
            return [self.position_names[v - NAMED] for v in self.coords[dim]]
        return list(self.coords[dim])

    def code(self, dim: str, label: int | str) -> int:
        """A store coordinate value back to the cell value a worker patches."""
        if isinstance(label, str):
            return NAMED + self.position_names.index(label)
        return int(label)


@dataclass(frozen=True, slots=True)
class WorkUnit:
    """One zarr chunk of one component: a block of layers, every cell of them, a block of
    prompts."""

    index: int
    """Stable id across runs of the same config (the store's done record uses it)."""
    component: str
    """The store variable it fills (``edges`` for an edge sweep)."""
    layer_start: int
    """First index into the variable's lead dim (the chunk's offset on the layer axis, or
    on the ``receiver`` axis of ``edges``)."""
    layers: tuple[int, ...]
    """Model layer numbers this unit patches (``edges``: receiver indices, ``Axes``)."""
    grid: tuple[tuple[str, tuple[int, ...]], ...]
    """The component's dims and the coordinates of each, in store order."""
    prompt_start: int
    prompt_stop: int

    @property
    def block(self) -> int:
        """Its prompt block (which cached runs it needs): the block's first prompt."""
        return self.prompt_start

    @property
    def cells(self) -> list[Cell]:
        """Every cell of one layer, in store order."""
        return list(itertools.product(*(values for _, values in self.grid)))

    @property
    def n_cells(self) -> int:
        return len(self.layers) * math.prod(len(v) for _, v in self.grid)

    @property
    def n_prompts(self) -> int:
        return self.prompt_stop - self.prompt_start


@dataclass(frozen=True, slots=True)
class ExactJob:
    """Exact patching of single cells of one component and layer (AtP's verification)."""

    component: str
    layer: int
    cells: tuple[Cell, ...]
    prompt_start: int
    prompt_stop: int

    @property
    def block(self) -> int:
        return self.prompt_start


@dataclass(frozen=True, slots=True)
class Describe:
    """Ask a worker for the task's shape, tokens and baselines (``TaskInfo``)."""


Job = WorkUnit | ExactJob | Describe
"""What a runner sends a worker."""


PROMPT_TEXTS = ("clean_text", "corrupted_text", "answer", "wrong", "source")
"""The task's own strings per prompt, stored along ``prompt`` (``source``: file:line)."""
PROMPT_IDS = ("answer_id", "wrong_id", "template")
"""The answer and wrong token ids per prompt, as the metric reads them ([prompt, K] for
answer sets, padded with -1, along ``answer_set`` and ``wrong_set``; multi-token answers
along ``answer_token`` and ``wrong_token``, padded -1 in front), and the id of the
template the prompt was made from (-1: none)."""


@dataclass(frozen=True)
class BlockData:
    """What a prompt block adds to the store besides its units: baselines, tokens, and
    the task's own texts."""

    prompt_start: int
    clean_baseline: np.ndarray
    """[metric, prompt]"""
    corrupted_baseline: np.ndarray
    clean_str: list[list[str]]
    """[prompt][pos] token strings ('' past a prompt's end), to the block's own width."""
    corrupted_str: list[list[str]]
    texts: dict[str, list[str]] = field(default_factory=dict)
    """Each of ``PROMPT_TEXTS`` -> [prompt] strings."""
    ids: dict[str, np.ndarray] = field(default_factory=dict)
    """Each of ``PROMPT_IDS`` -> [prompt] token ids."""
    named: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.int64))
    """[prompt, name] each named position's token index (-1: none)."""


@dataclass(frozen=True)
class UnitResult:
    values: np.ndarray
    """[metric, layer, *dims, prompt] float32."""
    block: BlockData


@dataclass(frozen=True)
class Plan:
    axes: Axes
    components: tuple[Variable, ...]
    metrics: tuple[str, ...]
    n_prompts: int
    prompt_block: int
    """Prompts per work unit (the store's chunk size on the ``prompt`` axis)."""
    units: tuple[WorkUnit, ...]

    def component(self, name: str) -> Variable:
        return next(c for c in self.components if c.name == name)

    def grid_shape(self, c: Variable) -> tuple[int, ...]:
        return tuple(len(v) for _, v in self.axes.of(c))

    def shape(self, c: Variable) -> tuple[int, ...]:
        """Store shape of one variable: metric, its lead dim (layer), *dims, prompt."""
        lead = len(self.axes.lead(c))
        return (len(self.metrics), lead, *self.grid_shape(c), self.n_prompts)

    def chunks(self, c: Variable) -> tuple[int, ...]:
        layers = next(len(u.layers) for u in self.units if u.component == c.name)
        return (len(self.metrics), layers, *self.grid_shape(c), self.prompt_block)

    @property
    def is_edges(self) -> bool:
        """An edge sweep (not a circuit sweep: its cells are circuits)."""
        return self.axes.graph is not None and self.axes.ranking is None

    def n_cells(self, unit: WorkUnit) -> int:
        """What a unit computes: cells, or an edge unit's real edges (not the pairs whose
        receiver reads before the sender writes, which stay NaN), at each position."""
        if not self.is_edges:
            return unit.n_cells
        return len(self.axes.edges_of(unit)) * math.prod(len(v) for _, v in unit.grid[1:])

    @property
    def prompt_blocks(self) -> list[tuple[int, int]]:
        n, b = self.n_prompts, self.prompt_block
        return [(s, min(s + b, n)) for s in range(0, n, b)]


def make_axes(
    grid: GridSpec, shape: ModelShape, seq_len: int, position_names: tuple[str, ...] = ()
) -> Axes:
    """Check the grid's restrictions against the model and task (every dim of the table
    in ``sweep.components``). SAE latents: at the SAEs' layers, ``top:N`` as the worker
    chose them (``ModelShape.top_latents``); no ``latent`` dim without them."""
    chosen_layers = grid.layers
    if grid.has_latents and chosen_layers is None:
        chosen_layers = shape.sae_layers
    layers = _check("grid.layers", chosen_layers, shape.n_layers, "layers")
    coords = {}
    for dim in DIM_TABLE:
        if dim.name == "latent":
            if grid.has_latents:
                coords["latent"] = _latents(grid.latents, shape)
            continue
        size = seq_len if dim.size_of == "seq_len" else int(getattr(shape, dim.size_of))
        chosen = getattr(grid, dim.key)
        if dim.name == "pos" and chosen is not None:
            coords[dim.name] = _positions_of(chosen, size, position_names)
            continue
        coords[dim.name] = _check(f"grid.{dim.key}", chosen, size, dim.key, dim.relative)
    return Axes(layers, coords, tuple(position_names))


def _latents(chosen: tuple[int, ...] | str, shape: ModelShape) -> tuple[int, ...]:
    if chosen == "all":
        return tuple(range(shape.n_latents))
    if isinstance(chosen, str):
        return shape.top_latents
    return _check("grid.latents", chosen, shape.n_latents, "latents")


def _named(key: str, chosen: tuple[str, ...], names: tuple[str, ...]) -> tuple[int, ...]:
    unknown = [n for n in chosen if n not in names]
    if unknown:
        has = f"it names {', '.join(names)}" if names else "it names none"
        raise ConfigError(
            f"{key}: {unknown} are not named positions of this task ({has}); give token "
            'indices, or name positions in the task file ("positions": {"IO": 4})'
        )
    return tuple(NAMED + names.index(n) for n in chosen)


def resolve_positions(codes: np.ndarray, lengths: np.ndarray, named: np.ndarray) -> np.ndarray:
    """[prompt, pos] the token index each position code means in each prompt (-1: the
    prompt has no such position): negative from its end, named from its table."""
    codes = np.asarray(codes, dtype=np.int64)[None, :]
    n = np.asarray(lengths, dtype=np.int64)[:, None]
    out = np.where(codes < 0, n + codes, codes)
    is_named = codes >= NAMED
    if is_named.any():
        table = np.asarray(named, dtype=np.int64).reshape(len(n), -1)
        k = np.where(is_named, codes - NAMED, 0)
        out = np.where(is_named, np.take_along_axis(table, np.broadcast_to(k, out.shape), 1),
                       out)  # fmt: skip
    return np.where((out >= 0) & (out < n), out, -1)


def _check(
    key: str, chosen: tuple[int, ...] | None, size: int, what: str, relative: bool = False
) -> tuple[int, ...]:
    if chosen is None:
        return tuple(range(size))
    low = -size if relative else 0
    bad = [i for i in chosen if not low <= i < size]
    if bad:
        ends = f", or -{size}..-1 from each prompt's own end" if relative else ""
        what = "token positions in the longest prompt" if key == "grid.positions" else what
        raise ConfigError(
            f"{key}: {bad} out of range; there are {size} {what} (0..{size - 1}{ends})"
        )
    return tuple(chosen)


def make_plan(
    grid: GridSpec | EdgeGridSpec | PathGridSpec | CircuitGridSpec,
    shape: ModelShape,
    seq_len: int,
    n_prompts: int,
    metrics: Sequence[str],
    chunk_bytes: int,
    prompt_block: int | None = None,
    position_names: tuple[str, ...] = (),
    sizes: tuple[int, ...] = (),
    estimate: bool = False,
) -> Plan:
    """Split each component's grid into chunks: blocks of ``prompt_block`` prompts (default:
    all prompts in one block) times blocks of layers, grouped up to ``chunk_bytes`` and
    ``UNIT_ROWS``. An edge sweep: blocks of receivers x every sender; estimated (EAP:
    ``estimate``), up to ``chunk_bytes`` only, as a block's gradients score every edge at
    once. A circuit sweep: one unit per size and prompt block, ``sizes`` (a store's, in
    its order) first."""
    components: tuple[Variable, ...]
    if isinstance(grid, EdgeGridSpec):
        axes = edge_axes(grid, shape, seq_len, position_names)
        components = (EDGE_VARIABLE if grid.positions is None else EDGE_POS_VARIABLE,)
    elif isinstance(grid, PathGridSpec):
        axes = path_axes(grid, shape, seq_len, position_names)
        components = (PATH_VARIABLE if grid.positions is None else PATH_POS_VARIABLE,)
    elif isinstance(grid, CircuitGridSpec):
        axes = circuit_axes(grid, shape, seq_len, position_names, sizes)
        components = (CIRCUIT_VARIABLE,)
    else:
        axes = make_axes(grid, shape, seq_len, position_names)
        components = tuple(shape.component(c.name) for c in grid.component_list)
    block = min(prompt_block or n_prompts, n_prompts)
    starts = range(0, n_prompts, block)
    units: list[WorkUnit] = []
    for c in components:
        cells, lead = axes.of(c), axes.lead(c)
        rows = math.prod(len(v) for _, v in cells) * block  # patched rows of one layer
        by_size = math.ceil(chunk_bytes / (len(metrics) * rows * BYTES_PER_VALUE))
        by_rows = by_size if estimate and isinstance(grid, EdgeGridSpec) else UNIT_ROWS // rows
        per_chunk = min(len(lead), max(1, min(by_size, by_rows)))
        if c is CIRCUIT_VARIABLE:
            per_chunk = 1  # a forward per size: units spread over workers
        for start in range(0, len(lead), per_chunk):
            layers = lead[start : start + per_chunk]
            for p in starts:
                stop = min(p + block, n_prompts)
                units.append(WorkUnit(len(units), c.name, start, layers, cells, p, stop))
    return Plan(axes, components, tuple(metrics), n_prompts, block, tuple(units))


def edge_axes(
    grid: EdgeGridSpec, shape: ModelShape, seq_len: int, position_names: tuple[str, ...] = ()
) -> Axes:
    """The receivers and senders the patterns select in the model's graph, checked: a
    pattern that matches nothing, or a choice that joins no edge, is refused by key.
    Every position is patched at once; ``pos`` (and the task's named positions) label the
    store's tokens."""
    g = shape.graph
    nodes = {"receiver": receivers(g), "sender": senders(g)}
    chosen = {}
    for dim, key in (("receiver", "grid.receivers"), ("sender", "grid.senders")):
        hits, unmatched = select(nodes[dim], getattr(grid, f"{dim}s"))
        if unmatched:
            raise ConfigError(f"{key}: {unmatched} match no {dim} of this model ({_has(g)})")
        chosen[dim] = tuple(hits)
    if not any(
        connects(nodes["sender"][s], nodes["receiver"][r], g)
        for r in chosen["receiver"] for s in chosen["sender"]
    ):  # fmt: skip
        raise ConfigError(
            "grid.senders, grid.receivers: no chosen receiver reads a chosen sender (a "
            "receiver reads only senders of earlier layers, and a head's output reaches its "
            "own layer's MLP); choose later receivers or earlier senders"
        )
    positions = tuple(range(seq_len))  # all at once: the store's tokens at every position
    if grid.positions is not None:
        positions = _positions_of(grid.positions, seq_len, position_names)
    return Axes((), {"pos": positions, **chosen}, tuple(position_names), g)


def circuit_axes(
    grid: CircuitGridSpec,
    shape: ModelShape,
    seq_len: int,
    position_names: tuple[str, ...] = (),
    existing: tuple[int, ...] = (),
) -> Axes:
    """A circuit sweep's sizes, its ranking checked against the model's graph (a file may
    name an edge the graph does not have). ``existing``: the sizes a store already has, in
    its order; the sizes asked for that it lacks follow them (a store grows at its end, so
    its units keep their numbers)."""
    ranking = grid.ranking
    assert isinstance(ranking, Ranking)
    key = "grid.file" if grid.file is not None else "grid.scores"
    edge_indices(ranking, shape.graph, key)
    total = len(edges(shape.graph))
    thresholds = grid.thresholds or ()
    wanted = circuit_sizes(grid.sizes, ranking, total, "grid.sizes", thresholds)
    sizes = tuple(existing) + tuple(s for s in wanted if s not in existing)
    picked = tuple((threshold_size(ranking, t), t) for t in thresholds)
    coords = {"pos": tuple(range(seq_len)), "size": sizes}
    return Axes((), coords, tuple(position_names), shape.graph, ranking=ranking,
                prune=grid.prune, thresholds=picked)  # fmt: skip


SIZE_COORDS = ("size_edges", "size_dangling", "size_threshold")
"""A circuit store's coordinates along ``size``: the edges each circuit holds, those of its
top K that lie on no path from embed to the logits, the threshold that picked it (NaN:
none)."""


def size_coords(axes: Axes) -> dict[str, np.ndarray]:
    """``SIZE_COORDS`` of a circuit sweep's sizes (the whole graph: every edge, none
    dangling)."""
    ranking, graph = axes.ranking, axes.graph
    assert ranking is not None and graph is not None, "not a circuit sweep"
    total = len(edges(graph))
    picked = dict(reversed(axes.thresholds))  # the first threshold that picked a size
    held, dangling = [], []
    for size in axes.coords["size"]:
        on_path = total if size >= total else len(members(ranking, size, graph, True))
        top = total if size >= total else min(size, len(ranking.edges))
        held.append(on_path if axes.prune else top)
        dangling.append(top - on_path)
    return {
        "size_edges": np.array(held, dtype=np.int64),
        "size_dangling": np.array(dangling, dtype=np.int64),
        "size_threshold": np.array([picked.get(s, np.nan) for s in axes.coords["size"]]),
    }


def _positions_of(
    chosen: tuple[int, ...] | tuple[str, ...], seq_len: int, names: tuple[str, ...]
) -> tuple[int, ...]:
    """``grid.positions`` as position codes: token indices (negative from each prompt's
    end), or the task's named positions."""
    if chosen and isinstance(chosen[0], str):
        return _named("grid.positions", tuple(str(c) for c in chosen), names)
    return _check("grid.positions", tuple(int(c) for c in chosen), seq_len, "pos", True)


def path_axes(
    grid: PathGridSpec, shape: ModelShape, seq_len: int, position_names: tuple[str, ...] = ()
) -> Axes:
    """The receivers (heads' q/k/v inputs, or the logits alone) and the sender layers and
    heads of a path sweep, checked against the model: a sender must come before a receiver."""
    g = shape.graph
    nodes = [r for r in receivers(g) if r.kind != "mlp"]
    assert grid.receivers is not None
    hits, unmatched = select(nodes, grid.receivers)
    if unmatched:
        raise ConfigError(
            f"grid.receivers: {unmatched} match no receiver of a path (heads' q, k or v "
            f"inputs, or logits) of this model ({_has(g)})"
        )
    chosen = [nodes[i] for i in hits]
    if 0 < sum(r.kind == "logits" for r in chosen) < len(chosen):
        raise ConfigError(
            "grid.receivers: logits (the direct path) and heads' inputs cannot share a path "
            "sweep; sweep them one at a time"
        )
    last = max(r.layer for r in chosen)
    layers = _check("grid.layers", grid.layers, shape.n_layers, "layers")
    if grid.layers is None:
        layers = tuple(x for x in layers if x < last)
    if not layers:
        raise ConfigError(
            "grid.receivers: no head comes before these receivers (they are in layer 0); "
            "choose receivers of later layers"
        )
    late = [x for x in layers if x >= last]
    if late:
        raise ConfigError(
            f"grid.layers: sender layers {late} are not before any receiver (the last "
            f"receiver is in layer {last}); a sender's path reaches later layers only"
        )
    heads = _check("grid.heads", grid.heads, shape.n_heads, "heads")
    positions = tuple(range(seq_len))  # every position at once: the store's tokens at each
    if grid.positions is not None:
        positions = _positions_of(grid.positions, seq_len, position_names)
    coords = {"head": heads, "pos": positions}
    return Axes(layers, coords, tuple(position_names), receivers=tuple(r.name for r in chosen))


def _has(g: GraphShape) -> str:
    """What a model's graph has, for a message: its layers, heads and MLPs."""
    kv = f", {g.kv_heads} key/value heads (a3.g0.k)" if g.kv_heads != g.n_heads else ""
    if g.mlp:
        return (
            f"layers 0..{g.n_layers - 1}, heads h0..h{g.n_heads - 1}{kv}, MLPs; receivers "
            "like a1.h0.q, a1.h0.k, m1, logits; senders like embed, a0.h3, m0"
        )
    return (
        f"layers 0..{g.n_layers - 1}, heads h0..h{g.n_heads - 1}{kv}, attention-only: no "
        "MLPs; receivers like a1.h0.q, a1.h0.k, logits; senders like embed, a0.h3"
    )
