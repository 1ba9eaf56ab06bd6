"""Shared fixtures: writing policy files."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

WritePolicy = Callable[..., Path]


@pytest.fixture
def write_policy(tmp_path: Path) -> WritePolicy:
    """Write a policy (dedented) under tmp_path and return its path."""

    def write(text: str, name: str = "policy.yaml") -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
        return path

    return write


@pytest.fixture(autouse=True)
def _no_profile_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("POLICYCOMPILE_PROFILE", raising=False)
