"""``sweep.figures``: plotly figures of a store for notebooks (``sweep.results.figures``).

import sweep.figures as sf
sf.heatmap("sweep.zarr", "z")            # or ds.patchsweep.heatmap("z")
sf.faithfulness(["exact.circuit.zarr", "eap.circuit.zarr"])   # one line per store
"""

from sweep.results.faithfulness_figures import faithfulness_figure as faithfulness
from sweep.results.figures import UNITS, figure, heatmap, heatmaps

__all__ = ["UNITS", "faithfulness", "figure", "heatmap", "heatmaps"]
