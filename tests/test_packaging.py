"""What ships: the schema inside the wheel is the repository's, bundled policies validate,
check-jsonschema agrees, the pre-commit hook is well-formed."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from policycompile._commands.cli import main

ROOT = Path(__file__).parent.parent
SCHEMA = ROOT / "schemas" / "policy.schema.json"
POLICIES = sorted((ROOT / "policies").glob("*.yaml"))


def test_wheel_carries_the_repository_schema(tmp_path: Path) -> None:
    pytest.importorskip("hatchling")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
    )
    (wheel,) = tmp_path.glob("policycompile-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        assert "policycompile/py.typed" in names
        shipped = zf.read("policycompile/policy.schema.json")
        startup = zf.read("policycompile.pth")  # at the root: site-packages runs it
        entry_points = zf.read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert shipped == SCHEMA.read_bytes()
    assert startup == (ROOT / "startup" / "policycompile.pth").read_bytes()
    assert "policycompile = policycompile._commands.cli:run" in entry_points


def test_schema_is_draft_2020_12_with_descriptions() -> None:
    import jsonschema

    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"

    def objects(node: object, where: str) -> list[tuple[str, dict[str, object]]]:
        found = []
        if isinstance(node, dict):
            if node.get("type") == "object" and "properties" in node:
                found.append((where, node))
            for key, value in node.items():
                found.extend(objects(value, f"{where}/{key}"))
        elif isinstance(node, list):
            for i, value in enumerate(node):
                found.extend(objects(value, f"{where}/{i}"))
        return found

    for where, obj in objects(schema, "#"):
        assert obj.get("additionalProperties") is False, where
        for key, prop in obj["properties"].items():  # type: ignore[attr-defined]
            assert prop.get("description") and prop.get("markdownDescription"), f"{where}/{key}"
            assert "examples" in prop or key in (
                "name",
                "disable",
                "strict",
                "isolate_recompiles",
                "recompile_limit",
                "shapes_spec",
            ), f"{where}/{key}"


@pytest.mark.parametrize("policy", POLICIES, ids=lambda p: p.name)
def test_bundled_policies_validate_cleanly(policy: Path) -> None:
    out = io.StringIO()
    assert main(["validate", str(policy)], out=out) == 0
    assert out.getvalue() == ""  # no errors and no warnings


def test_check_jsonschema_accepts_bundled_policies() -> None:
    exe = shutil.which("check-jsonschema", path=str(Path(sys.executable).parent))
    assert exe is not None, "check-jsonschema is part of the test extra"
    result = subprocess.run(
        [exe, "--schemafile", str(SCHEMA), *map(str, POLICIES)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    bad = subprocess.run(
        [
            exe,
            "--schemafile",
            str(SCHEMA),
            str(ROOT / "tests" / "bad" / "misspelt_target_key.yaml"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 1


def test_pre_commit_hook_runs_validate() -> None:
    (hook,) = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())
    assert hook["id"] == "policycompile-validate"
    assert hook["entry"] == "policycompile validate"
    assert hook["language"] == "python"
