"""Intervention kinds: a registry from ``intervention.kind`` to its spec and its class.

Add a kind: a frozen ``InterventionSpec`` subclass in ``specs.py`` (config values only: the
config checks read it before torch loads) and a module with its ``Intervention`` subclass
(``sources``; ``prepare`` if it needs the task), registered in ``kinds``, plus its conf/
YAML. The kind string is looked up here, once; nothing deeper branches on it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sweep.interventions.specs import SPECS
from sweep.spec import InterventionSpec

if TYPE_CHECKING:
    from sweep.interventions.base import Intervention


def kinds() -> dict[str, type[Intervention]]:
    """Each kind's class (their modules load torch: imported when first asked for)."""
    from sweep.interventions.atp import AtP
    from sweep.interventions.eap import EAP
    from sweep.interventions.mean import Mean
    from sweep.interventions.patch import Patch
    from sweep.interventions.resample import Resample
    from sweep.interventions.zero import Zero

    return {cls.KIND: cls for cls in (Patch, Zero, Mean, Resample, AtP, EAP)}


def build(spec: InterventionSpec) -> Intervention:
    return kinds()[spec.kind](spec)


__all__ = ["SPECS", "build", "kinds"]
