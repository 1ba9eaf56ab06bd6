"""``validate``: every error and provable warning of a policy file and each of its profiles,
as located diagnostics."""

from __future__ import annotations

from collections.abc import Sequence

from .._errors import PolicyError, Position
from .lint import Diagnostic, lint
from .load import MAX_BYTES, load


def as_diagnostic(exc: PolicyError, path: str) -> Diagnostic:
    """A located error as ``validate`` lists it (at the top of ``path`` where it has no
    place of its own)."""
    where = exc.position or Position(exc.path or path, 1, 1)
    return Diagnostic(where, exc.severity, exc.message)


def validate_file(
    path: str, *, max_bytes: int = MAX_BYTES, backends: Sequence[str] = ()
) -> list[Diagnostic]:
    """Errors and provable warnings for one policy file and each of its profiles.

    :param backends: backend names to accept besides those torch knows.
    """
    try:
        base = load(path, profile="", max_bytes=max_bytes, backends=backends)
    except PolicyError as exc:
        return sorted(as_diagnostic(e, path) for e in (exc, *exc.others))
    found: set[Diagnostic] = set(lint(base))
    for name in base.profiles:
        try:
            found.update(lint(load(path, profile=name, max_bytes=max_bytes, backends=backends)))
        except PolicyError as exc:
            found.update(as_diagnostic(e, path) for e in (exc, *exc.others))
    return sorted(found)
