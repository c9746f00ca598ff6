"""The patchable components, as data: hook, where in a block, activation layout, grid dims.

One table that the planner, the engine, the interventions and the store all read. A new
grid axis (a key/value head, a neuron) is a new layout axis and a new dim here; the patch
and estimate code in ``sweep.engine.cells`` is written over named axes, not per component.
Torch-free, so the planner and the results side can import it.
"""

from __future__ import annotations

from dataclasses import dataclass

from sweep.errors import ConfigError


@dataclass(frozen=True, slots=True)
class Layout:
    """How one activation is laid out after its batch (prompt) axis."""

    name: str
    axes: tuple[str, ...]
    """Axis names in order, e.g. ``("pos", "head", "d_head")``."""
    query_axis: str
    """The token-position axis a position-wise mean runs along (``pos``, or ``q``)."""
    token_axes: tuple[str, ...]
    """Axes that index token positions (a shorter prompt block has fewer of them)."""


RESID = Layout("resid", ("pos", "d_model"), "pos", ("pos",))
HEADS = Layout("heads", ("pos", "head", "d_head"), "pos", ("pos",))
PATTERN = Layout("pattern", ("head", "q", "k"), "q", ("q", "k"))
KV_HEADS = Layout("kv_heads", ("pos", "kv_head", "d_head"), "pos", ("pos",))
"""Keys and values of a grouped-query model: one per key/value head."""
LATENTS = Layout("latents", ("pos", "latent"), "pos", ("pos",))
"""A sparse autoencoder's latents at the hook it reads (``sweep.models.sae``)."""
SAE_SUFFIX = ".sae_latents"
"""A latents component's hook is its SAE's hook and this: a name the worker's cached runs
fill by encoding the activation there, and no hook of the model."""


@dataclass(frozen=True, slots=True)
class Component:
    """One row of the component table in DESIGN.md."""

    name: str
    """Name used in config and as the store variable."""
    hook: str
    """Hook name template with ``{layer}``."""
    layout: Layout
    dims: tuple[str, ...]
    """Grid dims after ``layer``, in store order; each is an axis of ``layout``, patched
    one index at a time. Axes that are not dims are patched whole (``z``: every position)."""

    def __post_init__(self) -> None:
        order = [a for a in self.layout.axes if a in self.dims]
        assert list(self.dims) == order, f"{self.name}: dims must follow the layout's axes"

    @property
    def lead(self) -> str:
        """The store dim its units are blocks of (an edge sweep's are receivers)."""
        return "layer"

    def hook_name(self, layer: int) -> str:
        return self.hook.format(layer=layer)

    @property
    def stage(self) -> str:
        """Where in a block the patch lands: the hook's own name (``resid_pre``, ``z``...);
        a latents component's, its SAE's hook."""
        return self.hook.removesuffix(SAE_SUFFIX).rsplit("hook_", 1)[1]

    @property
    def latents(self) -> bool:
        """An SAE's latents: patched through its decoder at ``model_hook``."""
        return self.layout is LATENTS

    def model_hook(self, layer: int) -> str:
        """The model's hook the patch lands on (a latents component's SAE reads there)."""
        return self.hook_name(layer).removesuffix(SAE_SUFFIX)

    def has(self, dim: str) -> bool:
        return dim in self.dims


def _resid(name: str, hook: str) -> Component:
    return Component(name, hook, RESID, ("pos",))


def _heads(name: str, by_pos: bool) -> Component:
    hook = f"blocks.{{layer}}.attn.hook_{name[0]}"
    return Component(name, hook, HEADS, ("pos", "head") if by_pos else ("head",))


COMPONENTS: dict[str, Component] = {
    c.name: c
    for c in [
        _resid("resid_pre", "blocks.{layer}.hook_resid_pre"),
        _resid("resid_mid", "blocks.{layer}.hook_resid_mid"),
        _resid("resid_post", "blocks.{layer}.hook_resid_post"),
        _resid("attn_out", "blocks.{layer}.hook_attn_out"),
        _resid("mlp_out", "blocks.{layer}.hook_mlp_out"),
        *(_heads(x, by_pos=False) for x in "zqkv"),
        *(_heads(f"{x}_by_pos", by_pos=True) for x in "zqkv"),
        Component("pattern", "blocks.{layer}.attn.hook_pattern", PATTERN, ("head",)),
    ]
}
"""The model's own activations."""

SAE_COMPONENTS: dict[str, Component] = {
    c.name: c
    for c in [
        Component("sae_latents", "blocks.{layer}.hook_resid_pre" + SAE_SUFFIX, LATENTS,
                  ("latent",)),
        Component("sae_latents_by_pos", "blocks.{layer}.hook_resid_pre" + SAE_SUFFIX, LATENTS,
                  ("pos", "latent")),
    ]
}  # fmt: skip
"""A sparse autoencoder's latents (``sae.path``): the hook here is a placeholder, which
``for_model`` replaces with the SAE's."""


@dataclass(frozen=True, slots=True)
class Dim:
    """A grid dim after ``layer``: its store coordinate, the grid key restricting it, and
    what its full range is (a ``ModelShape`` attribute, or the task's ``seq_len``)."""

    name: str
    key: str
    """The ``grid`` field that restricts it (null: the full range)."""
    size_of: str
    relative: bool = False
    """Negative values count from each prompt's own end (positions)."""


DIM_TABLE = (
    Dim("pos", key="positions", size_of="seq_len", relative=True),
    Dim("head", key="heads", size_of="n_heads"),
    Dim("kv_head", key="kv_heads", size_of="n_kv_heads"),
    Dim("latent", key="latents", size_of="n_latents"),
)
DIMS = tuple(d.name for d in DIM_TABLE)
"""Every grid dim after ``layer``, in store order (coordinates of the store)."""


def for_model(c: Component, n_heads: int, n_kv_heads: int, sae_stage: str = "") -> Component:
    """``c`` as a model lays it out: the keys and values of a grouped-query model have one
    value per key/value head, so ``k``, ``v``, ``k_by_pos`` and ``v_by_pos`` patch along a
    ``kv_head`` dim there (TransformerLens' own functions do the same); latents are at
    the SAEs' hook (``sae_stage``: ``hook_resid_post``...)."""
    if c.latents and sae_stage:
        return Component(c.name, f"blocks.{{layer}}.{sae_stage}{SAE_SUFFIX}", c.layout, c.dims)
    if c.stage in ("k", "v") and n_kv_heads != n_heads:
        dims = tuple("kv_head" if d == "head" else d for d in c.dims)
        return Component(c.name, c.hook, KV_HEADS, dims)
    return c


def get_component(name: str) -> Component:
    """Look up a component, or fail with the list of known names."""
    try:
        return COMPONENTS[name] if name in COMPONENTS else SAE_COMPONENTS[name]
    except KeyError:
        known = ", ".join([*COMPONENTS, *SAE_COMPONENTS])
        raise ConfigError(
            f"grid.components: unknown component {name!r}; choose from: {known}"
        ) from None
