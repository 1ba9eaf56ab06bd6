"""policycompile: torch.compile settings for whole codebases, from one checked-in YAML policy."""

import logging

from ._engine.plan import Plan as Plan
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
from ._errors import PolicyWarning as PolicyWarning
from ._errors import Position as Position
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
from ._version import __version__ as __version__

# Quiet by default: what was patched, skipped and why is logged here for those who ask.
logging.getLogger("policycompile").addHandler(logging.NullHandler())

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
    "PolicyWarning",
    "Position",
    "RegionReport",
    "Report",
    "Resolution",
    "apply",
    "explain",
    "load",
]
