"""The command line: exit statuses, located diagnostics, explain's JSON, tree, schema."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from policycompile._commands.cli import main

from .conftest import WritePolicy

POLICY = """
version: 1
compile:
  backend: eager
targets:
  app.models.**:
    error_on_graph_break: true
  app.models.moe.route:
    error_on_graph_break: false
    reason: data-dependent routing
  app.models.Block:
    compile: {fullgraph: true}
profiles:
  ci:
    targets:
      app.**: {error_on_graph_break: true}
"""


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    status = main(list(argv), out=out)
    return status, out.getvalue()


def test_validate_ok_and_errors(write_policy: WritePolicy) -> None:
    good = write_policy(POLICY, "good.yaml")
    bad = write_policy("version: 1\ntargets:\n  app.f:\n    disabel: true\n", "bad.yaml")
    assert run("validate", str(good)) == (0, "")
    status, out = run("validate", str(good), str(bad))
    assert status == 1
    assert (
        out
        == f"{bad}:4:5: error: unknown key 'disabel' in target 'app.f'; did you mean 'disable'?\n"
    )


def test_validate_json(write_policy: WritePolicy) -> None:
    bad = write_policy("version: 1\ntargets:\n  app.f: {disable: 1}\n")
    status, out = run("validate", "--json", str(bad))
    assert status == 1
    (diag,) = json.loads(out)["diagnostics"]
    assert diag["file"] == str(bad)
    assert (diag["line"], diag["column"], diag["severity"]) == (3, 20, "error")


def test_validate_checks_every_profile(write_policy: WritePolicy) -> None:
    path = write_policy(
        """
        version: 1
        targets:
          app.f: {disable: true}
        profiles:
          fast:
            targets:
              app.f: {compile: {speed: 3}}
        """
    )
    status, out = run("validate", str(path))
    assert status == 1
    assert "unknown compile option 'speed'" in out


def test_usage_errors_exit_2() -> None:
    assert run()[0] == 2
    assert run("frobnicate")[0] == 2
    assert run("explain", "only-one-arg")[0] == 2


def test_explain_json_shape(write_policy: WritePolicy) -> None:
    path = write_policy(POLICY)
    status, out = run("explain", str(path), "app.models.moe.route", "--json")
    assert status == 0
    doc = json.loads(out)
    assert doc["name"] == "app.models.moe.route"
    assert set(doc["settings"]) == {"error_on_graph_break"}  # keys no rule sets are absent
    eogb = doc["settings"]["error_on_graph_break"]
    assert eogb["value"] is False
    assert eogb["rule"] == f"{path}:7"  # the line of the winning pattern
    assert eogb["reason"] == "data-dependent routing"
    assert eogb["lost"] == [
        {
            "pattern": "app.models.**",
            "rule": f"{path}:5",
            "value": True,
            "why": "fewer literal segments (2 < 4)",
        }
    ]


def test_explain_compile_entry_and_profile(write_policy: WritePolicy) -> None:
    path = write_policy(POLICY)
    doc = json.loads(run("explain", str(path), "app.models.Block.forward", "--json")[1])
    settings = doc["settings"]
    assert settings["compile"] == {**settings["compile"], "value": True, "rule": f"{path}:10"}
    assert settings["compile"]["inherited"] is True
    assert settings["compile.fullgraph"]["value"] is True
    assert settings["compile.backend"]["rule"] == f"{path}:3"  # the file-level default
    doc = json.loads(run("explain", str(path), "app.x", "--json", "--profile", "ci")[1])
    assert doc["profile"] == "ci"
    assert doc["settings"]["error_on_graph_break"]["rule"] == f"{path}:15"


def test_explain_text(write_policy: WritePolicy) -> None:
    path = write_policy(POLICY)
    status, out = run("explain", str(path), "app.models.moe.route")
    assert status == 0
    assert out.splitlines() == [
        "app.models.moe.route",
        "  compile: not a compile entry",
        f"  error_on_graph_break = false    'app.models.moe.route' at {path}:7"
        "  # data-dependent routing",
        f"      lost: 'app.models.**' at {path}:5 (true): fewer literal segments (2 < 4)",
    ]
    unreached = run("explain", str(path), "other.fn")[1]
    assert "no rule of the policy reaches" in unreached
    assert "at run time it inherits the error_on_graph_break setting of whatever calls it" in (
        unreached
    )


def test_explain_conflict_is_an_error(
    write_policy: WritePolicy, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_policy(
        "version: 1\ntargets:\n  a.*.f: {disable: true}\n  a.m.*: {disable: false}\n"
    )
    status, _ = run("explain", str(path), "a.m.f")
    assert status == 1
    err = capsys.readouterr().err
    assert f"{path}:3:3: error: conflicting rules for 'a.m.f'" in err
    assert f"({path}:3)" in err and f"({path}:4)" in err


def test_tree(write_policy: WritePolicy) -> None:
    path = write_policy(POLICY)
    status, out = run("tree", str(path))
    assert status == 0
    assert out.splitlines() == [
        f"{path}: 3 rules",
        'compile defaults: backend="eager"',
        "└── app",
        "    └── models",
        "        ├── **    [error_on_graph_break=true]  " + f"{path}:5",
        "        ├── Block    [compile=true, compile.fullgraph=true]  " + f"{path}:10",
        "        └── moe",
        "            └── route    [error_on_graph_break=false]  "
        + f"{path}:7  # data-dependent routing",
    ]


def test_schema_command_prints_the_repository_schema() -> None:
    status, out = run("schema")
    assert status == 0
    repo = Path(__file__).parent.parent / "schemas" / "policy.schema.json"
    assert json.loads(out) == json.loads(repo.read_text())


def test_internal_errors_are_reported_as_bugs(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], write_policy: WritePolicy
) -> None:
    import policycompile._commands.cli as cli

    def boom(*_: object, **__: object) -> None:
        raise ZeroDivisionError("boom")

    monkeypatch.setattr(cli, "tree_text", boom)
    assert run("tree", str(write_policy(POLICY)))[0] == 3
    err = capsys.readouterr().err
    assert "internal error: ZeroDivisionError: boom" in err
    assert "please report it" in err
    assert "Traceback" not in err


def test_console_script_and_module_entry_points(write_policy: WritePolicy) -> None:
    path = write_policy(POLICY)
    exe = Path(sys.executable).parent / "policycompile"
    for cmd in ([str(exe)], [sys.executable, "-m", "policycompile"]):
        result = subprocess.run(
            [*cmd, "validate", str(path)], capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, result.stderr
        bad = subprocess.run(
            [*cmd, "validate", str(path) + ".missing"], capture_output=True, text=True, check=False
        )
        assert bad.returncode == 1
        assert bad.stdout.strip() == f"{path}.missing:1:1: error: no such policy file"


def test_validate_reports_schema_and_torch_errors_in_one_pass(write_policy: WritePolicy) -> None:
    """Four typos, one run: the schema's (an unknown key) and the installed torch's (a
    backend, a compile option, a stance), each at its place."""
    path = write_policy(
        """
        version: 1
        compile:
          backend: inductr
        targets:
          app.step:
            fullgrap: true
          app.train:
            compile: {dynamc: true}
          app.entry:
            compile: true
            stance: fail_on_recompil
        """
    )
    status, out = run("validate", str(path))
    assert status == 1
    found = [line.split(": error: ")[0] for line in out.splitlines()]
    assert found == [f"{path}:3:3", f"{path}:6:5", f"{path}:8:15", f"{path}:11:5"], out
    assert "'inductr'" in out and "'fullgrap'" in out and "'dynamc'" in out
    assert "'fail_on_recompil'" in out
    # and a file with only the installed torch's problems: both of them too
    path.write_text(path.read_text().replace("fullgrap", "fullgraph"))
    status, out = run("validate", str(path))
    assert status == 1 and len(out.splitlines()) == 3, out


def test_validate_reads_every_target_it_can_despite_a_bad_one(write_policy: WritePolicy) -> None:
    """A bad pattern among the targets hides no other error of the file."""
    path = write_policy(
        """
        version: 1
        compile:
          backend: inductr
        targets:
          a.b.f:
            stance: fail_on_recompil
          a..h: {disable: true}
        profiles:
          ci:
            compile: {backend: eagr}
        """
    )
    status, out = run("validate", str(path))
    found = [line.split(": error: ")[0] for line in out.splitlines()]
    assert status == 1 and found == [f"{path}:3:3", f"{path}:6:5", f"{path}:7:5", f"{path}:10:15"]
