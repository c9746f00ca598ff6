"""``python -m sweep.status STORE [--verify]`` and ``sweep.status(path)``: a store's
progress and health (``sweep.store.status``).

The module itself is callable, so ``sweep.status(path)`` works whether ``sweep.status``
names this module (once imported) or the function.
"""

import sys
import types

from sweep.store.status import StoreStatus, main, status

__all__ = ["StoreStatus", "main", "status"]


class _CallableModule(types.ModuleType):
    def __call__(self, path: str, verify: bool = False) -> StoreStatus:
        return status(path, verify)


sys.modules[__name__].__class__ = _CallableModule

if __name__ == "__main__":
    main()
