"""``python -m sweep.plot STORE [--out DIR] [--metric NAME]``: heatmaps and an HTML page
(``sweep.results.plot``)."""

from sweep.results.plot import figure, heatmap, main, page, render

__all__ = ["figure", "heatmap", "main", "page", "render"]

if __name__ == "__main__":
    main()
