"""Intervention kinds: a registry from ``intervention.kind`` to its class and spec.

Add a kind: one module with a frozen ``InterventionSpec`` subclass and an ``Intervention``
subclass (``sources``; ``prepare`` if it needs the task), registered here, plus its conf/
YAML. The kind string is looked up here, once; nothing deeper branches on it.
"""

from __future__ import annotations

from sweep.interventions.atp import AtP
from sweep.interventions.base import Context, Estimator, Intervention
from sweep.interventions.eap import EAP
from sweep.interventions.mean import Mean
from sweep.interventions.patch import Patch
from sweep.interventions.resample import Resample
from sweep.interventions.zero import Zero
from sweep.spec import InterventionSpec

INTERVENTIONS: dict[str, type[Intervention]] = {
    cls.KIND: cls for cls in (Patch, Zero, Mean, Resample, AtP, EAP)
}


def build(spec: InterventionSpec) -> Intervention:
    return INTERVENTIONS[spec.kind](spec)


__all__ = ["INTERVENTIONS", "Context", "Estimator", "Intervention", "build"]
