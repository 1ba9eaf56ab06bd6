"""Shared fixtures and helpers: writing policy files, running a fresh interpreter."""

from __future__ import annotations

import os
import subprocess
import sys
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


ROOT = Path(__file__).parent.parent


def python(
    *args: str, cwd: Path, timeout: float = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python ARGS`` in a fresh process, in ``cwd``, with this checkout importable."""
    full = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    full["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(cwd), str(ROOT), os.environ.get("PYTHONPATH")])
    )
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env=full,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
