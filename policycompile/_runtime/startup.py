"""Start-up of a child process of ``policycompile run``: imported by the package's ``.pth``
file when ``POLICYCOMPILE_RUN`` is set (see :mod:`policycompile._children`).

The policy is applied the moment ``torch`` finishes importing, before any code of the child
can compile anything; a child that never imports torch pays only for this module and the
few it imports (``benchmarks/startup.py``).
A child that cannot apply the policy stops with a message, rather than run without it.

- multiprocessing children (spawn, forkserver): the parent's main module is re-run as
  ``__mp_main__``; it is patched once it has run, before the child unpickles its target.
- a child started as ``python script.py``: everything it imports is patched; its own
  top-level functions cannot be (the interpreter runs it, not ``policycompile run``), which
  is said in a warning when the policy reaches them.
- the child's report goes to the parent's spool at exit (``atexit``; forkserver children,
  which leave through ``os._exit``, from multiprocessing's exit finalizers).
"""

from __future__ import annotations

import atexit
import itertools
import os
import sys
import time
import types

from .children import ENV, Session, write
from .state import STATE

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at start-up
if TYPE_CHECKING:
    import threading
    from typing import Any, NoReturn

    from .handle import PolicyHandle

_STARTUP = STATE.startup


class _Anchor:
    """What multiprocessing's after-fork registry keys our callback on (held weakly)."""


_ANCHOR = _Anchor()


def _is_policycompile(argv: list[str]) -> bool:
    """A ``policycompile`` command applies (or only reads) the policy its own way."""
    args = argv[1:]
    if args and os.path.basename(args[0]) in ("policycompile", "policycompile.exe"):
        return True
    return any(a == "-m" and b == "policycompile" for a, b in itertools.pairwise(args))


def _is_torch_worker(argv: list[str]) -> bool:
    """torch's own helper processes (Inductor's compile workers) compile nothing of the
    program's; applying a policy there would only slow them down."""
    return any("compile_worker" in a and "torch" in a for a in argv[1:])


def main() -> None:
    text = os.environ.get(ENV)
    argv = list(getattr(sys, "orig_argv", sys.argv))
    if not text or _is_policycompile(argv) or _is_torch_worker(argv):
        return
    with STATE.lock:
        if _STARTUP.started:
            return  # a .pth seen twice (a venv's lib64 link) imports this module once anyway
        _STARTUP.started = True
    # read, not parsed: parsing (json, hence re) is paid once torch is imported, where the
    # policy is applied; a child that never imports torch compiles nothing
    _STARTUP.text = text
    # multiprocessing starts its children as `python [flags] -c "from multiprocessing..."`
    command = " ".join(argv[1:])
    if "from multiprocessing." in command:
        _hook_multiprocessing(forkserver="from multiprocessing.forkserver import" in command)
    if "torch" in sys.modules:
        _apply(at_startup=True)
        return
    from .._engine.hook import PolicyFinder

    finder = PolicyFinder(lambda name: name == "torch", lambda module, fresh: _apply())
    _STARTUP.watch = finder
    finder.install()


def _fail(message: str, *, at_startup: bool) -> NoReturn:
    """Stop this process: it cannot run under the policy its parent runs under. During
    interpreter start-up (a ``.pth`` file) only ``os._exit`` stops it without a fatal-error
    dump; later, inside the import of torch, ``SystemExit`` lets the process clean up."""
    sys.stderr.write(f"policycompile: process {os.getpid()}: {message}\n")
    sys.stderr.flush()
    if at_startup:
        os._exit(1)
    raise SystemExit(1)


def _apply(*, at_startup: bool = False) -> None:
    watch, _STARTUP.watch = _STARTUP.watch, None
    if watch is not None:
        watch.uninstall()
    if _STARTUP.handle is not None or _STARTUP.text is None:
        return
    try:
        session = Session.from_env(_STARTUP.text)
    except (ValueError, TypeError) as exc:
        _fail(
            f"{ENV} is not valid ({exc}); unset it, or start the program with policycompile run",
            at_startup=at_startup,
        )
    _STARTUP.session = session
    from .._errors import PolicyError
    from .api import apply_session

    try:
        handle = apply_session(session, hold=("__main__", "__mp_main__"))
    except PolicyError as exc:
        _fail(f"cannot apply the policy of policycompile run: {exc}", at_startup=at_startup)
    _STARTUP.handle = handle
    from .compiles import ProgramCompiles

    # the child's own torch.compile calls are regions, as in its parent (never undone: the
    # child ends with its policy)
    ProgramCompiles(handle.observer).install()
    if _STARTUP.prepared:  # torch first imported by the child's target, not its main
        _patch_mp_main()
    _warn_unpatched_main(handle)
    handle.observer.listeners.append(_changed)
    atexit.register(_flush)
    _flush_at_os_exit()
    # a process forked from this one (multiprocessing's fork context) reports only its own
    os.register_at_fork(after_in_child=handle.observer.forget_after_fork)


def _flush_at_os_exit() -> None:
    """``os._exit`` skips ``atexit``: save the report first (a process forked from this
    one, as multiprocessing's fork workers are, leaves that way, with what it counted
    itself: see ``Observer.forget_after_fork``)."""
    real = os._exit

    def _exit(status: int) -> NoReturn:
        try:
            _flush()
        finally:  # whatever happens, the process leaves as it asked
            real(status)

    os._exit = _exit


def adopt_forks(handle: PolicyHandle, session: Session) -> None:
    """Under ``policycompile run``, in its main process: a process forked from it (fork
    context) reports what it compiles itself, as the run's other children do; until
    :func:`forget_forks` at the run's end."""
    with STATE.lock:
        _STARTUP.forks = (handle, session)
        if not _STARTUP.fork_hook:
            _STARTUP.fork_hook = True
            os.register_at_fork(after_in_child=_forked)


def forget_forks() -> None:
    """The run ended: a process forked from now on reports nothing."""
    _STARTUP.forks = None


def _forked() -> None:
    forks = _STARTUP.forks
    if forks is None or _STARTUP.handle is not None:
        return  # no run, or a child of the run that already reports (its own fork hook)
    handle, session = forks
    _STARTUP.handle, _STARTUP.session = handle, session
    handle.observer.forget_after_fork()
    handle.observer.listeners.append(_changed)
    atexit.register(_flush)
    _flush_at_os_exit()


def _warn_unpatched_main(handle: Any) -> None:
    """A ``python script.py`` child: the policy reaches functions the script defines, which
    only ``policycompile run`` could patch."""
    from .._engine.targets import policy_module_name
    from .mainmodule import defined_after

    main = sys.modules.get("__main__")
    file = getattr(main, "__file__", None)
    name = policy_module_name(main) if main is not None else None
    if not isinstance(file, str) or name is None or not handle.policy.tree.covers_module(name):
        return
    reached = [d for d in defined_after(file, 0) if handle.policy.tree.matches(f"{name}:{d}")]
    if reached:
        handle.warn(
            f"{name}: {', '.join(reached)} not patched in child process {os.getpid()}: it was "
            f"started as `python {file}`, which runs the script itself; start it with "
            f"`policycompile run {handle.policy.path} {file}` to patch what it defines"
        )


def _patch_mp_main() -> None:
    """multiprocessing re-ran the parent's main module as ``__mp_main__``: patch it now, as
    ``policycompile run`` patched it in the parent, before the child's target is unpickled
    from it.

    multiprocessing runs it with runpy and copies the result into a fresh module, so the
    functions' globals are another dict than the module's: a function patched on the module
    is put into that dict too, where the main module's own code looks it up. (A child never
    undoes its policy: it ends with it.)
    """
    _STARTUP.prepared = True
    handle = _STARTUP.handle
    module = sys.modules.get("__mp_main__")
    if handle is None or not isinstance(module, types.ModuleType) or _STARTUP.main_patched:
        return
    _STARTUP.main_patched = True
    handle.release("__mp_main__")
    if not handle.covers(module):
        return
    from .._errors import PolicyError

    try:
        # as `policycompile run` patches the parent's main module: what it defines, with a
        # rule naming something it does not define left unused rather than an error
        done = handle.patch_module(module, partial=True)
    except PolicyError as exc:
        _fail(f"cannot apply the policy to the main module: {exc}", at_startup=False)
    handle.rebind_aliases([module], done)
    own = vars(module)
    namespaces = {
        id(g): g
        for value in list(own.values())
        if isinstance(value, types.FunctionType)
        and (g := value.__globals__) is not own
        and g.get("__name__") == "__mp_main__"
    }
    for namespace in namespaces.values():
        for record in done:
            if record.owner is module and namespace.get(record.attr) is record.original:
                namespace[record.attr] = record.new


def _hook_multiprocessing(*, forkserver: bool) -> None:
    import multiprocessing.spawn as spawn
    import multiprocessing.util as util

    prepare, import_main_path = spawn.prepare, spawn.import_main_path

    def prepare_then_patch(data: Any) -> None:
        prepare(data)
        _patch_mp_main()

    def import_then_patch(main_path: str) -> None:
        import_main_path(main_path)
        _patch_mp_main()

    spawn.prepare = prepare_then_patch
    spawn.import_main_path = import_then_patch
    if forkserver:
        # Children of the fork server leave through os._exit: report from multiprocessing's
        # exit finalizers, registered afresh in each child (the registry is cleared there).
        util.register_after_fork(_ANCHOR, lambda _: util.Finalize(None, _flush, exitpriority=0))


def _changed() -> None:
    """Something was recorded: save the report soon, from a thread of this process (a
    DataLoader worker is often terminated rather than left to exit)."""
    pending = _STARTUP.pending
    if pending is None or _STARTUP.writer != os.getpid():  # first time in this process
        import threading  # once something was recorded: torch imported it already

        pending = _STARTUP.pending = threading.Event()
        _STARTUP.writer = os.getpid()
        threading.Thread(
            target=_writer, args=(pending,), name="policycompile-report", daemon=True
        ).start()
    pending.set()


def _writer(pending: threading.Event) -> None:
    while True:
        pending.wait()
        time.sleep(0.05)  # one write for a burst of graphs and breaks
        pending.clear()
        _flush()


def _flush() -> None:
    """Save this process's report to the parent's spool (again: it replaces the last)."""
    handle, session = _STARTUP.handle, _STARTUP.session
    if handle is None or session is None:
        return
    with STATE.lock:
        try:
            write(session.spool, handle.report())
        except OSError as exc:  # the parent is gone, or removed its spool: say so, do not crash
            if not _STARTUP.told:
                _STARTUP.told = True
                sys.stderr.write(f"policycompile: process {os.getpid()}: report not saved: {exc}\n")


main()
