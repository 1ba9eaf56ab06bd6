"""Loading valid policies: layering of extends and profiles, the result's data, torch kept out."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import policycompile as pc

from .conftest import WritePolicy

BASE = """
version: 1
strict: false
compile:
  backend: eager
  dynamic: false
targets:
  app.models.**:
    error_on_graph_break: true
  app.models.moe.route:
    error_on_graph_break: false
    reason: data-dependent
  app.train.step:
    fullgraph: true
profiles:
  ci:
    strict: true
    targets:
      app.**: {error_on_graph_break: true}
"""


def test_layers_extend_key_by_key(write_policy: WritePolicy) -> None:
    write_policy(BASE, "base.yaml")
    path = write_policy(
        """
        version: 1
        extends: base.yaml
        compile:
          dynamic: true
        targets:
          app.models.moe.route:
            disable: true
          app.train.step:
            compile: {mode: max-autotune}
        profiles:
          ci:
            targets:
              app.models.moe.route: {error_on_graph_break: true}
        """,
        "team/../team.yaml",
    )
    policy = pc.load(path)
    assert policy.strict is False
    route = policy.resolve("app.models.moe.route")
    # the base's key stays, the extending file adds one: the same pattern merges key by key
    assert route.get("error_on_graph_break") is False
    assert route.get("disable") is True
    assert route.decisions["disable"].position.path.endswith("team.yaml")
    assert route.decisions["error_on_graph_break"].position.path.endswith("base.yaml")
    step = policy.resolve("app.train.step")
    assert step.compile_options == {
        "backend": "eager",
        "dynamic": True,
        "fullgraph": True,
        "mode": "max-autotune",
    }
    assert [Path(s).name for s in policy.sources] == ["team.yaml", "base.yaml"]

    ci = pc.load(path, profile="ci")
    assert ci.strict is True
    assert ci.profile == "ci"
    assert ci.resolve("app.models.moe.route").get("error_on_graph_break") is True
    assert ci.resolve("app.other.fn").get("error_on_graph_break") is True
    assert policy.resolve("app.other.fn").get("error_on_graph_break") is None
    assert ci.fingerprint != policy.fingerprint


def test_profile_from_environment(
    write_policy: WritePolicy, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_policy(BASE)
    monkeypatch.setenv("POLICYCOMPILE_PROFILE", "ci")
    assert pc.load(path).profile == "ci"
    assert pc.load(path, profile="").profile is None  # "" turns the variable off
    monkeypatch.setenv("POLICYCOMPILE_PROFILE", "nightly")
    with pytest.raises(pc.PolicyProfileError) as info:
        pc.load(path)
    assert "unknown profile 'nightly'" in str(info.value)
    assert "the policy defines: ci" in str(info.value)


def test_unknown_profile_suggests(write_policy: WritePolicy) -> None:
    with pytest.raises(pc.PolicyProfileError) as info:
        pc.load(write_policy(BASE), profile="ci2")
    assert "did you mean 'ci'?" in str(info.value)
    assert isinstance(info.value, LookupError)


def test_policy_is_frozen_hashable_and_fingerprinted(write_policy: WritePolicy) -> None:
    a = pc.load(write_policy(BASE, "a.yaml"))
    # other text, the same data: the same fingerprint
    b = pc.load(write_policy(BASE.replace("backend: eager", "backend: 'eager'"), "b.yaml"))
    assert a.fingerprint == b.fingerprint
    assert len(a.fingerprint) == 64
    assert hash(a) == hash(pc.load(a.path))  # equal data, equal hash
    with pytest.raises(AttributeError):
        a.strict = True  # type: ignore[misc]
    assert {a, a} == {a}
    c = pc.load(write_policy(BASE.replace("backend: eager", "backend: inductor"), "c.yaml"))
    assert c.fingerprint != a.fingerprint


def test_fingerprint_ignores_file_order(write_policy: WritePolicy) -> None:
    one = write_policy(
        "version: 1\ntargets:\n  a.b: {disable: true}\n  a.c: {disable: false}\n", "1.yaml"
    )
    two = write_policy(
        "targets:\n  a.c: {disable: false}\n  a.b: {disable: true}\nversion: 1\n", "2.yaml"
    )
    assert pc.load(one).fingerprint == pc.load(two).fingerprint


def test_compile_options_are_checked_against_installed_torch(write_policy: WritePolicy) -> None:
    import torch

    policy = pc.load(
        write_policy("version: 1\ncompile: {backend: eager}\ntargets:\n  a.f: {compile: true}\n")
    )
    assert policy.torch_version == str(torch.__version__)
    with pytest.raises(pc.PolicyOptionError) as info:
        pc.load(write_policy("version: 1\ntargets:\n  a.f:\n    compile: {speed: 11}\n", "x.yaml"))
    assert f"torch {torch.__version__}" in str(info.value)
    assert str(info.value).startswith(
        f"{info.value.path}:4:15: error: unknown compile option 'speed'"
    )


def test_validate_without_compile_options_does_not_import_torch(tmp_path: Path) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text("version: 1\ntargets:\n  a.b.**: {error_on_graph_break: true}\n")
    code = (
        "import sys, policycompile\n"
        "from policycompile._commands.cli import main\n"
        f"status = main(['validate', {str(policy)!r}])\n"
        "assert status == 0, status\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


def test_strict_defaults_to_true(write_policy: WritePolicy) -> None:
    assert pc.load(write_policy("version: 1\ntargets:\n  a.b: {disable: true}\n")).strict is True


def test_loads_resolves_colon_names(write_policy: WritePolicy) -> None:
    policy = pc.load(
        write_policy("version: 1\ntargets:\n  pkg.mod:Outer.Inner.fn: {disable: true}\n")
    )
    assert policy.resolve("pkg.mod:Outer.Inner.fn").get("disable") is True
    assert policy.resolve("pkg:mod.Outer.Inner.fn").get("disable") is None


def test_yaml_keys_that_are_not_strings_become_strings(write_policy: WritePolicy) -> None:
    # 'on'/'yes' are YAML 1.1 booleans; a pattern can never be one, so the error is a pattern one
    with pytest.raises(pc.PolicyPatternError):
        pc.load(write_policy("version: 1\ntargets:\n  1.5: {disable: true}\n"))


def test_extends_list_later_wins(write_policy: WritePolicy) -> None:
    write_policy("version: 1\ntargets:\n  a.f: {error_on_graph_break: true}\n", "one.yaml")
    write_policy("version: 1\ntargets:\n  a.f: {error_on_graph_break: false}\n", "two.yaml")
    top = write_policy(
        "version: 1\nextends: [one.yaml, two.yaml]\ntargets:\n  a.g: {disable: true}\n"
    )
    assert pc.load(top).resolve("a.f").get("error_on_graph_break") is False


def test_a_rule_is_the_same_rule_whatever_path_loads_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two checkouts of one policy (two ranks, or a child given the absolute path): every
    rule, those of a file it extends too, is the same ``RuleRef``; only its shown file
    differs."""
    for checkout in ("node0", "node1/deeper"):
        root = tmp_path / checkout / "conf"
        (root / "shared").mkdir(parents=True)
        (root / "shared" / "base.yaml").write_text(
            "version: 1\ntargets:\n  pkg.**: {error_on_graph_break: true}\n"
        )
        (root / "p.yaml").write_text(
            "version: 1\nextends: shared/base.yaml\ntargets:\n  pkg.f: {disable: true}\n"
        )
    monkeypatch.chdir(tmp_path / "node0")
    here = pc.load("conf/p.yaml", profile="")
    there = pc.load(tmp_path / "node1/deeper/conf/p.yaml", profile="")
    refs = {here.ref(r) for r in here.rules}
    assert refs == {there.ref(r) for r in there.rules}
    assert {(r.pattern, r.origin, r.line) for r in refs} == {
        ("pkg.**", "shared/base.yaml", 3),
        ("pkg.f", "p.yaml", 4),
    }
    assert {r.file for r in refs} == {"conf/p.yaml", "conf/shared/base.yaml"}
    assert {there.ref(r).file for r in there.rules} != {r.file for r in refs}
