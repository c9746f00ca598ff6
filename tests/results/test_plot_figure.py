"""``sweep.plot.figure`` in a notebook: it draws into the axes it is given and leaves the
matplotlib backend (inline, widget) alone."""

from __future__ import annotations

import numpy as np
from helpers import in_fresh_process

from sweep.results.plot import Heatmap, figure

MAP = Heatmap("z", "logit_diff", np.array([[0.5, -0.25]]), ["L0"], ["H0", "H1"], "layer", "head")

CODE = """
import json, matplotlib
matplotlib.use("svg")  # stands for a notebook's backend: not the Agg it used to force
import numpy as np
from sweep.results.plot import Heatmap, figure
fig = figure(Heatmap("z", "m", np.ones((1, 2)), ["L0"], ["H0", "H1"], "layer", "head"))
fig.savefig("/dev/null", format="png")
print(json.dumps(matplotlib.get_backend()))
"""


def test_figure_leaves_the_backend_alone() -> None:
    assert in_fresh_process(CODE) == "svg"


def test_figure_draws_into_the_axes_it_is_given() -> None:
    from matplotlib.figure import Figure

    fig = Figure()
    left, right = fig.subplots(1, 2)
    assert figure(MAP, ax=right) is fig
    assert right.get_title().replace("\n", " ") == MAP.title  # wrapped to the map's width
    assert MAP.title == "z: logit_diff, fraction restored by patch denoise"
    assert not left.images
    np.testing.assert_array_equal(right.images[0].get_array(), MAP.values)
    assert [t.get_text() for t in right.get_xticklabels()] == ["H0", "H1"]
