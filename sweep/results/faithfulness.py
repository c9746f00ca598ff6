"""Circuits read from stores: the ranking a scores store gives, and what a circuit store
holds: its circuits, their faithfulness, the curve's scores, overlaps and exports.

A circuit store (``grid=circuit``) holds ``circuit`` [metric, size, prompt]: the metric of
the clean prompts with every edge outside the circuit of ``size`` ablated (its top ``size``
edges, less those on no path from embed to the logits when pruned), the ranking along
``rank`` (``circuit_sender``, ``circuit_receiver``, ``circuit_score``, ``circuit_scaled``)
and per size the edges it holds (``size_edges``, ``size_dangling``, ``size_threshold``).
Faithfulness of a size is (circuit - empty) / (full - empty) of the means over the
prompts: 0 is the empty circuit (every edge ablated), 1 the whole model. Torch-free.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import xarray as xr

from sweep.edges.graph import EMBED, GraphShape, edges, senders
from sweep.edges.ranking import ARROW, Ranking, members, ranked
from sweep.errors import ConfigError, SweepError
from sweep.results.analysis import (
    GAP_SHARE,
    ablation_of,
    check_metric,
    draw_counts,
    edge_variables,
    method_of,
    top_edges,
)

CIRCUIT = "circuit"
"""The store variable of a circuit sweep."""
GAP = 1e-6
"""A full-minus-empty gap of the mean this small leaves faithfulness undefined."""
FAITHFUL = 0.8
"""The faithfulness the drawn circuit reaches (the smallest stored size that does)."""

if TYPE_CHECKING:
    from sweep.spec import CircuitGridSpec


def store_ranking(
    path: str, metric: str | None, order: str = "abs", key: str = "grid.scores"
) -> tuple[Ranking, dict[str, Any], GraphShape]:
    """The edges of a finished edge store, best first: by |mean effect| over its prompts (an
    EAP store's estimates, an exact store's patched values), or ``order="signed"`` by the
    scaled effect (those carrying the behaviour first); with the store's fingerprint (the
    model and task it was made on) and its graph. Anything else is refused, naming it."""
    from sweep.store.layout import fingerprint_of
    from sweep.store.read import open_dataset
    from sweep.store.status import done_marks

    try:
        ds = open_dataset(path, in_memory=True)  # one variable of edges x prompts: small
    except SweepError as e:
        raise ConfigError(f"{key}: {str(e).removeprefix('STORE: ')}") from None
    if not edge_variables(ds):
        made = ds.attrs.get("components", [])
        what = "a circuit store" if is_circuit(ds) else f"a store of cells ({', '.join(made)})"
        raise ConfigError(
            f"{key}: {path} is {what}, not of edges; rank a "
            "circuit by an edge store's scores: grid=edges (exact) or grid=edges "
            "intervention=eap (EAP, EAP-IG)"
        )
    if "pos" in ds["edges"].dims:
        raise ConfigError(
            f"{key}: {path} holds edges one position at a time (grid.positions); a circuit "
            "keeps whole edges: rank it by a store made without grid.positions"
        )
    done = done_marks(path)
    if not (done > 0).all():
        raise ConfigError(
            f"{key}: {path} is not finished ({int((done > 0).sum())} of {len(done)} units "
            "done); run its sweep to the end (the same command resumes it) first"
        )
    try:
        metric = check_metric(ds, metric)
    except ValueError as e:
        raise ConfigError(f"grid.rank_metric: {e}") from None
    table = top_edges(ds, int(ds["edges"].isel(metric=0).notnull().any("prompt").sum()),
                      metric, min_prompts=1)  # fmt: skip
    scores, scaled = table["effect"].to_numpy(float), table["scaled"].to_numpy(float)
    names = tuple(zip(table["sender"].astype(str), table["receiver"].astype(str), strict=True))
    at = ranked(names, scores, scaled, order)
    ranking = Ranking(
        edges=tuple(names[i] for i in at),
        scores=tuple(float(scores[i]) for i in at),
        method=method_of(ds),
        source=str(path),
        metric=metric,
        scored=ablation_of(ds),
        scaled=tuple(float(scaled[i]) for i in at),
        order=order,
    )
    from sweep.store.backends import backend_for

    made_on = fingerprint_of(backend_for(str(path))) or {}
    return ranking, made_on, GraphShape(**ds.attrs["graph"])


def with_ranking(grid: CircuitGridSpec) -> CircuitGridSpec:
    """The circuit grid with its ranking read: ``grid.file``'s edges, or ``grid.scores``'s
    (a local store's path made absolute), its sizes checked against the graph. Reading
    a store is the config's job (``sweep.config.to_spec``), not the frozen spec's."""
    from sweep.edges.ranking import circuit_sizes, read_edges
    from sweep.spec import existing_file

    if grid.ranking is not None:
        return grid
    if grid.file is not None:
        path = existing_file("grid.file", str(grid.file))
        listed = read_edges("grid.file", path)
        ranking = Ranking(listed, (float("nan"),) * len(listed), "file", path)
        return dataclasses.replace(grid, file=path, ranking=ranking)
    scores = str(grid.scores)
    if "://" not in scores:  # a local store, however it is spelled
        scores = str(Path(scores).expanduser().resolve())
    ranking, made_on, graph = store_ranking(scores, grid.rank_metric, grid.rank_by)
    circuit_sizes(grid.sizes, ranking, len(edges(graph)), "grid.sizes", grid.thresholds or ())
    return dataclasses.replace(grid, scores=scores, ranking=ranking, made_on=made_on)


def is_circuit(ds: xr.Dataset) -> bool:
    return CIRCUIT in ds.data_vars and "size" in ds[CIRCUIT].dims


def check_circuit(ds: xr.Dataset) -> None:
    if not is_circuit(ds):
        raise ValueError("this store holds no circuits; make one with python -m sweep.circuit")


def _values(ds: xr.Dataset, metric: str | None) -> xr.DataArray:
    """[size, prompt] the circuit values of one metric, in memory (a small array)."""
    check_circuit(ds)
    return ds[CIRCUIT].sel(metric=check_metric(ds, metric)).load()


def faithfulness(ds: xr.Dataset, metric: str | None = None) -> xr.DataArray:
    """[size] (circuit - empty) / (full - empty) of the means over the prompts computed at
    that size and at both ends (all of them, in a finished store; ``attrs["n"]`` per
    size). NaN for a size not computed yet, and where the full model and the empty circuit
    give the same mean (nothing to be faithful to)."""
    v = _values(ds, metric)
    empty, full = v.isel(size=0), v.isel(size=-1)
    ok = v.notnull() & empty.notnull() & full.notnull()
    gap = (full - empty).where(ok).mean("prompt")
    out = ((v - empty).where(ok).mean("prompt") / gap).where(np.abs(gap) > GAP)
    out.attrs.update(
        long_name="faithfulness", n=ok.sum("prompt").values.tolist(),
        n_prompts=int(ds.sizes["prompt"]), empty=float(empty.mean()), full=float(full.mean()),
    )  # fmt: skip
    return out


def info(ds: xr.Dataset) -> dict[str, Any]:
    """``attrs["circuit"]``: what ranked (``method``, ``scored``, ``order``), from where,
    and whether dangling edges were left out (``prune``)."""
    return dict(ds.attrs.get("circuit") or {})


def method(ds: xr.Dataset) -> str:
    """What ranked a circuit store's edges (``exact``, ``EAP``, ``EAP-IG (5 steps)``,
    ``file``)."""
    return str(info(ds).get("method", "circuit"))


def scored(ds: xr.Dataset) -> str:
    """What the ranking's scores patched (``patch noise``, ``mean``...; '' for a file)."""
    return str(info(ds).get("scored", ""))


def ablation(ds: xr.Dataset) -> str:
    """What an edge outside the circuit carries, in words."""
    kind = ablation_of(ds)
    return "the corrupted run's sender output" if kind.startswith("patch") else f"{kind} ablation"


def label(ds: xr.Dataset) -> str:
    """A curve's name: the ranking (method, what its scores patched, signed) and the
    circuit's ablation, e.g. ``EAP-IG (5 steps) of patch noise, patch noise ablation``."""
    what = method(ds)
    if scored(ds):
        what += f" of {scored(ds)}"
    if info(ds).get("order") == "signed":
        what += ", signed"
    if info(ds).get("prune") is False:
        what += ", unpruned"
    return f"{what}; ablated: {ablation_of(ds)}"


def mismatch(ds: xr.Dataset) -> str:
    """A line when the circuit ablates otherwise than its ranking's scores patched ('' when
    they fit: patching and EAP scores of noising for patch ablation, the same ablation)."""
    kind, by = ablation_of(ds), scored(ds)
    if not by or kind == by:
        return ""
    if kind == "patch noise" and by == "patch denoise":
        return (
            "note: the ranking's scores are of denoising, the circuit ablates in the clean "
            "run (noising): rank by noising scores to match"
        )
    return (
        f"note: the ranking's scores are of {by}, the circuit ablates by {kind}: score the "
        "edges with the same ablation to match (python -m sweep.circuit --help)"
    )


def faithful_size(ds: xr.Dataset, metric: str | None = None, at: float = FAITHFUL) -> int | None:
    """The smallest stored size (not the whole graph) whose faithfulness reaches ``at``."""
    f = faithfulness(ds, metric)
    sizes = [int(s) for s, v in zip(f["size"].values[:-1], f.values[:-1], strict=True) if v >= at]
    return min(sizes) if sizes else None


def ranking_of(ds: xr.Dataset) -> Ranking:
    """A circuit store's ranking, as it was read when the store was made."""
    check_circuit(ds)
    names = tuple(zip((str(x) for x in ds["circuit_sender"].values),
                      (str(x) for x in ds["circuit_receiver"].values), strict=True))  # fmt: skip
    scaled = ds["circuit_scaled"].values if "circuit_scaled" in ds.coords else ()
    return Ranking(names, tuple(float(x) for x in ds["circuit_score"].values), method(ds),
                   str(info(ds).get("source", "")), str(info(ds).get("metric", "")),
                   scored(ds), tuple(float(x) for x in scaled),
                   str(info(ds).get("order", "abs")))  # fmt: skip


def graph_of(ds: xr.Dataset) -> GraphShape:
    return GraphShape(**ds.attrs["graph"])


def total_edges(ds: xr.Dataset) -> int:
    return len(edges(graph_of(ds)))


def circuit_edges(ds: xr.Dataset, size: int) -> pd.DataFrame:
    """The edges of the circuit of ``size``: its top ``size`` edges, less those on no path
    from embed to the logits when the store prunes (``attrs["circuit"]["prune"]``); rank
    (0: the best), sender, receiver, score (the mean effect on the rank metric) and
    scaled (on the scores store's own scale). A size of the whole graph or more: every
    edge of the ranking."""
    r = ranking_of(ds)
    size = int(size)
    if size >= total_edges(ds):
        kept = np.arange(len(r.edges))
    else:
        kept = members(r, size, graph_of(ds), bool(info(ds).get("prune", False)))
    scaled = np.asarray(r.scaled) if r.scaled else np.full(len(r.edges), np.nan)
    return pd.DataFrame({
        "rank": kept.astype(int),
        "sender": [r.edges[i][0] for i in kept],
        "receiver": [r.edges[i][1] for i in kept],
        "score": np.asarray(r.scores, dtype=float)[kept],
        "scaled": scaled[kept],
    })  # fmt: skip


def overlap(a: xr.Dataset, b: xr.Dataset) -> pd.DataFrame:
    """Per size both circuit stores hold (not the empty circuit nor the whole graph): each
    one's edges, the edges they share, and their intersection over union (IoU)."""
    sizes = sorted(set(int(s) for s in a["size"].values) & set(int(s) for s in b["size"].values))
    rows = []
    for size in sizes:
        if size == 0 or size >= min(total_edges(a), total_edges(b)):
            continue
        x, y = (set(zip(t["sender"], t["receiver"], strict=True))
                for t in (circuit_edges(a, size), circuit_edges(b, size)))  # fmt: skip
        union = len(x | y)
        rows.append({"size": size, "edges_a": len(x), "edges_b": len(y), "shared": len(x & y),
                     "iou": len(x & y) / union if union else np.nan})  # fmt: skip
    return pd.DataFrame(rows, columns=["size", "edges_a", "edges_b", "shared", "iou"])


@dataclass(frozen=True)
class CurveScores:
    """MIB's scores of a faithfulness curve, with percentile bootstrap intervals over the
    prompts: CPR, the area under the curve (higher: the circuits do more of the model's
    work), and CMD, the area between the curve and 1 (lower: closer to the model)."""

    cpr: float
    cpr_ci: tuple[float, float]
    cmd: float
    cmd_ci: tuple[float, float]
    n: int
    """The prompts they are over: those computed at every stored size."""
    fractions: tuple[float, ...]
    """The curve's points: the stored sizes as fractions of the graph's edges (not 0)."""
    ci: float

    def line(self) -> str:
        return (
            f"CPR {self.cpr:.3f} [{self.cpr_ci[0]:.3f}, {self.cpr_ci[1]:.3f}], CMD "
            f"{self.cmd:.3f} [{self.cmd_ci[0]:.3f}, {self.cmd_ci[1]:.3f}] (areas under the "
            f"faithfulness curve and between it and 1 over the {len(self.fractions)} stored "
            f"sizes as fractions of the graph's edges, trapezoids, as MIB computes them; "
            f"{self.ci:.0%} bootstrap intervals over the {self.n} prompts computed at every "
            "size)"
        )

    def as_dict(self) -> dict[str, Any]:
        return {"cpr": self.cpr, "cpr_ci": list(self.cpr_ci), "cmd": self.cmd,
                "cmd_ci": list(self.cmd_ci), "n": self.n, "fractions": list(self.fractions),
                "ci": self.ci}  # fmt: skip


def curve_scores(
    ds: xr.Dataset, metric: str | None = None, ci: float = 0.95, n_boot: int = 1000, seed: int = 0
) -> CurveScores | None:
    """CPR and CMD (``CurveScores``) of a circuit store's curve: the trapezoid areas over
    its sizes above 0 as fractions of the graph's edges (x from the smallest to 1, as MIB's
    circuit track integrates its fractions 0.001 .. 1; ``--sizes mib`` stores those), of
    the faithfulness and of |1 - faithfulness|; each prompt resample draws the same prompts
    at every size. None when no prompt is computed at every size or full equals empty."""
    v = _values(ds, metric)
    sizes = v["size"].values
    whole = v.notnull().all("size").values
    data = v.values[:, whole].astype(np.float64)  # [size, prompt]
    m = data.shape[1]
    if m == 0:
        return None
    x = sizes[sizes > 0] / float(total_edges(ds))

    def areas(means: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # [size, k] -> [k], [k]
        empty, full = means[0], means[-1]
        with np.errstate(divide="ignore", invalid="ignore"):
            f = (means[sizes > 0] - empty) / (full - empty)
        f = np.where(np.abs(full - empty) > GAP, f, np.nan)
        return _trapezoid(f, x), _trapezoid(np.abs(1 - f), x)

    cpr, cmd = (float(a[0]) for a in areas(data.mean(1, keepdims=True)))
    if not np.isfinite(cpr):
        return None
    boot = data @ draw_counts(m, n_boot, seed) / m  # [size, n_boot]
    low_high = [(1 - ci) / 2, (1 + ci) / 2]
    b_cpr, b_cmd = areas(boot)
    q = [tuple(float(t) for t in np.nanquantile(b, low_high)) for b in (b_cpr, b_cmd)]
    return CurveScores(cpr, (q[0][0], q[0][1]), cmd, (q[1][0], q[1][1]), m,
                       tuple(float(t) for t in x), ci)  # fmt: skip


def _trapezoid(y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Trapezoid areas along the first axis of ``y`` [point, k] over ``x`` [point]."""
    order = np.argsort(x)
    y, x = y[order], x[order]
    return ((y[1:] + y[:-1]) / 2 * np.diff(x)[:, None]).sum(0)


def gap_warning(ds: xr.Dataset, metric: str | None = None) -> str:
    """A line when the full model and the empty circuit barely differ on average while
    prompts differ (faithfulness divides by that mean gap, so it reads far outside 0..1),
    or when many prompts' own gaps are inverted or tiny ('' when neither)."""
    v = _values(ds, metric)
    gap = (v.isel(size=-1) - v.isel(size=0)).values
    gap = gap[np.isfinite(gap)]
    if not len(gap):
        return ""
    mean, typical = float(gap.mean()), float(np.abs(gap).mean())
    name = check_metric(ds, metric)
    if typical > GAP and abs(mean) < GAP_SHARE * typical:
        return (
            f"warning: the full model and the empty circuit differ by {mean:+.3g} on {name} "
            f"on average over {len(gap)} prompts, while each prompt's own two differ by "
            f"{typical:.3g} on average: faithfulness divides by that small mean, so it reads "
            "far outside 0..1 and means little (this ablation hardly separates the full model "
            "from the empty circuit on this task; try another ablation or metric)"
        )
    bad = int(((gap * mean <= 0) | (np.abs(gap) < GAP_SHARE * abs(mean))).sum())
    if not bad or abs(mean) <= GAP:
        return ""
    return (
        f"warning: {bad} of {len(gap)} prompts have a full-minus-empty gap of {name} that is "
        f"inverted or under {GAP_SHARE:.0%} of the mean gap ({mean:+.3g}); faithfulness is of "
        "the means over prompts, not of each prompt"
    )


def circuit_lines(ds: xr.Dataset) -> list[str]:
    """The report: each size's faithfulness and metric, what ranked and what ablated, the
    curve's CPR and CMD, and warnings."""
    metric = check_metric(ds, None)
    f = faithfulness(ds, metric)
    m = _values(ds, metric).mean("prompt").values
    n, total = ds.sizes["prompt"], int(ds["size"].values[-1])
    by = (f"the edges of {info(ds).get('source')} (best first)" if method(ds) == "file"
          else f"the top edges by {label(ds).split(';')[0]} scores")  # fmt: skip
    pruned = ", less those on no path from embed to the logits," if info(ds).get("prune") else ""
    lines = [
        f"circuits: {by} kept{pruned} every other edge carrying {ablation(ds)}; "
        f"faithfulness on {metric} = (circuit - empty) / (full - empty), means over all "
        f"{n} prompts (empty {f.attrs['empty']:.3f}, full model {f.attrs['full']:.3f}, "
        f"{total} edges):"
    ]
    lines += [x for x in (mismatch(ds), gap_warning(ds, metric)) if x]
    if abs(f.attrs["full"] - f.attrs["empty"]) <= GAP:
        lines.append(
            "  the full model and the empty circuit give the same mean: faithfulness is "
            "undefined (this task does not separate them under this ablation)"
        )
    held = ds["size_edges"].values if "size_edges" in ds.coords else ds["size"].values
    dangling = ds["size_dangling"].values if "size_dangling" in ds.coords else 0 * held
    threshold = ds["size_threshold"].values if "size_threshold" in ds.coords else None
    for k, (size, value, mean, reached) in enumerate(
        zip(ds["size"].values, f.values, m, f.attrs["n"], strict=True)
    ):
        head = f"  {int(size):>6} edges"
        if threshold is not None and np.isfinite(threshold[k]):
            which = "signed score" if info(ds).get("order") == "signed" else "|score|"
            head += f" ({which} >= {threshold[k]:g})"
        notes = _size_notes(ds, int(size), int(held[k]), int(dangling[k]), total)
        if not reached:
            lines.append(f"{head}: not computed yet{notes}")
        elif np.isnan(value):
            lines.append(f"{head}: {metric} {mean:.3f}{notes}")
        else:
            part = f", {reached} of {n} prompts" if reached < n else ""
            lines.append(f"{head}: faithfulness {value:+.3f} ({metric} {mean:.3f}{part}){notes}")
    scores = curve_scores(ds, metric)
    if scores is not None:
        lines.append("  " + scores.line())
    return lines


def _size_notes(ds: xr.Dataset, size: int, held: int, dangling: int, total: int) -> str:
    """Why a circuit holds fewer edges than its size: how many dangled (pruned, or kept
    though they move nothing), and a circuit none of whose edges reaches the logits."""
    if size == 0 or size >= total:
        return ""
    top = min(size, int(ds.sizes["rank"]))
    on_path = top - dangling
    if on_path == 0:
        what = ("so it is the empty circuit" if info(ds).get("prune")
                else "kept: --no-prune")  # fmt: skip
        return f"; none of its {top} edges lies on a path from embed to the logits ({what})"
    if not dangling:
        return ""
    if info(ds).get("prune"):
        return f"; {held} kept, {dangling} on no path from embed to the logits left out"
    return f"; {dangling} of them on no path from embed to the logits (kept: --no-prune)"


def drawn_size(ds: xr.Dataset, metric: str | None = None) -> tuple[int, str]:
    """The circuit to show and export by default: the smallest stored size whose
    faithfulness reaches ``FAITHFUL`` (else the largest ranked size), and why."""
    size = faithful_size(ds, metric)
    if size is not None:
        return size, f"the smallest stored circuit with faithfulness >= {FAITHFUL}"
    ranked_sizes = [int(s) for s in ds["size"].values if 0 < s < total_edges(ds)]
    why = f"no stored size reaches faithfulness {FAITHFUL}; the largest ranked circuit"
    return (max(ranked_sizes) if ranked_sizes else 0), why


def eap_ig_name(node: str) -> str:
    """A node as EAP-IG's and MIB's graphs name it: the embedding is ``input``."""
    return "input" if node == EMBED else node


def circuit_json(ds: xr.Dataset, size: int) -> dict[str, Any]:
    """The circuit of ``size`` in EAP-IG's graph format (``Graph.from_json``, as MIB's
    circuit track reads it): ``cfg``, every node and edge of the model's graph with
    ``in_graph`` (and each ranked edge's ``score``); edges into a head's input are named
    ``a0.h1->a1.h0<k>`` (a grouped-query model's key/value heads ``a1.g0<k>``)."""
    g = graph_of(ds)
    table = circuit_edges(ds, size)
    kept = set(zip(table["sender"], table["receiver"], strict=True))
    r = ranking_of(ds)
    score = {e: s for e, s in zip(r.edges, r.scores, strict=True) if np.isfinite(s)}
    out_edges, used = {}, set()
    for s, rcv in edges(g):
        node, _, kind = rcv.name.rpartition(".") if rcv.kind in "qkv" else (rcv.name, "", "")
        name = f"{eap_ig_name(s.name)}->{node}{f'<{kind}>' if kind else ''}"
        # EAP-IG reads a score for every edge: an unranked one (a file's) scores 0.
        entry = {"score": score.get((s.name, rcv.name), 0.0),
                 "in_graph": (s.name, rcv.name) in kept}  # fmt: skip
        out_edges[name] = entry
        if entry["in_graph"]:
            used |= {eap_ig_name(s.name), node}
    nodes = {eap_ig_name(s.name): {"in_graph": eap_ig_name(s.name) in used}
             for s in senders(g)} | {"logits": {"in_graph": True}}  # fmt: skip
    cfg = {"n_layers": g.n_layers, "n_heads": g.n_heads, "parallel_attn_mlp": g.parallel}
    if "d_model" in ds.attrs:
        cfg["d_model"] = int(ds.attrs["d_model"])
    f = faithfulness(ds)
    value = float(f.sel(size=size)) if int(size) in f["size"].values else float("nan")
    return {"cfg": cfg, "nodes": nodes, "edges": out_edges, "patchsweep": {
        "source": str(info(ds).get("source", "")), "ranking": label(ds), "size": int(size),
        "edges": len(kept), "faithfulness": value if np.isfinite(value) else None,
    }}  # fmt: skip


def write_circuit(ds: xr.Dataset, out: str, size: int | None = None) -> str:
    """Write the circuit of ``size`` (default: ``drawn_size``) to ``out``: ``.json`` in
    EAP-IG's format (``circuit_json``), anything else as an edge file (one ``sender ->
    receiver`` per line, best first, as ``--file`` reads it); what was written, in words."""
    if size is None:
        size, _ = drawn_size(ds)
    stored = [int(s) for s in ds["size"].values]
    total = total_edges(ds)
    if not 0 <= int(size) <= total:
        raise SweepError(f"--size: {size} is not a circuit size of this graph (0..{total})")
    table = circuit_edges(ds, int(size))
    path = Path(out)
    if path.exists():  # never overwrite what patchsweep did not make
        raise SweepError(f"--export: {out} exists; choose another file name or remove it")
    try:
        if path.suffix == ".json":
            path.write_text(json.dumps(circuit_json(ds, int(size)), indent=1), encoding="utf-8")
        else:
            head = (f"# {len(table)} edges: the circuit of size {size} ranked by {label(ds)}; "
                    f"from {info(ds).get('source', '')}\n")  # fmt: skip
            lines = [f"{a} {ARROW} {b}" for a, b in zip(table["sender"], table["receiver"],
                                                          strict=True)]  # fmt: skip
            path.write_text(head + "\n".join(lines) + "\n", encoding="utf-8")
    except OSError as e:
        raise SweepError(f"--export: cannot write {out} ({e.strerror})") from None
    note = "" if int(size) in stored else " (a size the store does not hold: not measured)"
    return f"wrote {len(table)} edges (the circuit of size {size}{note}) to {out}"
