"""The patchable components: hook name, and which grid axes one result has.

Kept as data so the planner, the engine and the store agree on one table.
"""

from __future__ import annotations

from dataclasses import dataclass

from sweep.errors import ConfigError


@dataclass(frozen=True, slots=True)
class Component:
    """One row of the component table in DESIGN.md."""

    name: str
    """Name used in config and as the store variable."""
    hook: str
    """Hook name template with ``{layer}``."""
    has_pos: bool
    """Results have a ``pos`` axis (one cell per position)."""
    has_head: bool
    """Results have a ``head`` axis (one cell per head)."""
    act_kind: str
    """How the activation is laid out: ``resid`` [b,pos,d], ``head`` [b,pos,head,d],
    ``pattern`` [b,head,q,k]."""

    def hook_name(self, layer: int) -> str:
        return self.hook.format(layer=layer)

    @property
    def stage(self) -> str:
        """Where in a block the patch lands: the hook's own name (``resid_pre``, ``z``...)."""
        return self.hook.rsplit("hook_", 1)[1]

    @property
    def grid_dims(self) -> tuple[str, ...]:
        """The grid axes after ``layer``, in store order."""
        return tuple(d for d, on in (("pos", self.has_pos), ("head", self.has_head)) if on)


def _resid(name: str, hook: str) -> Component:
    return Component(name, hook, has_pos=True, has_head=False, act_kind="resid")


def _head(name: str, hook: str, by_pos: bool) -> Component:
    return Component(name, hook, has_pos=by_pos, has_head=True, act_kind="head")


COMPONENTS: dict[str, Component] = {
    c.name: c
    for c in [
        _resid("resid_pre", "blocks.{layer}.hook_resid_pre"),
        _resid("resid_mid", "blocks.{layer}.hook_resid_mid"),
        _resid("resid_post", "blocks.{layer}.hook_resid_post"),
        _resid("attn_out", "blocks.{layer}.hook_attn_out"),
        _resid("mlp_out", "blocks.{layer}.hook_mlp_out"),
        *(_head(x, f"blocks.{{layer}}.attn.hook_{x}", by_pos=False) for x in "zqkv"),
        *(_head(f"{x}_by_pos", f"blocks.{{layer}}.attn.hook_{x}", by_pos=True) for x in "zqkv"),
        Component(
            "pattern",
            "blocks.{layer}.attn.hook_pattern",
            has_pos=False,
            has_head=True,
            act_kind="pattern",
        ),
    ]
}


def get_component(name: str) -> Component:
    """Look up a component, or fail with the list of known names."""
    try:
        return COMPONENTS[name]
    except KeyError:
        known = ", ".join(COMPONENTS)
        raise ConfigError(
            f"grid.components: unknown component {name!r}; choose from: {known}"
        ) from None
