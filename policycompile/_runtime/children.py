"""The policy in child processes of ``policycompile run`` (docs/distributed.md).

``run`` puts the policy, profile and audit setting in the environment variable
``POLICYCOMPILE_RUN``, which every child inherits, with the path of a spool directory. A
``.pth`` file installed with the package imports :mod:`policycompile._runtime.startup` at the start
of any Python process that has the variable (the mechanism coverage.py uses for
subprocesses), which applies the policy there; at exit the child writes its report into the
spool, and the parent joins what it finds there into its own.

Every Python process a run starts imports this module: it imports little at first (``json``
only when the variable is parsed, once torch is imported; the report and ``tempfile`` only
when a report is written or read).
"""

from __future__ import annotations

import os

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at start-up
if TYPE_CHECKING:
    from collections.abc import Callable

    from .._observe.report import Report

ENV = "POLICYCOMPILE_RUN"


class Session:
    """What a child needs to apply the parent's policy, and where to report. (A plain class:
    every child imports it at start-up, where ``dataclasses`` would cost more than the rest.)

    :param policy: the policy's absolute path (a child may run in another directory).
    :param sha256: the resolved policy the parent applied: a child loading another one fails.
    :param strict: the parent's override of the file's ``strict`` (``load()``).
    """

    __slots__ = ("audit", "policy", "profile", "rank_check", "sha256", "spool", "strict")

    def __init__(
        self,
        policy: str,
        profile: str | None,
        audit: bool,
        sha256: str,
        spool: str,
        rank_check: bool = True,
        strict: bool | None = None,
    ) -> None:
        self.policy, self.profile, self.audit = policy, profile, audit
        self.sha256, self.spool, self.rank_check, self.strict = sha256, spool, rank_check, strict

    def _fields(self) -> dict[str, object]:
        return {name: getattr(self, name) for name in _FIELDS}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Session) and self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(tuple(self._fields().values()))

    def __repr__(self) -> str:
        return f"Session({', '.join(f'{k}={v!r}' for k, v in self._fields().items())})"

    def to_env(self) -> str:
        import json

        return json.dumps(self._fields(), separators=(",", ":"))

    @classmethod
    def from_env(cls, text: str) -> Session:
        """The session ``text`` describes.

        :raises ValueError: not JSON, or a field missing, unknown or of the wrong type.
        """
        import json

        doc = json.loads(text)
        if not isinstance(doc, dict):
            raise ValueError(f"not a JSON object: {text[:40]!r}")
        unknown = sorted(set(doc) - set(_FIELDS))
        if unknown:
            raise ValueError(f"unknown field {unknown[0]!r}")
        for name, (kinds, required) in _FIELDS.items():
            if name not in doc:
                if required:
                    raise ValueError(f"field {name!r} is missing")
                continue
            value = doc[name]
            if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
                wanted = " or ".join("null" if k is type(None) else k.__name__ for k in kinds)
                raise ValueError(f"field {name!r} must be {wanted}, not {value!r}")
        return cls(**doc)


#: each field of the variable: the JSON types it takes, and whether it must be given
_FIELDS: dict[str, tuple[tuple[type, ...], bool]] = {
    "policy": ((str,), True),
    "profile": ((str, type(None)), True),
    "audit": ((bool,), True),
    "sha256": ((str,), True),
    "spool": ((str,), True),
    "rank_check": ((bool,), False),
    "strict": ((bool, type(None)), False),
}


class exported:
    """Set ``POLICYCOMPILE_RUN`` for the children of the code run inside, with a fresh spool
    directory; both are removed afterwards (an outer run's variable is put back). (A class,
    not ``contextlib``: every child imports this module at start-up.)"""

    def __init__(
        self,
        *,
        policy: str,
        profile: str | None,
        audit: bool,
        sha256: str,
        rank_check: bool,
        strict: bool | None = None,
    ) -> None:
        self._given = (os.path.abspath(policy), profile, audit, sha256, rank_check, strict)
        self._before: str | None = None
        self._spool = ""

    def __enter__(self) -> Session:
        import tempfile

        policy, profile, audit, sha256, rank_check, strict = self._given
        self._spool = tempfile.mkdtemp(prefix="policycompile-")
        session = Session(policy, profile, audit, sha256, self._spool, rank_check, strict)
        self._before = os.environ.get(ENV)
        os.environ[ENV] = session.to_env()
        return session

    def __exit__(self, *exc: object) -> None:
        if self._before is None:
            os.environ.pop(ENV, None)
        else:
            os.environ[ENV] = self._before
        for name in _listing(self._spool):
            _unlink(os.path.join(self._spool, name))
        _unlink(self._spool, os.rmdir)


def _unlink(path: str, remove: Callable[[str], None] = os.unlink) -> None:
    """Remove ``path``, which may be gone already (contextlib.suppress, without importing
    contextlib at start-up)."""
    try:
        remove(path)
    except OSError:
        return


def write(spool: str, report: Report) -> None:
    """Leave this process's report in the spool, replacing the one it left before: written
    aside, then renamed into place, so the parent never reads half a file."""
    import tempfile

    fd, tmp = tempfile.mkstemp(prefix=f".{os.getpid()}-", suffix=".tmp", dir=spool)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(report.to_json(indent=None))
        os.replace(tmp, os.path.join(spool, f"{os.getpid()}.json"))
    except BaseException:
        _unlink(tmp)
        raise


def read(spool: str) -> tuple[list[Report], list[str]]:
    """The reports children left so far, and a warning for each file that is not one."""
    import json

    from .._observe.report import Report

    reports: list[Report] = []
    problems: list[str] = []
    for name in sorted(_listing(spool)):
        if not name.endswith(".json"):
            continue
        path = os.path.join(spool, name)
        try:
            with open(path, encoding="utf-8") as f:
                reports.append(Report.from_dict(json.load(f)))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            problems.append(f"a child process's report could not be read ({name}: {exc})")
    return reports, problems


def _listing(spool: str) -> list[str]:
    try:
        return os.listdir(spool)
    except OSError:
        return []
