"""The only writer of a store's values: each finished unit writes exactly one chunk, and
only then is it marked done in ``_patchsweep/done`` (a subgroup xarray does not show). A
kill between the two costs one recomputation, never a wrong value; a done unit whose chunk
file went missing is found by a listing on resume."""

from __future__ import annotations

import os
import socket
from datetime import datetime, timezone
from typing import Any

import numpy as np
import zarr

from sweep.plan import (
    NAMED,
    PROMPT_TEXTS,
    BlockData,
    Plan,
    WorkUnit,
    resolve_positions,
)
from sweep.store.backends import Backend
from sweep.store.layout import META, array, chunk_key, consolidate, root_attrs, write_all
from sweep.store.lease import Lease


class ResultStore:
    """A store this driver holds the lease of: it writes units and cells into it."""

    def __init__(self, backend: Backend, lease: Lease) -> None:
        self.backend = backend
        self.lease = lease
        self.path = backend.path
        self.group = zarr.open_group(backend.location, mode="r+")
        self.prompt_block = int(root_attrs(backend)["prompt_block"])
        names = list(root_attrs(backend).get("position_names", []))
        labels = np.asarray(array(self.group, "pos")[:])
        self.positions = np.array(
            [NAMED + names.index(str(p)) if labels.dtype.kind in "OUT" else int(p) for p in labels],
            dtype=np.int64,
        )
        """The ``pos`` coordinate as position codes (``sweep.plan.NAMED``)."""
        self.lengths = np.asarray(array(self.group, "prompt_length")[:])
        self.names = names
        # Opened by its own path: read through the root, its attributes (the runs) would
        # come from the root's consolidated metadata, frozen at creation.
        self.meta = zarr.open_group(backend.location, path=META, mode="r+")

    def _array(self, name: str) -> zarr.Array:
        # A chunk of NaN equals the fill value; write it anyway, so a missing chunk file
        # always means a lost one.
        return array(self.group, name).with_config({"write_empty_chunks": True})

    def done(self) -> np.ndarray:
        """Per unit: 0 if not done, else the number of the run that computed it."""
        return np.asarray(array(self.meta, "done")[:])

    def begin_run(self) -> int:
        """Record this run (number, start, host, pid) and return its number."""
        runs = list(self.meta.attrs.get("runs", []))  # type: ignore[arg-type]
        number = len(runs) + 1
        started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        runs.append({"run": number, "started": started, "host": socket.gethostname(),
                     "pid": os.getpid()})  # fmt: skip
        self.meta.attrs["runs"] = runs
        return number

    def todo(self, plan: Plan) -> tuple[list[WorkUnit], list[WorkUnit]]:
        """Units to compute: not done, or done but with their chunk file missing (the
        second list; they are marked not done here)."""
        done = self.done()
        present = {c.name: self.backend.files(c.name) for c in plan.components}
        lost = [
            u for u in plan.units
            if done[u.index] and chunk_key(plan, u) not in present[u.component]
        ]  # fmt: skip
        for u in lost:
            array(self.meta, "done")[u.index] = 0
        return [u for u in plan.units if not done[u.index] or u in lost], lost

    def write(self, unit: WorkUnit, values: np.ndarray, block: BlockData, run: int) -> None:
        """Write the unit's chunk, its prompt block's baselines and tokens (once per block),
        then mark them done (in that order: see module doc)."""
        self.lease.check()
        region = (
            slice(None),
            slice(unit.layer_start, unit.layer_start + len(unit.layers)),
            *(slice(None) for _ in unit.grid),
            slice(unit.prompt_start, unit.prompt_stop),
        )
        writes = [(self._array(unit.component), region, values)]
        index = unit.prompt_start // self.prompt_block
        blocks = array(self.meta, "blocks")
        first = not blocks[index]
        if first:
            writes += self._block_writes(block, unit.prompt_stop)
        write_all(writes)  # the chunk and the block's labels, then their marks
        if first:
            blocks[index] = run
        array(self.meta, "done")[unit.index] = run

    def _block_writes(self, block: BlockData, stop: int) -> list[tuple[Any, Any, Any]]:
        """A prompt block's baselines, tokens and texts: (array, region, values)."""
        prompts = slice(block.prompt_start, stop)
        index = resolve_positions(self.positions, self.lengths[prompts], block.named)
        out: list[tuple[Any, Any, Any]] = []
        for run in ("clean", "corrupted"):
            out.append((self._array(f"{run}_baseline"), (slice(None), prompts),
                        getattr(block, f"{run}_baseline")))  # fmt: skip
            out.append((self._array(f"{run}_token"), prompts,
                        _at(getattr(block, f"{run}_str"), index)))  # fmt: skip
        if "position_name" in self.group:  # stores made before named positions lack it
            out.append((self._array("position_index"), prompts, index))
            out.append((self._array("position_name"), prompts,
                        _names_at(block.named, index, self.names)))  # fmt: skip
        for name, values in {**block.texts, **block.ids}.items():
            if name in self.group:  # stores made before the task's texts were kept lack it
                dtype = object if name in PROMPT_TEXTS else np.int64
                out.append((self._array(name), prompts, np.asarray(values, dtype=dtype)))
        return out

    def write_cells(
        self, name: str, cells: list[dict[str, int | str]], values: np.ndarray, prompts: slice
    ) -> None:
        """Single cells of ``name`` by their coordinates (``layer`` and each dim); values
        [metric, cell, prompt]. Only the driver writes, after every unit is done."""
        self.lease.check()
        arr = self._array(name)
        dims = list(arr.metadata.dimension_names or ())[1:-1]  # type: ignore[union-attr]
        index = {d: list(np.asarray(array(self.group, d)[:])) for d in dims}
        for i, cell in enumerate(cells):
            where = tuple(index[d].index(cell[d]) for d in dims)
            arr[(slice(None), *where, prompts)] = values[:, i]  # type: ignore[index]

    def record(self, name: str, value: Any) -> None:
        """A root attribute summarising finished results (a circuit store's curve scores),
        consolidated so that readers see it."""
        self.lease.check()
        group = zarr.open_group(self.backend.location, mode="r+", use_consolidated=False)
        group.attrs[name] = value
        consolidate(self.backend.location)

    def verified(self) -> int:
        """The run that stored the exact values of AtP's top cells (0: not yet)."""
        return int(np.asarray(array(self.meta, "verified")[:])[0])

    def mark_verified(self, run: int) -> None:
        array(self.meta, "verified")[0] = run


def _at(rows: list[list[str]], index: np.ndarray) -> np.ndarray:
    """Each prompt's token strings at the store's positions (``index`` [prompt, pos], as
    ``resolve_positions`` gives it; '' where the prompt has no such position)."""
    out = np.full(index.shape, "", dtype=object)
    for (i, j), p in np.ndenumerate(index):
        if p >= 0:
            out[i, j] = rows[i][p]
    return out


def _names_at(named: np.ndarray, index: np.ndarray, names: list[str]) -> np.ndarray:
    """[prompt, pos] the name of the token at each position ('' for a token no name is
    given; the first name where a token has two)."""
    out = np.full(index.shape, "", dtype=object)
    for (i, j), p in np.ndenumerate(index):
        hits = np.flatnonzero(named[i] == p) if p >= 0 and named.size else np.array([])
        if len(hits):
            out[i, j] = names[int(hits[0])]
    return out
