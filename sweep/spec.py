"""Frozen, validated value objects: the one definition of every config key and its default.

Each config group option is one frozen dataclass here (or in its plug-in module: tasks and
interventions). ``sweep.config`` derives Hydra's schemas from these classes, so defaults
live in one place; ``__post_init__`` checks values without loading a model, naming the key.
Checks that need the model's shape (layer in range, ...) live in ``sweep.plan``.

Torch-free: the command line fails on a bad config in a fraction of a second.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from sweep.components import Component, get_component
from sweep.errors import ConfigError
from sweep.metrics import METRICS

DTYPES = ("float32", "float16", "bfloat16", "float64")
ENGINES = ("auto", "fast", "hooks")


@dataclass(frozen=True, slots=True)
class Spec:
    """Base of every group's spec: where it lives in the config, what changes results."""

    GROUP: ClassVar[str] = ""
    KIND: ClassVar[str] = ""
    """The group option's kind (``patch``, ``ioi``...): the registry key."""
    RESULTS: ClassVar[tuple[str, ...] | None] = None
    """Fields that change results (None: all). Only these enter the store's fingerprint."""

    def key(self, name: str) -> str:
        return f"{self.GROUP}.{name}"

    def identity(self) -> dict[str, Any]:
        """What of this spec changes results, in a form that compares by meaning."""
        return {f: getattr(self, f) for f in result_fields(type(self))}


def result_fields(cls: type[Spec]) -> list[str]:
    names = [f.name for f in dataclasses.fields(cls)]
    return names if cls.RESULTS is None else [n for n in names if n in cls.RESULTS]


def one_of(key: str, value: Any, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ConfigError(f"{key}: {value!r} is not one of {', '.join(allowed)}")
    return str(value)


def positive(key: str, value: Any) -> int:
    if isinstance(value, bool) or int(value) != value or int(value) <= 0:
        raise ConfigError(f"{key}: must be a positive integer, got {value}")
    return int(value)


def positive_float(key: str, value: float) -> float:
    if not float(value) > 0:
        raise ConfigError(f"{key}: must be a positive number, got {value}")
    return float(value)


def file_digest(key: str, path: str) -> str:
    """Hash of a file's bytes: a task or reference file compares by content, not path."""
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]
    except OSError as e:
        raise ConfigError(f"{key}: cannot read {path}: {e.strerror}") from None


def existing_file(key: str, path: str) -> str:
    p = Path(path).expanduser()
    if not p.is_file():
        what = "a directory, not a file" if p.is_dir() else "no such file"
        raise ConfigError(f"{key}: {what}: {p}")
    return str(p.resolve())


def _set(spec: Spec, name: str, value: Any) -> None:
    object.__setattr__(spec, name, value)


# ---------------------------------------------------------------------------- model


def _tiny_native() -> dict[str, Any]:
    return dict(
        n_layers=2,
        d_model=64,
        n_ctx=128,
        d_head=16,
        n_heads=4,
        d_mlp=256,
        act_fn="gelu_new",
        normalization_type="LN",
        seed=0,
    )


@dataclass(frozen=True, slots=True)
class ModelSpec(Spec):
    """A hub id, a local checkpoint directory, or the shipped ``induction`` model."""

    GROUP = "model"
    KIND = "pretrained"
    RESULTS: ClassVar[tuple[str, ...] | None] = ("name", "compat", "dtype")

    name: str = "induction"
    """Hub id, local checkpoint directory, or ``induction`` (the shipped 2-layer model)."""
    compat: bool = False
    """Call ``enable_compatibility_mode()`` (HookedTransformer-style processed weights)."""
    dtype: str = "float32"
    device: str = "auto"
    """``auto`` picks CUDA when there is one, else CPU. Does not change results' meaning."""

    def __post_init__(self) -> None:
        if not str(self.name):
            raise ConfigError("model.name: empty; give a hub id, a local directory or induction")
        if self.name == "native" and type(self) is ModelSpec:
            raise ConfigError(
                "model.name: native needs the native model's settings; use model=native "
                "(and model.native.KEY=VALUE overrides)"
            )
        one_of("model.dtype", self.dtype, DTYPES)
        d = str(self.device)
        if d != "auto" and not (d == "cpu" or d.startswith(("cuda", "mps"))):
            raise ConfigError(f"model.device: {d!r}; use auto, cpu, cuda or cuda:N")

    def identity(self) -> dict[str, Any]:
        out = Spec.identity(self)
        local = Path(self.name).expanduser()
        if local.is_dir():  # a checkpoint directory, however it is spelled
            out["name"] = str(local.resolve())
        return out


@dataclass(frozen=True, slots=True)
class NativeModelSpec(ModelSpec):
    """Random weights from a TransformerLens config, with a tokenizer trained in memory."""

    KIND = "native"
    RESULTS: ClassVar[tuple[str, ...] | None] = ("name", "compat", "dtype", "native")

    name: str = "native"
    native: dict[str, Any] = field(default_factory=_tiny_native)
    """TransformerLens config; ``d_vocab`` defaults to the tokenizer's size."""

    def __post_init__(self) -> None:
        ModelSpec.__post_init__(self)
        if self.name != "native":
            raise ConfigError(
                f"model.name: {self.name!r} under model=native; use model=hf "
                "(or leave model= at its default) for a hub id or a checkpoint directory"
            )


# ---------------------------------------------------------------------------- grid


def _indices(key: str, values: Any, allow_negative: bool = False) -> tuple[int, ...] | None:
    if values is None:
        return None
    out = tuple(int(v) for v in values)
    if not out:
        raise ConfigError(f"{key}: empty list; leave it out (null) to sweep all")
    if len(set(out)) != len(out):
        raise ConfigError(f"{key}: repeated entries in {list(out)}")
    if not allow_negative and min(out) < 0:
        raise ConfigError(f"{key}: negative index in {list(out)}")
    return out


def _positions(key: str, values: Any) -> tuple[int, ...] | tuple[str, ...] | None:
    """Token indices, or names of the task's named positions; not both in one grid (the
    store's ``pos`` coordinate is one or the other)."""
    if isinstance(values, (str, int)):
        values = [values]
    if values is None or all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return _indices(key, values, allow_negative=True)
    names = tuple(str(v) for v in values)
    if any(not isinstance(v, str) for v in values):
        raise ConfigError(
            f"{key}: {list(values)} mixes token indices and named positions; use one kind "
            "(END is the last token, like -1)"
        )
    if len(set(names)) != len(names):
        raise ConfigError(f"{key}: repeated entries in {list(names)}")
    return names


@dataclass(frozen=True, slots=True)
class GridSpec(Spec):
    GROUP = "grid"

    components: tuple[str, ...] = ("resid_pre", "attn_out", "z")
    """Component names (see the component table); add mlp_out for models with MLPs."""
    layers: tuple[int, ...] | None = None
    """Layers to sweep (null: all)."""
    positions: tuple[Any, ...] | None = None
    """Token positions (null: all). Negative counts from each prompt's own end: -1 is
    each prompt's last token, the one the metric reads. Or the task's named positions
    (IOI: ``[S1, S1+1, IO, S2, END]``), each found in each prompt."""
    heads: tuple[int, ...] | None = None
    """Heads to sweep (null: all)."""
    kv_heads: tuple[int, ...] | None = None
    """Key/value heads to sweep, for k and v of grouped-query models (null: all)."""
    latents: Any = None
    """SAE latents to sweep (``sae_latents`` components): ids, ``top:N`` (each SAE's N
    latents most active on the task's clean prompts; null: ``top:16``) or ``all``."""

    def __post_init__(self) -> None:
        names = tuple(str(n) for n in self.components)
        if not names:
            raise ConfigError("grid.components: empty; name at least one component")
        if len(set(names)) != len(names):
            raise ConfigError(f"grid.components: repeated entries in {list(names)}")
        for n in names:
            get_component(n)
        _set(self, "components", names)
        _set(self, "layers", _indices("grid.layers", self.layers))
        _set(self, "positions", _positions("grid.positions", self.positions))
        _set(self, "heads", _indices("grid.heads", self.heads))
        _set(self, "kv_heads", _indices("grid.kv_heads", self.kv_heads))
        _set(self, "latents", _latents(self.latents))

    @property
    def component_list(self) -> tuple[Component, ...]:
        return tuple(get_component(n) for n in self.components)

    @property
    def has_latents(self) -> bool:
        return any(c.latents for c in self.component_list)

    def identity(self) -> dict[str, Any]:
        out = Spec.identity(self)
        if not self.has_latents:  # a store made before latents existed keeps its fingerprint
            out.pop("latents")
        return out


TOP_LATENTS = 16
"""Latents swept by default: each SAE's most active on the task (d_sae is 16k to 1M)."""


def _latents(value: Any) -> tuple[int, ...] | str:
    """``top:N`` or ``all`` as themselves, or latent ids (checked against d_sae once the
    SAE is read)."""
    say = ("give latent ids ('grid.latents=[12,40]'), top:N (the N most active on the "
           "task's prompts) or all")  # fmt: skip
    if value is None:
        return f"top:{TOP_LATENTS}"
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if isinstance(value, str):
        head, _, n = value.partition(":")
        if value == "all":
            return value
        if head != "top" or not n.isdigit() or int(n) <= 0:
            raise ConfigError(f"grid.latents: {value!r}; {say}")
        return f"top:{int(n)}"
    if not isinstance(value, (list, tuple)) or not value:
        raise ConfigError(f"grid.latents: {value!r}; {say}")
    out = _indices("grid.latents", value)
    assert out is not None
    return out


def _patterns(key: str, values: Any, role: str) -> tuple[str, ...] | None:
    from sweep.edges.graph import well_formed

    if values is None:
        return None
    out = tuple(str(v) for v in ([values] if isinstance(values, str) else values))
    if not out:
        raise ConfigError(f"{key}: empty list; leave it out (null) to sweep all")
    bad = [p for p in out if not well_formed(p, role)]
    if bad:
        like = "embed, a3.h7, m2" if role == "sender" else "a5.h1.q, a5.h1.k, m4, logits"
        raise ConfigError(
            f"{key}: {bad} name no {role}; {role}s are named like {like}, and globs such "
            "as a3.* or *.k select several"
        )
    return out


@dataclass(frozen=True, slots=True)
class EdgeGridSpec(Spec):
    """``grid=edges``: every edge (sender -> receiver) of the model's graph, or those the
    patterns select, patched one edge at a time at every position."""

    GROUP = "grid"
    KIND = "edges"

    senders: tuple[str, ...] | None = None
    """Sender names or globs (``embed``, ``a3.h7``, ``m2``, ``a3.*``); null: all."""
    receivers: tuple[str, ...] | None = None
    """Receiver names or globs (``a5.h1.q``, ``*.k``, ``m4``, ``logits``); null: all."""
    positions: tuple[Any, ...] | None = None
    """null: every position at once (the receiver reads the sender's change everywhere).
    Token positions (negative from each prompt's end) or the task's named positions: one
    position at a time, the receiver reading the change at that position only (a ``pos``
    dim in the store, as for nodes)."""

    def __post_init__(self) -> None:
        _set(self, "senders", _patterns("grid.senders", self.senders, "sender"))
        _set(self, "receivers", _patterns("grid.receivers", self.receivers, "receiver"))
        _set(self, "positions", _positions("grid.positions", self.positions))


@dataclass(frozen=True, slots=True)
class PathGridSpec(Spec):
    """``grid=paths``: path patching (the IOI paper's recipe) of each sender head into a
    fixed set of receivers, as a layer x head map."""

    GROUP = "grid"
    KIND = "paths"

    receivers: tuple[str, ...] | None = None
    """Heads' q, k or v inputs (``a9.h6.q``, ``a9.*.q``), or ``logits`` (the direct path)."""
    layers: tuple[int, ...] | None = None
    """Sender layers (null: every layer before the last receiver's)."""
    heads: tuple[int, ...] | None = None
    """Sender heads (null: all)."""
    positions: tuple[Any, ...] | None = None
    """null: the sender's output at every position. Token positions (negative from each
    prompt's end) or the task's named positions (``[END]``): one position at a time, the
    sender's output patched at that token only (a ``pos`` dim in the store)."""

    def __post_init__(self) -> None:
        _set(self, "positions", _positions("grid.positions", self.positions))
        receivers = _patterns("grid.receivers", self.receivers, "receiver")
        if receivers is None:
            raise ConfigError(
                "grid.receivers: path patching needs receivers: heads' q, k or v inputs "
                "(grid.receivers=[a9.h6.q,a9.h9.q]) or the logits (grid.receivers=[logits])"
            )
        _set(self, "receivers", receivers)
        _set(self, "layers", _indices("grid.layers", self.layers))
        _set(self, "heads", _indices("grid.heads", self.heads))


INTERNAL = {"internal": True}
"""Field metadata: filled by the spec itself, not a config key (``sweep.config`` skips it)."""


RANK_ORDERS = ("abs", "signed")


@dataclass(frozen=True, slots=True)
class CircuitGridSpec(Spec):
    """``grid=circuit``: the clean prompts with every edge outside a circuit ablated, per
    circuit size: the top ``size`` edges of a ranking (``sweep.edges.ranking``)."""

    GROUP = "grid"
    KIND = "circuit"

    scores: str | None = None
    """A finished edge store (a directory or URL) whose edges rank, by their mean effect:
    exact (grid=edges) or estimated (intervention=eap)."""
    file: str | None = None
    """Or a text file of edges, one per line, best first: ``a0.h1 -> a1.h0.k``."""
    sizes: tuple[float, ...] | None = None
    """Circuit sizes: edge counts (10, 30), or fractions of the graph's edges (0.01, 0.1);
    null: 1, 3, 10, 30... below the ranking's length. 0 (every edge ablated), the whole
    graph and a file's whole list are always added. Sizes given later add to a store."""
    thresholds: tuple[float, ...] | None = None
    """Circuits of the edges whose score reaches each threshold (|mean effect| on the rank
    metric, in its units; ``rank_by=signed``: the effect signed toward the behaviour)."""
    rank_by: str = "abs"
    """``abs``: edges by |mean effect|; ``signed``: those that carry the behaviour most
    first (EAP-IG's ``absolute=False``), so edges working against it come last."""
    prune: bool = True
    """Leave out the edges of a top K that lie on no path from embed to the logits
    through it (they cannot move the metric); the store counts them per size."""
    rank_metric: str | None = None
    """The scores store's metric that ranks (null: its first)."""
    ranking: Any = field(default=None, metadata=INTERNAL)
    """The ``Ranking`` read from ``scores`` or ``file``: not a config key; the spec reads
    nothing, ``sweep.results.faithfulness.with_ranking`` reads it (``sweep.config.to_spec``)."""
    made_on: dict[str, Any] = field(default_factory=dict, metadata=INTERNAL)
    """The scores store's fingerprint: the model and task its scores are of."""

    def __post_init__(self) -> None:
        if (self.scores is None) == (self.file is None):
            raise ConfigError(
                "grid.scores, grid.file: give one: grid.scores=STORE (an edge store whose "
                "scores rank the edges) or grid.file=FILE (edges one per line, best first)"
            )
        one_of("grid.rank_by", self.rank_by, RANK_ORDERS)
        if self.sizes is not None:
            if not len(self.sizes):
                raise ConfigError("grid.sizes: empty; leave it out for the default sizes")
            sizes = tuple(float(v) for v in self.sizes)
            if min(sizes) <= 0:
                why = "holds 0" if 0 in sizes else "holds a negative size"
                raise ConfigError(
                    f"grid.sizes: {[_plain(v) for v in sizes]} {why}; the empty circuit is "
                    "always stored, give sizes of 1 edge or more (or fractions such as 0.01)"
                )
            _set(self, "sizes", tuple(sorted(set(sizes))))
        if self.thresholds is not None:
            _set(self, "thresholds", tuple(float(t) for t in self.thresholds))
        if self.file is not None and (self.rank_by != "abs" or self.thresholds):
            raise ConfigError(
                "grid.rank_by, grid.thresholds: a file's edges have no scores; its lines are "
                "the ranking (best first): use grid.sizes"
            )

    def identity(self) -> dict[str, Any]:
        """The ranking's order and the pruning: not where it was read from, nor the sizes
        (a store adds the sizes a later run asks for)."""
        return {"ranking": self.ranking.digest(), "prune": self.prune}


def _plain(v: float) -> float | int:
    return int(v) if v == int(v) else v


GraphGrid = (EdgeGridSpec, PathGridSpec, CircuitGridSpec)
"""Grids over the graph of senders and receivers (``sweep.edges``): patched on the fast
engine, from the other run."""


# ---------------------------------------------------------------------------- metric


@dataclass(frozen=True, slots=True)
class MetricSpec(Spec):
    GROUP = "metric"

    names: tuple[str, ...] = ("logit_diff",)
    """Any of logit_diff, logit_gap, prob, prob_diff, logprob, loss, kl (the store's
    ``metric`` axis)."""
    custom: tuple[str, ...] = ()
    """Metrics of your own, ``module:function``: ``f(logits, answer, wrong, clean_logits)``
    of last-position logits [prompt, vocab] and token ids [prompt] ([prompt, T, vocab] and
    [prompt, T] for a multi-token answer), one value per prompt (differentiable for AtP and
    EAP); stored under the function's name after ``names``."""
    sources: dict[str, str] = field(default_factory=dict, metadata=INTERNAL)
    """Each custom metric's source code, hashed: a store resumes only with the same code."""

    def __post_init__(self) -> None:
        out = tuple(str(n) for n in self.names)
        refs = tuple(str(r) for r in self.custom)
        _set(self, "custom", refs)
        if refs:
            self._load_custom(out)
        if not out and not refs:
            raise ConfigError("metric.names: empty; name at least one metric")
        for n in out:
            if n not in METRICS:
                raise ConfigError(
                    f"metric.names: unknown metric {n!r}; choose from: {', '.join(METRICS)}"
                )
        if len(set(out)) != len(out):
            raise ConfigError(f"metric.names: repeated entries in {list(out)}")
        _set(self, "names", out)

    def _load_custom(self, names: tuple[str, ...]) -> None:
        import inspect

        from sweep.metrics import custom

        sources = {}
        for ref in self.custom:
            name, fn = custom(ref)
            if name in METRICS or name in names or name in sources:
                raise ConfigError(
                    f"metric.custom: {ref} is named {name!r} like another metric; rename "
                    "the function"
                )
            try:
                code = inspect.getsource(fn)
            except (OSError, TypeError):
                code = ref
            sources[name] = hashlib.sha256(code.encode()).hexdigest()[:16]
        _set(self, "sources", sources)

    @property
    def all_names(self) -> tuple[str, ...]:
        """The store's ``metric`` axis: the built-in names, then the custom ones."""
        return (*self.names, *self.sources)

    def identity(self) -> dict[str, Any]:
        out: dict[str, Any] = {"names": self.names}
        if self.custom:  # a store made before custom metrics keeps its fingerprint
            out["custom"] = self.sources
        return out


# ---------------------------------------------------------------------------- plug-in bases


@dataclass(frozen=True, slots=True)
class TaskSpec(Spec):
    """Base of the task kinds (``sweep.tasks``)."""

    GROUP = "task"
    kind: str = ""

    def position_names(self) -> tuple[str, ...]:
        """The named positions its prompts carry (read without a model or tokenizer), so
        a ``grid.positions`` name the task lacks is refused before a model loads."""
        return ()


@dataclass(frozen=True, slots=True)
class GeneratedTaskSpec(TaskSpec):
    """A task generated offline (IOI, induction, greater-than...): ``n_prompts`` prompts
    drawn with ``seed``, carrying the kind's ``NAMED`` positions."""

    NAMED: ClassVar[tuple[str, ...]] = ()
    n_prompts: int = 16
    seed: int = 0

    def __post_init__(self) -> None:
        positive("task.n_prompts", self.n_prompts)

    def position_names(self) -> tuple[str, ...]:
        return self.NAMED


@dataclass(frozen=True, slots=True)
class InterventionSpec(Spec):
    """Base of the intervention kinds (``sweep.interventions``)."""

    GROUP = "intervention"
    RESULTS = None
    kind: str = ""

    @property
    def base_run(self) -> str:
        """The run being changed, ``clean`` or ``corrupted`` (the store records it): read
        from the config, so the driver need not build the intervention (nor load torch)."""
        return "clean"


# ---------------------------------------------------------------------------- sae


@dataclass(frozen=True, slots=True)
class SaeSpec(Spec):
    """Sparse autoencoders in SAELens's format, whose latents ``sae_latents`` sweeps."""

    GROUP = "sae"

    path: str | None = None
    """A folder SAELens saved (cfg.json, sae_weights.safetensors)."""
    paths: tuple[str, ...] | None = None
    """Several such folders, one SAE per layer, all at the same hook of a block."""
    configs: tuple[Any, ...] = field(default=(), metadata=INTERNAL)
    """Each folder's ``sweep.models.sae.SaeConfig``, read and checked (no tensor loaded)."""

    def __post_init__(self) -> None:
        from sweep.models.sae import read_config

        if self.path is not None and self.paths is not None:
            raise ConfigError("sae.path, sae.paths: give one (sae.paths for several SAEs)")
        folders = [self.path] if self.path is not None else list(self.paths or ())
        configs = tuple(read_config(str(f)) for f in folders)
        stages = sorted({c.stage for c in configs})
        if len(stages) > 1:
            raise ConfigError(
                f"sae.paths: the SAEs read {', '.join(stages)}; sweep the SAEs of one hook of "
                "a block at a time"
            )
        widths = sorted({c.d_sae for c in configs})
        if len(widths) > 1:
            raise ConfigError(
                f"sae.paths: the SAEs have {' and '.join(map(str, widths))} latents (d_sae); "
                "sweep SAEs of one width at a time (a latent id names the same column)"
            )
        layers = [c.layer for c in configs]
        if len(set(layers)) != len(layers):
            raise ConfigError(f"sae.paths: two SAEs read layer {max(layers, key=layers.count)}; "
                              "give one SAE per layer")  # fmt: skip
        _set(self, "configs", tuple(sorted(configs, key=lambda c: c.layer)))

    def identity(self) -> dict[str, Any]:
        """Each SAE's config and weights by content, not where they lie."""
        return {"saes": [c.digest() for c in self.configs]} if self.configs else {}


# ---------------------------------------------------------------------------- runner and store


@dataclass(frozen=True, slots=True)
class LocalRunnerSpec(Spec):
    """One worker in this process."""

    GROUP = "runner"
    KIND = "local"
    RESULTS = ()

    kind: str = "local"
    memory_mb: float = 1024.0
    """Working memory of one batched patched forward; cells per forward are sized to it."""
    engine: str = "auto"
    """``fast`` (suffix forward), ``hooks`` (the model's own hooked forward) or ``auto``."""
    progress: bool = True

    def __post_init__(self) -> None:
        _set(self, "memory_mb", positive_float("runner.memory_mb", self.memory_mb))
        one_of("runner.engine", self.engine, ENGINES)


@dataclass(frozen=True, slots=True)
class RayRunnerSpec(LocalRunnerSpec):
    """Workers as Ray actors, one per GPU."""

    KIND = "ray"

    kind: str = "ray"
    address: str | None = None
    """Ray to join (``auto``, ``HOST:PORT``, ``ray://HOST:PORT``); null starts a local Ray."""
    num_workers: int | None = None
    """Workers (each loads the model once); default one per GPU, or 1 on a CPU-only cluster."""
    in_flight_per_worker: int = 2
    """Jobs queued on each worker, so the next one starts as soon as one finishes."""
    max_worker_restarts: int = 3
    """How often each worker may die (killed, out of memory) and be replaced."""
    connect_timeout_s: float = 5.0
    min_nodes: int | None = None
    """Wait for this many live nodes before placing workers (SLURM: the job's nodes, which
    join while the driver starts); null: place on the nodes there are."""
    node_timeout_s: float = 300.0
    """How long to wait for ``min_nodes``."""

    def __post_init__(self) -> None:
        LocalRunnerSpec.__post_init__(self)
        if self.min_nodes is not None:
            positive("runner.min_nodes", self.min_nodes)
        _set(self, "node_timeout_s", positive_float("runner.node_timeout_s", self.node_timeout_s))
        if self.address in ("", None):
            _set(self, "address", None)
        if self.num_workers is not None:
            positive("runner.num_workers", self.num_workers)
        positive("runner.in_flight_per_worker", self.in_flight_per_worker)
        if int(self.max_worker_restarts) < 0:
            raise ConfigError("runner.max_worker_restarts: must be 0 or more")


@dataclass(frozen=True, slots=True)
class StoreSpec(Spec):
    GROUP = "store"
    RESULTS = ("chunk_kb",)

    path: str = "outputs/sweep.zarr"
    """A local directory or an fsspec URL (s3://, gs://, memory://...)."""
    chunk_kb: int = 1024
    """Target size of one zarr chunk (= one work unit); layers are grouped up to it."""
    prompt_block: int | None = None
    """Prompts per work unit and per cached block; null: as many as ``runner.memory_mb``
    holds. A store keeps the block size it was made with."""
    overwrite: bool = False
    """Delete a patchsweep store written by a different config instead of refusing it.
    Only ever deletes a patchsweep store that no live driver holds."""
    plots: bool = True
    """After a command-line sweep, draw heatmaps (PNG) and an HTML page into STORE.plots."""
    lease_timeout_s: float = 120.0
    """A lease not renewed for this long (its driver on another host is gone) is taken over."""

    def __post_init__(self) -> None:
        if not str(self.path).strip():
            raise ConfigError("store.path: empty; give a directory or a URL")
        positive("store.chunk_kb", self.chunk_kb)
        if self.prompt_block is not None:
            positive("store.prompt_block", self.prompt_block)
        positive_float("store.lease_timeout_s", self.lease_timeout_s)

    @property
    def chunk_bytes(self) -> int:
        return 1024 * int(self.chunk_kb)


# ---------------------------------------------------------------------------- the whole sweep


@dataclass(frozen=True, slots=True)
class AnalysisSpec(Spec):
    """What the command line's report and pictures show; never what is stored."""

    GROUP = "analysis"
    RESULTS = ()

    min_prompts: int | None = None
    """Cells fewer prompts reach are left out of top cells and blank in the pictures
    (null: half the prompts)."""

    def __post_init__(self) -> None:
        if self.min_prompts is not None:
            positive("analysis.min_prompts", self.min_prompts)


@dataclass(frozen=True, slots=True)
class SweepSpec:
    """Everything a sweep needs, validated; built once by ``sweep.config.to_spec``."""

    model: ModelSpec
    task: TaskSpec
    grid: GridSpec | EdgeGridSpec | PathGridSpec | CircuitGridSpec
    intervention: InterventionSpec
    metric: MetricSpec
    runner: LocalRunnerSpec
    store: StoreSpec
    analysis: AnalysisSpec = field(default_factory=lambda: AnalysisSpec())
    sae: SaeSpec = field(default_factory=lambda: SaeSpec())

    def __post_init__(self) -> None:
        if isinstance(self.grid, GraphGrid):
            self._check_graph()
        if isinstance(self.grid, GridSpec) and self.grid.has_latents:
            self._check_latents()
        chosen = getattr(self.grid, "positions", None) or ()
        names = self.task.position_names()
        unknown = [p for p in chosen if isinstance(p, str) and p not in names]
        if unknown:
            has = f"it names {', '.join(names)}" if names else "it names none"
            raise ConfigError(
                f"grid.positions: {unknown} are not named positions of task={self.task.kind} "
                f'({has}); give token indices, or name positions in a task file ("positions": '
                '{"IO": 4} on each line)'
            )
        iv = self.intervention
        if iv.kind == "eap" and not isinstance(self.grid, EdgeGridSpec):
            raise ConfigError(
                "intervention=eap: scores the edges of an edge sweep; add grid=edges (to "
                "estimate cells, use intervention=atp)"
            )
        if (
            "kl" in self.metric.names
            and iv.kind in ("atp", "eap")
            and getattr(iv, "steps", 1) == 1
            and getattr(iv, "direction", "") == ("noise")
        ):
            raise ConfigError(
                f"metric.names: kl with intervention={iv.kind} direction=noise linearises at "
                "the clean run, where KL from the clean run and its gradient are 0, so every "
                "estimate would be 0; use another metric or direction=denoise"
            )

    def _check_latents(self) -> None:
        assert isinstance(self.grid, GridSpec)
        if not self.sae.configs:
            raise ConfigError(
                "grid.components: sae_latents needs an SAE: give sae.path=DIR (a folder "
                "SAELens saved)"
            )
        from sweep.models.sae import check_fits, model_size

        size = model_size(self.model)  # None: a hub id, checked once it has loaded
        if size is not None:
            for cfg in self.sae.configs:
                check_fits(cfg, *size)
        ids = self.grid.latents
        widest = max(c.d_sae for c in self.sae.configs)
        if isinstance(ids, tuple) and max(ids) >= widest:
            raise ConfigError(
                f"grid.latents: {[i for i in ids if i >= widest]} out of range; the SAE has "
                f"{widest} latents (0..{widest - 1})"
            )
        layers = [c.layer for c in self.sae.configs]
        chosen = self.grid.layers
        if chosen is not None and set(chosen) - set(layers):
            raise ConfigError(
                f"grid.layers: {sorted(set(chosen) - set(layers))} have no SAE (sae.path "
                f"reads layers {layers}); leave grid.layers out to sweep the SAEs' layers"
            )

    def _check_graph(self) -> None:
        iv, grid = self.intervention, f"grid={self.grid.KIND}"
        if isinstance(self.grid, CircuitGridSpec):
            self._check_circuit()
        edges = ("patch", "zero", "mean", "resample", "eap")
        allowed = edges if grid == "grid=edges" else ("patch",)
        if iv.kind not in allowed and grid != "grid=circuit":
            raise ConfigError(
                f"intervention={iv.kind}: {grid} takes intervention={', '.join(allowed)} "
                "(an edge's source: the other run's sender output, or zero, its mean or "
                "another prompt's; eap estimates every edge from gradients)"
                if grid == "grid=edges"
                else f"intervention={iv.kind}: {grid} patches from the other run only (the "
                "paper's recipe); use intervention=patch (direction=denoise or noise)"
            )
        if self.runner.engine == "hooks":
            raise ConfigError(
                f"runner.engine: hooks cannot patch edges or paths; {grid} runs on the fast "
                "engine (runner.engine=auto or fast)"
            )

    def _check_circuit(self) -> None:
        """A circuit runs the clean prompts, edges outside it ablated: from the corrupted
        run (patch, direction=noise) or by zero, mean or resample ablation; on the model
        its scores were made on (its prompts may be others: held out)."""
        iv = self.intervention
        ablations = ("zero", "mean", "resample")
        direction = getattr(iv, "direction", None)
        if iv.kind not in ("patch", *ablations) or direction not in (None, "noise"):
            shown = f" intervention.direction={direction}" if direction else ""
            raise ConfigError(
                f"intervention={iv.kind}{shown}: a circuit runs the clean prompts with every "
                "edge outside it ablated; use intervention=patch intervention.direction=noise "
                "(the corrupted run's outputs) or intervention=zero, mean or resample"
            )
        assert isinstance(self.grid, CircuitGridSpec)
        have = self.grid.made_on.get("model")
        want = json.loads(json.dumps(self.model.identity(), default=list))
        if have is not None and have != want:
            raise ConfigError(
                f"grid.scores: {self.grid.scores} scores the edges of another model ({have}; "
                f"this run: {want}); a circuit runs on the model its scores are of: leave "
                "model.* as the store has it (python -m sweep.circuit STORE takes it from "
                "there; task.* may differ, to measure a circuit on held-out prompts)"
            )

    @property
    def metrics(self) -> tuple[str, ...]:
        return self.metric.all_names


GROUPS = ("model", "task", "grid", "intervention", "metric", "runner", "store", "analysis", "sae")


def fingerprint(spec: SweepSpec) -> dict[str, Any]:
    """Everything that changes results, compared by meaning when a store is resumed:
    the task as read (not its path), the model's identity, dtype, grid, intervention,
    metrics and chunking; not the device, the runner or where the store is."""
    out = {g: getattr(spec, g).identity() for g in GROUPS}
    if not (isinstance(spec.grid, GridSpec) and spec.grid.has_latents):
        out.pop("sae")  # SAEs given to a sweep of no latents change nothing
    out = {g: v for g, v in out.items() if v}
    return json.loads(json.dumps(out, sort_keys=True, default=list))
