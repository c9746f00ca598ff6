"""``python -m sweep.plot STORE [--out DIR] [--metric NAME] [--prompt N]``: a PNG per
component and an HTML page (``sweep.results.plot``, ``sweep.results.page``)."""

from sweep.results.page import page
from sweep.results.plot import figure, heatmap, main, render

__all__ = ["figure", "heatmap", "main", "page", "render"]

if __name__ == "__main__":
    main()
