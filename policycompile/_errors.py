"""The PolicyError family: every problem a user can cause, located at file:line:column."""

from __future__ import annotations


class Position(tuple[str, int, int]):
    """A place in a policy file; ``line`` and ``column`` count from 1. Ordered, hashable and
    immutable (a tuple, not a dataclass: every child process of a run imports this module at
    start-up, and ``dataclasses`` costs more than the rest of that start-up)."""

    __slots__ = ()

    def __new__(cls, path: str, line: int, column: int) -> Position:
        return super().__new__(cls, (path, line, column))

    @property
    def path(self) -> str:
        return self[0]

    @property
    def line(self) -> int:
        return self[1]

    @property
    def column(self) -> int:
        return self[2]

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.column}"

    def __repr__(self) -> str:
        return f"Position(path={self.path!r}, line={self.line}, column={self.column})"

    @property
    def short(self) -> str:
        """``path:line``, the form used for rule provenance."""
        return f"{self.path}:{self.line}"


class PolicyError(Exception):
    """Root of every error policycompile raises for a problem in a policy or its use.

    :param message: what is wrong, one sentence.
    :param position: where, when the problem has a place in a file.
    :param rule: the pattern of the rule concerned, if any.

    ``others`` holds the further errors found in the same pass over the file (``validate``
    lists them all; raising reports the first).
    """

    severity = "error"

    def __init__(
        self,
        message: str,
        position: Position | None = None,
        *,
        path: str | None = None,
        rule: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.position = position
        self.path = position.path if position is not None else path
        self.line = position.line if position is not None else None
        self.column = position.column if position is not None else None
        self.rule = rule
        self.others: tuple[PolicyError, ...] = ()

    def __str__(self) -> str:
        if self.position is not None:
            where = f"{self.position}: "
        elif self.path is not None:
            where = f"{self.path}: "
        else:
            where = ""
        return f"{where}{self.severity}: {self.message}"


class PolicyFileError(PolicyError, OSError):
    """The policy file (or a file it extends) cannot be read, or is too large."""


class PolicySyntaxError(PolicyError, ValueError):
    """Not acceptable YAML: a syntax error, a duplicate key, a tag, an alias bomb, bad bytes."""


class PolicySchemaError(PolicyError, ValueError):
    """Well-formed YAML that does not follow the policy format (unknown key, wrong type, ...)."""


class PolicyPatternError(PolicyError, ValueError):
    """A target pattern that is not dotted segments of identifiers, ``*`` and ``**``."""


class PolicyExtendsError(PolicyError, ValueError):
    """An ``extends`` entry that is missing or that forms a cycle."""


class PolicyProfileError(PolicyError, LookupError):
    """A profile was asked for that the policy does not define."""


class PolicyOptionError(PolicyError, ValueError):
    """A compile option that the installed ``torch.compile`` does not accept."""


class PolicyConflictError(PolicyError, ValueError):
    """Two equally specific rules give different values to the same key of one name."""


class PolicyTargetError(PolicyError, LookupError):
    """A rule names an object that does not exist or cannot be patched."""


class PolicyStateError(PolicyError, RuntimeError):
    """A policy was applied while another one is active, or a handle was misused."""


class PolicyRankError(PolicyError, RuntimeError):
    """The ranks of a torch.distributed job do not apply the same policy."""


class PolicyTorchError(PolicyError, RuntimeError):
    """The installed torch is older than policycompile supports (or is missing)."""


class PolicyWarning(UserWarning):
    """Something a policy asked for could not be done, and ``strict: false`` allows it."""
