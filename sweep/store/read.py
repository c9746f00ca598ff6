"""Opening a store as an xarray Dataset, for readers (``sweep.results``), with a damaged
chunk said in one line."""

from __future__ import annotations

import os
import uuid
from collections.abc import Sequence

import numpy as np
import xarray as xr

from sweep.errors import StoreDamagedError, StoreError
from sweep.store.backends import backend_for
from sweep.store.layout import is_store


def open_dataset(
    path: str | os.PathLike[str], *, in_memory: bool = False, load: Sequence[str] | None = None
) -> xr.Dataset:
    """The store at ``path`` (a local path or fsspec URL) as an xarray Dataset of dask
    arrays, one dask chunk per zarr chunk: nothing is read until values are used, and
    reductions (``mean("prompt")``, ``top_cells``) run chunk by chunk, so a store larger
    than memory can be summarised. Cells not yet computed are NaN. ``in_memory``: read
    it all now, as numpy (a small store, without dask's costs); a chunk whose bytes are
    damaged is then one line, pointing at ``sweep.status --verify``. ``load``: only
    these data variables, read now as numpy (the others left out; coordinates stay lazy):
    what a reader of one variable needs, without dask's costs or the others' chunks.
    Researchers open a
    store with ``sweep.open_results`` (``sweep.results.dataset``), which adds
    ``ds.patchsweep``."""
    backend = backend_for(str(path))
    backend.check_reachable()
    if not is_store(backend, key="STORE"):
        raise StoreError(f"STORE: {path}: no such store")
    try:
        ds = xr.open_zarr(backend.location, chunks=None)
    except (ValueError, KeyError, OSError) as e:
        raise StoreDamagedError(f"{path}: the store cannot be opened ({_first_line(e)})") from None
    # Data variables as dask arrays, one dask chunk per zarr chunk; coordinates stay lazily
    # indexed numpy (``ds["clean_token"].sel(prompt=0, pos=3).item()`` reads one chunk).
    if load is not None:
        ds = ds[list(load)]
    if in_memory or load is not None:
        try:
            ds = ds.load() if load is None else ds.assign({n: ds[n].load() for n in load})
        except Exception as e:  # a codec's own error type: zstd, blosc, ...
            raise StoreDamagedError(
                f"STORE: a chunk of {path} cannot be read ({type(e).__name__}); run python "
                f"-m sweep.status {path} --verify, then the sweep's command to recompute it"
            ) from None
    else:
        # Named here: dask would hash every array's metadata to name it (half the cost of
        # opening a small store); a fresh tag per open keeps two opens' arrays apart.
        tag = uuid.uuid4().hex
        for name, var in ds.data_vars.items():
            chunks = dict(zip(var.dims, var.encoding["chunks"], strict=True))
            ds[name] = var.variable.chunk(chunks, name=f"{name}-{tag}")
    if "size" in ds.dims and not (np.diff(ds["size"].values) > 0).all():
        ds = ds.sortby("size")  # a circuit store's sizes added later sit at its end
    return ds


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
