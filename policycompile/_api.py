"""The public entry points, thin facades over the stages."""

from __future__ import annotations

import os

from ._load import MAX_BYTES
from ._load import load as _load
from ._policy import Policy
from ._tree import Explanation


def load(
    path: str | os.PathLike[str], *, profile: str | None = None, max_bytes: int = MAX_BYTES
) -> Policy:
    """Load and validate a policy file into a frozen :class:`Policy`.

    :param path: the YAML file.
    :param profile: a profile to layer on top; None reads ``POLICYCOMPILE_PROFILE``.
    :param max_bytes: the largest file accepted (1 MiB by default).
    :raises PolicyError: with file:line:column of the problem.
    """
    return _load(path, profile=profile, max_bytes=max_bytes)


def explain(
    policy: Policy | str | os.PathLike[str], name: str, *, profile: str | None = None
) -> Explanation:
    """Which rule sets each key of ``name``, and which candidates lost and why."""
    if not isinstance(policy, Policy):
        policy = load(policy, profile=profile)
    return policy.explain(name)
