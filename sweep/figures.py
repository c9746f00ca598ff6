"""``sweep.figures``: plotly figures of a store for notebooks (``sweep.results.figures``).

import sweep.figures as sf
sf.heatmap("sweep.zarr", "z")            # or ds.patchsweep.heatmap("z")
"""

from sweep.results.figures import UNITS, figure, heatmap, heatmaps

__all__ = ["UNITS", "figure", "heatmap", "heatmaps"]
