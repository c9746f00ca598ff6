"""Persistence: the results store, a zarr group that ``xarray.open_zarr`` reads directly.

A sweep enters its store one way, ``opening.SweepStore``: recognise the path, take its
lease and check it is this config's before any model loads, then check the work units and
create or grow it. ``writer.ResultStore`` is the only writer of values afterwards;
``read.open_dataset`` opens a store for readers (``sweep.results``, which this package
never imports). ``backends`` (local directories, fsspec URLs), ``lease`` (one driver at a
time), ``layout`` (the format and its checks), ``create`` and ``status`` (progress and
health) complete it. Torch-free.
"""
