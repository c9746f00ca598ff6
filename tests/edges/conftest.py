"""The shipped induction model's edge stores and circuits, shared by the circuit tests."""

from __future__ import annotations

from pathlib import Path

import pytest

import sweep
from sweep.circuit import main as circuit_main


@pytest.fixture(scope="session")
def induction(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The shipped induction model's edges, exactly and by EAP and EAP-IG (noising: the
    direction a circuit ablates in), and each one's circuits (``NAME_circuit``); and its
    edges under mean ablation, exactly and by EAP (``mean``, ``eap_mean``: no circuits)."""
    root = tmp_path_factory.mktemp("induction")
    common = ["grid=edges", "store.plots=false", "runner.progress=false"]
    noise = "intervention.direction=noise"
    stores = {
        "exact": [noise],
        "eap": ["intervention=eap", noise],
        "eapig": ["intervention=eap", "intervention.steps=5", noise],
    }
    means = {
        "mean": ["intervention=mean"],
        "eap_mean": ["intervention=eap", "intervention.ablation=mean"],
    }
    out = {}
    for name, extra in (stores | means).items():
        sweep.run([*common, *extra, f"store.path={root / name}.zarr"])
        out[name] = root / f"{name}.zarr"
    for name in stores:
        circuit_main([str(out[name]), "--sizes", "10,20,30", "store.plots=false",
                      "runner.progress=false"])  # fmt: skip
        out[f"{name}_circuit"] = root / f"{name}.circuit.zarr"
    return out
