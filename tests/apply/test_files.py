"""A user's file is never lost nor silently rewritten (docs/suggest.md, "Files"): paths from
where the command started, symlinks written through, modes, line endings and byte-order
marks kept, read-only files and the base's own chain refused, and a run that saw nothing
leaves the file as it was."""

from __future__ import annotations

import json
import os
import stat
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from policycompile._commands import files

from ..conftest import python

#: a program that moves to another directory first, as Hydra does, then breaks a graph
MOVING = """
import os
import torch

def step(x):
    x = x + 1
    torch._dynamo.graph_break()
    return x * 2

if __name__ == "__main__":
    os.makedirs("outputs", exist_ok=True)
    os.chdir("outputs")
    torch.compile(step, backend="eager")(torch.ones(2))
"""

#: the hand-written policy: CRLF lines, a byte-order mark, and a strict profile that shares
#: the top-level targets through an alias
HAND = (
    "# the team's policy\n"
    "version: 1\n"
    "targets: &common\n"
    "  moving.main: {error_on_graph_break: true}  # hand rule\n"
    "profiles:\n"
    "  strict:\n"
    "    targets: *common\n"
)


def _cli(cwd: Path, *args: str) -> Any:
    return python("-m", "policycompile", *args, cwd=cwd)


def test_update_writes_through_a_link_keeps_the_file_and_never_weakens_a_profile(
    tmp_path: Path,
) -> None:
    (tmp_path / "moving.py").write_text(textwrap.dedent(MOVING))
    conf = tmp_path / "conf"
    conf.mkdir()
    real = conf / "real.yaml"
    original = files.BOM + HAND.replace("\n", "\r\n").encode()
    real.write_bytes(original)
    real.chmod(0o640)
    (tmp_path / "p.yaml").symlink_to("conf/real.yaml")

    done = _cli(tmp_path, "suggest", "--update", "p.yaml", "--report-json", "r.json", "moving.py")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "wrote p.yaml" in done.stderr
    # paths from where the command started, not from where the program went
    assert (tmp_path / "r.json").is_file() and not (tmp_path / "outputs" / "r.json").exists()
    assert not (tmp_path / "outputs" / "p.yaml").exists()
    assert json.loads((tmp_path / "r.json").read_text())["graph_breaks"]
    # the link is still a link, and the file it points to was updated, with its mode
    assert os.path.islink(tmp_path / "p.yaml") and os.readlink(tmp_path / "p.yaml") == (
        "conf/real.yaml"
    )
    assert stat.S_IMODE(real.stat().st_mode) == 0o640
    raw = real.read_bytes()
    assert raw != original and raw.startswith(files.BOM)
    assert raw.count(b"\n") == raw.count(b"\r\n")  # every line still ends with CRLF
    # the diff adds lines: every original line is still there, in order, but the alias the
    # profile shared, which the update gave the profile its own copy of
    new_lines = raw[len(files.BOM) :].decode().split("\r\n")
    old_lines = [line.replace(" &common", "") for line in HAND.split("\n") if "*common" not in line]
    it = iter(new_lines)
    assert all(any(line == n for n in it) for line in old_lines if line), new_lines
    doc = yaml.safe_load(raw[len(files.BOM) :].decode())
    assert doc["targets"]["moving.step"]["error_on_graph_break"] is False  # the break allowed
    strict = doc["profiles"]["strict"]["targets"]
    assert strict["moving.step"] == {"error_on_graph_break": True}  # ... never in strict
    assert strict["moving.main"] == {"error_on_graph_break": True}


def test_refusals_come_before_the_run_and_change_nothing(tmp_path: Path) -> None:
    (tmp_path / "moving.py").write_text(textwrap.dedent(MOVING))
    (tmp_path / "base.yaml").write_text("version: 1\ntargets:\n  moving.**: {disable: false}\n")
    (tmp_path / "p.yaml").write_text("version: 1\nextends: base.yaml\ntargets: {}\n")
    before = {p.name: p.read_bytes() for p in tmp_path.glob("*.yaml")}
    for out, base, why in (
        ("p.yaml", "p.yaml", "the --base policy is, or extends, that file"),
        ("base.yaml", "p.yaml", "the --base policy is, or extends, that file"),
    ):
        done = _cli(tmp_path, "suggest", "--base", base, "-o", out, "moving.py")
        assert done.returncode == 2 and f"cannot write {out}: {why}" in done.stderr
        assert "graph break" not in done.stderr  # refused before the program ran
    done = _cli(tmp_path, "suggest", "--update", "p.yaml", "-o", "base.yaml", "moving.py")
    assert done.returncode == 2 and "--update p.yaml extends it" in done.stderr
    (tmp_path / "ro.yaml").write_text("version: 1\ntargets: {}\n")
    (tmp_path / "ro.yaml").chmod(0o444)
    before["ro.yaml"] = (tmp_path / "ro.yaml").read_bytes()
    done = _cli(tmp_path, "suggest", "--update", "ro.yaml", "moving.py")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "policycompile suggest: cannot write ro.yaml: it is read-only (left as it is)"
    ]
    assert {p.name: p.read_bytes() for p in tmp_path.glob("*.yaml")} == before


def test_a_run_that_saw_nothing_leaves_the_policy_byte_identical(tmp_path: Path) -> None:
    (tmp_path / "usage.py").write_text("import sys\nimport torch\nsys.exit('usage: usage.py N')\n")
    policy = tmp_path / "p.yaml"
    policy.write_bytes(b"version: 1\r\ntargets:\r\n  usage.gone: {disable: true}\r\n")
    before = policy.read_bytes()
    done = _cli(tmp_path, "suggest", "--update", "p.yaml", "usage.py")
    assert done.returncode == 1
    assert "the run observed nothing (no compile entry ran): p.yaml is left as it was" in (
        done.stderr
    )
    assert policy.read_bytes() == before


@pytest.mark.parametrize(
    ("raw", "bom", "crlf"),
    [
        (b"a: 1\nb: 2\n", False, False),
        (b"a: 1\r\nb: 2\r\n", False, True),
        (b"\xef\xbb\xbfa\n", True, False),
    ],
)
def test_a_file_keeps_its_style(tmp_path: Path, raw: bytes, bom: bool, crlf: bool) -> None:
    path = tmp_path / "f.yaml"
    path.write_bytes(raw)
    text, style = files.read(str(path))
    assert (style.bom, style.crlf) == (bom, crlf) and "\r" not in text
    files.write_checked(text + "c: 3\n", str(path), lambda temp: [])
    assert path.read_bytes() == raw + (b"c: 3\r\n" if crlf else b"c: 3\n")


def test_a_text_that_does_not_validate_replaces_nothing(tmp_path: Path) -> None:
    path = tmp_path / "f.yaml"
    path.write_text("kept\n")
    with pytest.raises(ValueError, match="does not validate there: boom"):
        files.write_checked("new\n", str(path), lambda temp: ["boom"])
    assert path.read_text() == "kept\n" and [p.name for p in tmp_path.iterdir()] == ["f.yaml"]


def test_the_program_the_policy_and_links_are_never_overwritten(tmp_path: Path) -> None:
    """Found by trying: -o onto the program itself or a file that is no policy, a report
    onto the policy, a loop of links: each refused in one line before the run, nothing
    changed."""
    (tmp_path / "moving.py").write_text(textwrap.dedent(MOVING))
    (tmp_path / "notes.txt").write_text("mine\n")
    (tmp_path / "p.yaml").write_text("version: 1\ntargets: {}\n")
    (tmp_path / "loopa.yaml").symlink_to("loopb.yaml")
    (tmp_path / "loopb.yaml").symlink_to("loopa.yaml")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if not p.is_symlink()}
    for args, said in (
        (
            ["suggest", "-o", "moving.py", "moving.py"],
            "cannot write moving.py: it exists and is not a .yaml file",
        ),
        (
            ["suggest", "-o", "notes.txt", "moving.py"],
            "cannot write notes.txt: it exists and is not a .yaml file",
        ),
        (
            ["suggest", "-o", "loopa.yaml", "moving.py"],
            "cannot write loopa.yaml: a loop of symbolic links",
        ),
        (
            ["run", "p.yaml", "--report-json", "p.yaml", "moving.py"],
            "--report-json p.yaml would overwrite the policy or the program",
        ),
        (
            ["suggest", "--update", "p.yaml", "--report-json", "p.yaml", "moving.py"],
            "--report-json p.yaml would overwrite the policy or the program",
        ),
        (
            ["suggest", "-o", "s.yaml", "--report-json", "s.yaml", "moving.py"],
            "--report-json s.yaml would overwrite the policy or the program",
        ),
    ):
        done = _cli(tmp_path, *args)
        assert done.returncode == 2 and said in done.stderr, (args, done.stderr[-2000:])
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if not p.is_symlink()} == before
    assert (tmp_path / "loopa.yaml").is_symlink() and not (tmp_path / "s.yaml").exists()


def test_an_update_through_a_link_validates_where_the_link_is(tmp_path: Path) -> None:
    """A relative ``extends`` resolves next to the name the policy is loaded by (the link);
    the new text is checked there too, and written to the file the link points to."""
    (tmp_path / "moving.py").write_text(textwrap.dedent(MOVING))
    (tmp_path / "root.yaml").write_text("version: 1\ntargets: {}\n")
    (tmp_path / "conf").mkdir()
    real = tmp_path / "conf" / "p.yaml"
    real.write_text("version: 1\nextends: root.yaml\ntargets: {}\n")
    (tmp_path / "p.yaml").symlink_to("conf/p.yaml")
    done = _cli(tmp_path, "suggest", "--update", "p.yaml", "moving.py")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "moving.step" in real.read_text() and (tmp_path / "p.yaml").is_symlink()
