"""All process-wide state of policycompile, on one object under one lock: the applied policy,
and what a child process of ``policycompile run`` set up at start-up.

The lock is never held while importing or running user code. (Caches that only memoise,
such as the subclasses the import hook makes for watched specs, are not state.)
"""

from __future__ import annotations

import _thread

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at start-up
if TYPE_CHECKING:  # the start-up path imports this module: it stays light
    import threading

    from .._engine.hook import PolicyFinder
    from .children import Session
    from .handle import PolicyHandle


class Startup:
    """A child process of ``policycompile run`` (``startup.py``, docs/distributed.md)."""

    def __init__(self) -> None:
        self.started = False  # a .pth seen twice (a venv's lib64 link) starts it once
        self.text: str | None = None  # the variable, read at start-up
        self.session: Session | None = None  # ... parsed once torch is imported
        self.watch: PolicyFinder | None = None  # waits for torch to be imported
        self.handle: PolicyHandle | None = None
        self.prepared = False  # multiprocessing prepared the parent's main module
        self.main_patched = False  # ... and it was patched
        self.pending: threading.Event | None = None  # the report writer has something to save
        self.writer: int | None = None  # the process whose writer thread that is
        self.told = False  # the report could not be saved, and this process said so
        #: the main process of ``policycompile run``: the run its forked processes report to
        self.forks: tuple[PolicyHandle, Session] | None = None
        self.fork_hook = False  # os.register_at_fork was called (it cannot be undone)


class State:
    """The one process-wide object. (Plain classes: start-up imports this module.)"""

    def __init__(self) -> None:
        self.lock = _thread.RLock()  # threading's own RLock, without importing threading
        self.active: PolicyHandle | None = None
        self.startup = Startup()


STATE = State()
