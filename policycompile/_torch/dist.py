"""``torch.distributed`` as the ranks need it: the c10d module, its default store, and what
a store raises (docs/distributed.md)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

#: what a c10d store raises: ``DistStoreError`` (a wait that timed out), ``DistNetworkError``
#: (its server is gone), both ``RuntimeError``; ``OSError`` from the socket below
STORE_ERRORS: tuple[type[BaseException], ...] = (RuntimeError, OSError)


def c10d() -> Any:
    """``torch.distributed.distributed_c10d`` when this torch has it, without importing it
    anew (``import torch`` already does where it exists)."""
    module = sys.modules.get("torch.distributed.distributed_c10d")
    if module is None:
        dist = sys.modules.get("torch.distributed")
        if dist is None or not dist.is_available():
            return None
        import torch.distributed.distributed_c10d as module
    return module


def default_store(c10d: Any) -> Any:
    """The store the default process group rendezvoused on (torchrun's TCPStore)."""
    return c10d._get_default_store()


def is_timeout(exc: BaseException) -> bool:
    """Whether a store error is a wait that timed out (not a store that failed)."""
    import torch.distributed

    return isinstance(exc, torch.distributed.DistStoreError)


def wait(store: Any, keys: Sequence[str], timeout: float) -> tuple[list[int], str | None]:
    """Wait until every key exists: the indexes of those still missing after ``timeout``,
    and what the store raised if it failed otherwise than by timing out."""
    try:
        store.wait(list(keys), timedelta(seconds=timeout))
        return [], None
    except STORE_ERRORS as exc:
        failed = None if is_timeout(exc) else f"{type(exc).__name__}: {exc}"
    missing = []
    for i, key in enumerate(keys):
        try:
            present = store.check([key])
        except STORE_ERRORS as exc:
            failed = failed or f"{type(exc).__name__}: {exc}"
            present = False
        if not present:
            missing.append(i)
    return missing, failed


def get_all(store: Any, keys: Sequence[str]) -> list[bytes]:
    """The values of ``keys``, in one request where the store can."""
    try:
        return list(store.multi_get(list(keys)))
    except (AttributeError, NotImplementedError, RuntimeError):
        # a store without multi_get (some raise RuntimeError "not implemented"); one that
        # failed fails again here, loudly
        return [store.get(k) for k in keys]
