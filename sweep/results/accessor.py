"""``ds.patchsweep``: a store's figures and tables from the Dataset ``open_results`` returns.

Registered when ``sweep.results.store`` is imported (``sweep.open_results`` does), and
light: plotly loads only when a figure is drawn.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import xarray as xr


@xr.register_dataset_accessor("patchsweep")
class PatchsweepAccessor:
    """``ds.patchsweep.heatmap("z")``, ``ds.patchsweep.top_cells()``."""

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
        """``sweep.analysis.top_cells`` of this store."""
        from sweep.results.analysis import top_cells

        return top_cells(self._ds, k, **kw)
