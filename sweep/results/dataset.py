"""A store as researchers read it: ``open_results`` (``sweep.open_results``), whose
Dataset has ``ds.patchsweep``: the store's figures and tables.

The accessor is registered when this module is imported (``sweep.open_results`` and
``Sweep.run`` do), and light: plotly loads only when a figure is drawn. patchsweep's own
readers open stores with ``sweep.store.read.open_dataset``, which this builds on.
"""

from __future__ import annotations

import os
from typing import Any

import pandas as pd
import xarray as xr

from sweep.store.read import open_dataset


def open_results(path: str | os.PathLike[str], *, in_memory: bool = False) -> xr.Dataset:
    """The store at ``path`` (a local path or fsspec URL) as an xarray Dataset, with
    ``ds.patchsweep`` (``sweep.store.read.open_dataset``: lazy, one dask chunk per
    zarr chunk; ``in_memory``: read now, as numpy)."""
    return open_dataset(path, in_memory=in_memory)


@xr.register_dataset_accessor("patchsweep")
class PatchsweepAccessor:
    """``ds.patchsweep.heatmap("z")``, ``ds.patchsweep.top_cells()``; a circuit store's
    ``ds.patchsweep.faithfulness()`` and ``ds.patchsweep.circuit(20)``."""

    def __init__(self, ds: xr.Dataset) -> None:
        self._ds = ds

    def heatmap(self, component: str, **kw: Any) -> Any:
        """A plotly figure of ``component`` (``sweep.figures.heatmap``'s keywords)."""
        from sweep.results.figures import heatmap

        return heatmap(self._ds, component, **kw)

    def heatmaps(self, **kw: Any) -> dict[str, Any]:
        """Every component's figure, by name."""
        from sweep.results.figures import heatmaps

        return heatmaps(self._ds, **kw)

    def top_cells(self, k: int = 10, **kw: Any) -> pd.DataFrame:
        """``sweep.analysis.top_cells`` of this store (an edge store: ``top_edges``)."""
        from sweep.results.analysis import top_cells

        return top_cells(self._ds, k, **kw)

    def top_edges(self, k: int = 10, **kw: Any) -> pd.DataFrame:
        """``sweep.analysis.top_edges`` of an edge store."""
        from sweep.results.analysis import top_edges

        return top_edges(self._ds, k, **kw)

    def faithfulness(self, metric: str | None = None) -> xr.DataArray:
        """A circuit store's faithfulness per size (``sweep.analysis.faithfulness``)."""
        from sweep.results.faithfulness import faithfulness

        return faithfulness(self._ds, metric)

    def curve_scores(self, metric: str | None = None, **kw: Any) -> Any:
        """A circuit store's CPR and CMD with bootstrap intervals (``curve_scores``)."""
        from sweep.results.faithfulness import curve_scores

        return curve_scores(self._ds, metric, **kw)

    def circuit(self, size: int) -> pd.DataFrame:
        """A circuit store's circuit of ``size``: its edges (less those that dangle, when
        the store prunes), each with its rank, sender, receiver and scores."""
        from sweep.results.faithfulness import circuit_edges

        return circuit_edges(self._ds, size)

    def overlap(self, other: xr.Dataset) -> pd.DataFrame:
        """Per size both circuit stores hold: shared edges and IoU (``circuit_overlap``)."""
        from sweep.results.faithfulness import overlap

        return overlap(self._ds, other)

    def export(self, path: str, size: int | None = None) -> str:
        """Write a circuit to ``path``: ``.json`` (EAP-IG's format) or an edge file."""
        from sweep.results.faithfulness import write_circuit

        return write_circuit(self._ds, path, size)
