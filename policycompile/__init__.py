"""policycompile: torch.compile settings for whole codebases, from one checked-in YAML policy.

The public names below are imported on first use (PEP 562): a child process of
``policycompile run`` imports ``policycompile._runtime.startup`` through this package at
interpreter start-up, and pays only for what start-up needs (docs/distributed.md).
"""

from __future__ import annotations

from ._errors import PolicyConflictError as PolicyConflictError
from ._errors import PolicyError as PolicyError
from ._errors import PolicyExtendsError as PolicyExtendsError
from ._errors import PolicyFileError as PolicyFileError
from ._errors import PolicyOptionError as PolicyOptionError
from ._errors import PolicyPatternError as PolicyPatternError
from ._errors import PolicyProfileError as PolicyProfileError
from ._errors import PolicyRankError as PolicyRankError
from ._errors import PolicySchemaError as PolicySchemaError
from ._errors import PolicyStateError as PolicyStateError
from ._errors import PolicySyntaxError as PolicySyntaxError
from ._errors import PolicyTargetError as PolicyTargetError
from ._errors import PolicyTorchError as PolicyTorchError
from ._errors import PolicyWarning as PolicyWarning
from ._errors import Position as Position
from ._version import __version__ as __version__

#: ``typing.TYPE_CHECKING`` without importing ``typing`` (start-up cost; mypy knows the name)
TYPE_CHECKING = False

if TYPE_CHECKING:
    from typing import Any

    from ._engine.plan import Plan as Plan
    from ._observe.report import BreakReport as BreakReport
    from ._observe.report import RegionReport as RegionReport
    from ._observe.report import Report as Report
    from ._policy.policy import Policy as Policy
    from ._policy.tree import Explanation as Explanation
    from ._policy.tree import Resolution as Resolution
    from ._runtime.api import apply as apply
    from ._runtime.api import explain as explain
    from ._runtime.api import load as load
    from ._runtime.handle import PolicyHandle as PolicyHandle

#: public name -> the module that defines it, imported when the name is first used
_LAZY = {
    "Plan": "._engine.plan",
    "BreakReport": "._observe.report",
    "RegionReport": "._observe.report",
    "Report": "._observe.report",
    "Policy": "._policy.policy",
    "Explanation": "._policy.tree",
    "Resolution": "._policy.tree",
    "apply": "._runtime.api",
    "explain": "._runtime.api",
    "load": "._runtime.api",
    "PolicyHandle": "._runtime.handle",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'policycompile' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*__all__, "__version__"})


__all__ = [
    "BreakReport",
    "Explanation",
    "Plan",
    "Policy",
    "PolicyConflictError",
    "PolicyError",
    "PolicyExtendsError",
    "PolicyFileError",
    "PolicyHandle",
    "PolicyOptionError",
    "PolicyPatternError",
    "PolicyProfileError",
    "PolicyRankError",
    "PolicySchemaError",
    "PolicyStateError",
    "PolicySyntaxError",
    "PolicyTargetError",
    "PolicyTorchError",
    "PolicyWarning",
    "Position",
    "RegionReport",
    "Report",
    "Resolution",
    "apply",
    "explain",
    "load",
]
