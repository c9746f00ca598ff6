"""What a picture of one store variable shows: a 2-D map of values with labelled axes.

One computation feeds every drawing (the PNGs, the plotly figures, the HTML page), so a map
reads the same wherever it is drawn. A map is one metric of one component or edge variable,
in one view: the mean over prompts, one prompt, or the spread (std) over prompts; and in
one unit: the intervention's own scale (``scaled``), the effect in metric units, or the
raw value. Torch-free and plot-library-free.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import xarray as xr

from sweep.results.analysis import (
    Scale,
    check_metric,
    components,
    default_min_prompts,
    edge_variables,
    effect,
    gap_warning,
    reached,
    scale,
    scaled,
)

UNITS = ("scaled", "effect", "value")
"""``scaled``: the intervention's own scale (fraction restored or destroyed); ``effect``:
the value minus each prompt's base-run baseline, in the metric's units; ``value``: the
metric itself with the cell patched."""


@dataclass(frozen=True)
class Heatmap:
    """What one picture shows: values [rows, columns] with labelled axes."""

    component: str
    metric: str
    values: np.ndarray
    row_labels: list[str]
    col_labels: list[str]
    row_title: str
    col_title: str
    blank: str = ""
    """Which cells are left blank, and why (cells few prompts reach); '' when none are."""
    scale: Scale = Scale("restored", "patch denoise")
    warning: str = ""
    """A tiny or inverted clean-corrupted gap (``gap_warning``); '' when none."""
    view: str = ""
    """Which prompts the values speak for (``mean over ...``, ``prompt 3``); '' unsaid."""
    unit: str = "scaled"
    """One of ``UNITS``."""
    row_hover: list[str] = field(default_factory=list)
    """Each row in words (``layer 1, head 3``); the row labels when empty."""
    col_hover: list[str] = field(default_factory=list)
    """Each column in words, a position with its clean and corrupted token."""
    subject: str = ""
    """The variable as titles name it (path patching: ``paths into a1.h1.k, ...``); ''
    for its name."""

    @property
    def title(self) -> str:
        view = f", {self.view}" if self.view else ""
        return f"{self.headline}{view}"

    @property
    def headline(self) -> str:
        """The title without the prompts it speaks for."""
        if self.unit == "scaled":
            what = f"{self.scale.short} by {self.scale.intervention}"
        elif self.unit == "effect":
            what = f"effect of {self.scale.intervention} (value - {self.base} baseline)"
        else:
            what = f"value with {self.scale.intervention}"
        estimate = " (estimate)" if self.scale.intervention.startswith(("AtP", "EAP")) else ""
        return f"{self.subject or self.component}: {self.metric}, {what}{estimate}"

    @property
    def base(self) -> str:
        return "corrupted" if self.scale.kind == "restored" else "clean"

    @property
    def bar(self) -> str:
        """The colour bar's label."""
        spread = "std of " if self.view.startswith("std") else ""
        if self.unit == "scaled":
            return spread + self.scale.bar
        if self.unit == "effect":
            return f"{spread}effect on {self.metric}\n(value - {self.base} baseline)"
        return f"{spread}{self.metric}"

    @property
    def diverging(self) -> bool:
        """Signed values around 0 (a diverging colour scale); a spread is never negative."""
        return not self.view.startswith("std")

    @property
    def rows_in_words(self) -> list[str]:
        return self.row_hover or self.row_labels

    @property
    def cols_in_words(self) -> list[str]:
        return self.col_hover or self.col_labels


def variables(ds: xr.Dataset) -> list[str]:
    """What can be drawn: the store's components, then its edge variables."""
    return components(ds) + edge_variables(ds)


def check_variable(ds: xr.Dataset, name: str) -> str:
    known = variables(ds)
    if name not in known:
        raise ValueError(f"component {name!r} is not in this store; it has: {', '.join(known)}")
    return name


def check_prompt(ds: xr.Dataset, prompt: int | None) -> int | None:
    n = int(ds.sizes["prompt"])
    if prompt is not None and not 0 <= int(prompt) < n:
        raise ValueError(
            f"prompt {prompt} is out of range: this store has {n} prompts (0..{n - 1})"
        )
    return None if prompt is None else int(prompt)


def check_finished(ds: xr.Dataset, store: str = "the store") -> None:
    """One line when no cell of the store has a value yet (nothing to draw), or when it
    holds circuits (drawn as faithfulness curves)."""
    if "circuit" in ds.data_vars and "size" in ds["circuit"].dims:
        raise ValueError(
            "a circuit store is drawn as a faithfulness curve, not a heatmap: "
            "sweep.figures.faithfulness(STORE) or ds.patchsweep.faithfulness(); python -m "
            "sweep.plot STORE draws the curve and the circuit"
        )
    if not any(bool(ds[n].notnull().any()) for n in variables(ds)):
        raise ValueError(
            f"{store} has no finished cells yet: run (or resume) its sweep, and see "
            f"python -m sweep.status {store}"
        )


UNIT_DIMS = {"head": ("H", "head"), "kv_head": ("KV", "key/value head"), "latent": ("F", "latent")}
"""The dims a map's rows or columns count one by one: how labels name them."""


def heatmap(
    ds: xr.Dataset,
    name: str,
    metric: str | None = None,
    min_prompts: int | None = None,
    *,
    prompt: int | None = None,
    spread: bool = False,
    unit: str = "scaled",
) -> Heatmap:
    """``name`` as a 2-D map. By default the mean over the prompts that reach each cell on
    the intervention's own scale; cells that fewer than ``min_prompts`` prompts reach
    (default: half) are blank. ``prompt=i``: that prompt's own values (its tokens label the
    positions); ``spread=True``: the standard deviation over prompts; ``unit``: one of
    ``UNITS``."""
    metric = check_metric(ds, metric)
    check_variable(ds, name)
    prompt = check_prompt(ds, prompt)
    if unit not in UNITS:
        raise ValueError(f"unit {unit!r} is not one of {', '.join(UNITS)}")
    if prompt is not None and spread:
        raise ValueError("choose one prompt or the spread over prompts, not both")
    values = _values(ds, name, metric, unit, prompt, spread)
    total = int(ds.sizes["prompt"])
    blank = ""
    if prompt is None:
        need = default_min_prompts(ds) if min_prompts is None else int(min_prompts)
        n = reached(ds, name)
        few = int(((n > 0) & (n < need)).sum())
        values = values.where(n >= need)
        blank = f"{few} cells that fewer than {need} of the {total} prompts reach" if few else ""
        what = "std" if spread else "mean"
        view = f"{what} over the prompts that reach each cell (of {total})"
    else:
        view = f"prompt {prompt}"
    common: dict[str, Any] = dict(
        blank=blank, scale=scale(ds), warning=gap_warning(ds, metric), view=view, unit=unit,
        subject=subject(ds, name),
    )  # fmt: skip
    if "receiver" in values.dims:  # an edge sweep: pairs that are not edges stay blank
        rows, cols = ([str(x) for x in ds[d].values] for d in ("receiver", "sender"))
        col_title, col_hover = "sender", [f"sender {c}" for c in cols]
        if "pos" in values.dims:  # one position at a time: a column per sender and position
            tokens, words, _ = _position_labels(ds, prompt)
            col_hover = [f"sender {c} at {w}" for c in cols for w in words]
            cols = [f"{c} @{t}" for c in cols for t in tokens]
            col_title = "sender @ position"
        grid = values.transpose("receiver", "sender", ...).values.reshape(len(rows), -1)
        return Heatmap(name, metric, grid, rows, cols, "receiver", col_title, **common,
                       row_hover=[f"receiver {r}" for r in rows], col_hover=col_hover)  # fmt: skip
    layers = [int(x) for x in ds["layer"].values]
    # Grouped-query k/v are indexed by key/value head, not by query head; SAE latents by id.
    head = next((d for d in UNIT_DIMS if d in values.dims), None)
    prefix, word = UNIT_DIMS.get(head or "head", ("H", "head"))
    heads = [int(h) for h in ds[head].values] if head is not None else []
    if "pos" in values.dims:
        cols, col_hover, col_title = _position_labels(ds, prompt)
    else:
        cols, col_title = [f"{prefix}{h}" for h in heads], head or ""
        col_hover = [f"{word} {h}" for h in heads]
    if "pos" in values.dims and head is not None:
        grid = values.transpose("layer", head, "pos").values.reshape(-1, len(cols))
        rows = [f"L{la}{prefix}{h}" for la in layers for h in heads]
        row_hover = [f"layer {la}, {word} {h}" for la in layers for h in heads]
        return Heatmap(name, metric, grid, rows, cols, f"layer, {head}", col_title, **common,
                       row_hover=row_hover, col_hover=col_hover)  # fmt: skip
    grid = values.transpose("layer", ...).values
    return Heatmap(name, metric, grid, [f"L{la}" for la in layers], cols, "layer", col_title,
                   **common, row_hover=[f"layer {la}" for la in layers],
                   col_hover=col_hover)  # fmt: skip


def subject(ds: xr.Dataset, name: str) -> str:
    """How titles name a variable: a path sweep's by its receivers."""
    receivers = ds.attrs.get("path_receivers") or []
    if name == "paths" and receivers:
        return f"paths into {', '.join(map(str, receivers))}"
    return name


def _values(
    ds: xr.Dataset, name: str, metric: str, unit: str, prompt: int | None, spread: bool
) -> xr.DataArray:
    """The map's values with the grid's dims (no ``prompt``, no ``metric``)."""
    if unit == "scaled":
        if prompt is not None:  # the prompt's own fraction
            return scaled(ds, name, per_prompt=True, metric=metric).isel(prompt=prompt)
        if spread:  # of the per-prompt terms whose mean is the mean map (same gap)
            one = ds.sel(metric=metric)
            gap = (one["clean_baseline"] - one["corrupted_baseline"]).where(one[name].notnull())
            return effect(ds, name, metric=metric).std("prompt", ddof=1) / abs(gap.mean("prompt"))
        return scaled(ds, name, metric=metric)
    per_prompt = (
        effect(ds, name, metric=metric) if unit == "effect" else ds[name].sel(metric=metric)
    )
    if prompt is not None:
        return per_prompt.isel(prompt=prompt)
    return per_prompt.std("prompt", ddof=1) if spread else per_prompt.mean("prompt")


def _position_labels(ds: xr.Dataset, prompt: int | None = None) -> tuple[list[str], list[str], str]:
    """A position axis: short labels, each position in words (its clean and corrupted
    token) and the axis title. Named positions are their names; a token index shows its
    token in ``prompt``, or (no prompt) in the first prompt that has it, so a position past
    prompt 0's end is labelled too."""
    clean = ds["clean_token"].values
    corrupted = ds["corrupted_token"].values
    named = ds["pos"].dtype.kind not in "iu"  # names (str, object or numpy StringDType)
    short, words = [], []
    for j, p in enumerate(ds["pos"].values):
        if prompt is None:
            has = np.flatnonzero(clean[:, j] != "")
            i = int(has[0]) if len(has) else 0
        else:
            i = prompt
        a, b = str(clean[i, j]), str(corrupted[i, j])
        tok = a if a == b else f"{a}/{b}"
        where = f"position {p}" if named else f"position {int(p)}"
        if a == "" and b == "":
            words.append(f"{where} (not in prompt {i})")
        else:
            words.append(f"{where}: clean {a!r}, corrupted {b!r} (prompt {i})")
        if named:
            short.append(str(p))
        else:
            short.append(f"{int(p)}:{tok}" + (f" (#{i})" if i and prompt is None else ""))
    if named:
        return short, words, "named position (in each prompt)"
    if prompt is not None:
        return short, words, f"position (tokens of prompt {prompt})"
    return short, words, "position (tokens of prompt 0, else of #N, the first prompt that has it)"
