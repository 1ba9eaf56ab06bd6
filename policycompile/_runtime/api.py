"""The public entry points, thin facades over the stages."""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Iterable

from .._errors import PolicyStateError, PolicyTorchError
from .._policy.load import MAX_BYTES
from .._policy.load import load as _load
from .._policy.policy import Policy
from .._policy.tree import Explanation
from .._torch import catalog
from .children import Session
from .handle import PolicyHandle
from .ranks import rank_check_from_env
from .state import STATE


def load(
    path: str | os.PathLike[str],
    *,
    profile: str | None = None,
    max_bytes: int = MAX_BYTES,
    backends: Iterable[str] = (),
    strict: bool | None = None,
) -> Policy:
    """Load and validate a policy file into a frozen :class:`Policy`.

    :param path: the YAML file.
    :param profile: a profile to layer on top; None reads ``POLICYCOMPILE_PROFILE``.
    :param max_bytes: the largest file accepted (1 MiB by default).
    :param backends: backend names to accept besides those torch knows now (the program
        registers its own before ``apply``; this is for checking without it).
    :param strict: overrides the file's ``strict`` (None: as the file says, true by default).
    :raises PolicyError: with file:line:column of the problem.
    """
    return _load(path, profile=profile, max_bytes=max_bytes, backends=backends, strict=strict)


def explain(
    policy: Policy | str | os.PathLike[str], name: str, *, profile: str | None = None
) -> Explanation:
    """Which rule sets each key of ``name``, and which candidates lost and why."""
    if not isinstance(policy, Policy):
        policy = load(policy, profile=profile)
    return policy.explain(name)


def _caller() -> str:
    frame = sys._getframe(2)
    return f"{frame.f_code.co_filename}:{frame.f_lineno}"


def apply(
    policy: Policy | str | os.PathLike[str],
    *,
    profile: str | None = None,
    audit: bool = False,
    rank_check: bool | None = None,
) -> PolicyHandle:
    """Apply a policy: wrap every matching object in imported modules now, and in modules
    imported later right after they execute.

    :param policy: a policy file, or a :class:`Policy` from :func:`load`.
    :param profile: the profile to select when ``policy`` is a path.
    :param audit: record every graph break the policy forbids instead of raising, so one run
        lists all of them (``handle.report().violations``).
    :param rank_check: once a ``torch.distributed`` process group exists, check that every
        rank applies the same resolved policy (docs/distributed.md); None reads
        ``POLICYCOMPILE_RANK_CHECK`` (``0`` turns it off), on by default.
    :returns: a handle whose ``undo()`` restores everything; also a context manager.
    :raises PolicyError: the policy is invalid, an exact target is missing (``strict``),
        a target cannot be patched, or a policy is already applied. Nothing stays patched.
    """
    if not isinstance(policy, Policy):
        policy = load(policy, profile=profile)
    if rank_check is None:
        rank_check = rank_check_from_env()
    return _apply(policy, _caller(), audit=audit, rank_check=rank_check)


def apply_session(session: Session, *, hold: Iterable[str] = ()) -> PolicyHandle:
    """Apply the policy of a ``policycompile run`` in one of its child processes.

    :param hold: modules left unpatched until released (a main module still executing).
    :raises PolicyError: the policy cannot be loaded, or is not the one the parent applied
        (the file changed since).
    """
    policy = load(session.policy, profile=session.profile or "", strict=session.strict)
    if policy.fingerprint != session.sha256:
        raise PolicyStateError(
            "the policy file changed since `policycompile run` started: this child process "
            f"would apply another policy than its parent (sha256 {policy.fingerprint[:12]} "
            f"here, {session.sha256[:12]} there)",
            path=policy.path,
        )
    return _apply(
        policy,
        f"policycompile run (child process {os.getpid()})",
        audit=session.audit,
        rank_check=session.rank_check,
        hold=frozenset(hold),
    )


def _undone(handle: PolicyHandle) -> None:
    with STATE.lock:
        if STATE.active is handle:
            STATE.active = None


def _apply(
    policy: Policy,
    applied_at: str,
    *,
    audit: bool,
    rank_check: bool,
    hold: frozenset[str] = frozenset(),
) -> PolicyHandle:
    problem = catalog.version_problem()
    if problem is not None:  # a Policy from elsewhere: the same one line as load gives
        raise PolicyTorchError(problem, path=policy.path)
    import torch  # noqa: F401  - the wrappers are torch's; import it before taking the lock

    with STATE.lock:
        if STATE.active is not None:
            first = STATE.active
            raise PolicyStateError(
                f"a policy is already applied: {first.policy.path} (applied at "
                f"{first.applied_at}); call undo() on its handle before applying another",
                path=policy.path,
            )
        handle = PolicyHandle(
            policy, applied_at, audit=audit, rank_check=rank_check, hold=hold, on_undone=_undone
        )
        STATE.active = handle
    # Patching allocates many small objects; a full collection over torch's heap in the middle
    # of it costs more than the patching itself, and nothing here is garbage yet.
    collecting = gc.isenabled()
    gc.disable()
    try:
        handle.start()
    except BaseException:
        handle.undo()
        raise
    finally:
        if collecting:
            gc.enable()
    return handle
