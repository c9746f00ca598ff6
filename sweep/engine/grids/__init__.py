"""A worker's part that depends on the grid's kind, one module per kind (as
interventions and model families are): ``Grid`` is the protocol, ``GRIDS`` picks."""

from __future__ import annotations

from sweep.engine.grids.base import Grid
from sweep.engine.grids.circuit_grid import CircuitGrid
from sweep.engine.grids.edge_grid import EdgeGrid
from sweep.engine.grids.node_grid import NodeGrid
from sweep.engine.grids.path_grid import PathGrid
from sweep.spec import CircuitGridSpec, EdgeGridSpec, GridSpec, PathGridSpec

GRIDS: dict[type, type[Grid]] = {
    GridSpec: NodeGrid,
    EdgeGridSpec: EdgeGrid,
    PathGridSpec: PathGrid,
    CircuitGridSpec: CircuitGrid,
}
"""The kind of worker part each grid spec needs."""

__all__ = ["GRIDS", "CircuitGrid", "EdgeGrid", "Grid", "NodeGrid", "PathGrid"]
