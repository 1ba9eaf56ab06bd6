"""All process-wide state of policycompile, on one object under one lock: the applied policy,
and what a child process of ``policycompile run`` set up at start-up.

The lock is never held while importing or running user code. (Caches that only memoise,
such as the subclasses the import hook makes for watched specs, are not state.)
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .children import Session

if TYPE_CHECKING:  # the start-up path imports this module: it stays light
    from .._engine.hook import PolicyFinder
    from .handle import PolicyHandle


@dataclass
class Startup:
    """A child process of ``policycompile run`` (``startup.py``, docs/distributed.md)."""

    started: bool = False  # a .pth seen twice (a venv's lib64 link) starts it once
    session: Session | None = None
    watch: PolicyFinder | None = None  # waits for torch to be imported
    handle: PolicyHandle | None = None
    prepared: bool = False  # multiprocessing prepared the parent's main module
    main_patched: bool = False  # ... and it was patched
    pending: threading.Event | None = None  # the report writer has something to save
    writer: int | None = None  # the process whose writer thread that is (a fork has none)
    told: bool = False  # the report could not be saved, and this process said so


@dataclass
class State:
    """The one process-wide object."""

    lock: threading.RLock = field(default_factory=threading.RLock)
    active: PolicyHandle | None = None
    startup: Startup = field(default_factory=Startup)


STATE = State()
