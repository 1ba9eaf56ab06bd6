"""Hostile inputs are answered fast: files that are not regular files, diamonds and chains of
extends, deep nesting, patterns that make a regex backtrack, and validate of large policies.
Each asserts the located error (or the result) and a time limit generous enough for a slow
CI machine; the answers take milliseconds here."""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

import pytest

import policycompile as pc
from policycompile._commands.cli import validate_file
from policycompile._policy.patterns import Glob, Pattern
from policycompile._policy.tree import Rule, RuleTree, Setting

from .conftest import python

SLOW_MACHINE = 20.0  # seconds: far above what each case takes here


def timed(fn, limit: float = SLOW_MACHINE):  # type: ignore[no-untyped-def]
    """Run ``fn`` in a thread; fail (instead of hanging the suite) past ``limit`` seconds."""
    out: list[object] = []

    def run() -> None:
        try:
            out.append(fn())
        except BaseException as exc:
            out.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    start = time.perf_counter()
    worker.start()
    worker.join(limit)
    assert not worker.is_alive(), f"no answer in {limit} s"
    return out[0], time.perf_counter() - start


@pytest.mark.parametrize("kind", ["fifo", "socket", "device"])
def test_extends_of_what_is_not_a_regular_file(tmp_path: Path, kind: str) -> None:
    if kind == "fifo":
        target = tmp_path / "fifo"
        os.mkfifo(target)
        what = "a FIFO (named pipe)"
    elif kind == "socket":
        target = tmp_path / "sock"
        server = socket.socket(socket.AF_UNIX)
        server.bind(str(target))
        what = "a socket"
    else:
        target = Path("/dev/null")
        what = "a character device"
    policy = tmp_path / "p.yaml"
    policy.write_text(f"version: 1\nextends: {target}\ntargets:\n  pkg.fn: {{disable: true}}\n")
    result, _ = timed(lambda: validate_file(str(policy)))
    (diag,) = result  # type: ignore[misc]
    assert (diag.position.line, diag.position.column) == (2, 10)
    assert f"{target}: is {what}, not a regular file" in diag.message
    result, _ = timed(lambda: validate_file(str(target)))
    assert f"is {what}" in result[0].message  # type: ignore[index]


def test_a_diamond_of_extends_reads_each_file_once(tmp_path: Path) -> None:
    levels = 24  # 2**24 paths through the diamond; 24 * 2 files
    for level in range(levels):
        for side in "ab":
            below = f"[l{level + 1}a.yaml, l{level + 1}b.yaml]"
            ext = f"extends: {below}\n" if level < levels - 1 else ""
            (tmp_path / f"l{level}{side}.yaml").write_text(
                f"version: 1\n{ext}targets:\n  pkg.f{level}{side}: {{disable: true}}\n"
            )
    policy, seconds = timed(lambda: pc.load(tmp_path / "l0a.yaml"))
    # l0a and both files of every level below it (l0b is extended by nobody)
    assert isinstance(policy, pc.Policy) and len(policy.rules) == 2 * levels - 1
    assert len(policy.sources) == 2 * levels - 1
    assert seconds < SLOW_MACHINE


def test_a_long_extends_chain_is_a_located_error(tmp_path: Path) -> None:
    for i in range(100):
        ext = f"extends: c{i + 1}.yaml\n" if i < 99 else ""
        (tmp_path / f"c{i}.yaml").write_text(
            f"version: 1\n{ext}targets:\n  pkg.f{i}: {{disable: true}}\n"
        )
    error, _ = timed(lambda: pc.load(tmp_path / "c0.yaml"))
    assert isinstance(error, pc.PolicyExtendsError)
    assert "extends chain deeper than 64 files" in str(error)
    assert error.line == 2 and error.path is not None and error.path.endswith("c63.yaml")


def test_deep_flow_nesting_is_a_located_error(tmp_path: Path) -> None:
    policy = tmp_path / "p.yaml"
    depth = 5000
    nested = "[" * depth + "]" * depth
    policy.write_text(f"version: 1\ntargets:\n  pkg.fn:\n    compile: {{options: {nested}}}\n")
    error, _ = timed(lambda: pc.load(policy))
    assert isinstance(error, pc.PolicySyntaxError) and error.line == 4, error


def test_glob_matching_is_linear_in_the_name() -> None:
    pattern = "pkg.*a*a*a*a*a*a*a*a*a*a*a*a*b"
    name = "pkg." + "a" * 48
    tree = RuleTree(
        [Rule(Pattern.parse(pattern), (Setting("disable", True, pc.Position("p.yaml", 3, 3)),))],
        [],
    )
    result, seconds = timed(lambda: tree.resolve(name).decisions)
    assert result == {} and seconds < 1.0
    assert Glob("*a*a*b").match("xaxab") and not Glob("*a*a*b").match("xaxb")
    assert Glob("a*").match("a") and not Glob("a*a").match("a")


def test_validate_of_many_targets_costs_a_few_loads(tmp_path: Path) -> None:
    from benchmarks.resolver import policy_text

    policy = tmp_path / "big.yaml"
    text = policy_text(10_000)
    # and globs that share literal prefixes with each other and with exact names
    text += "".join(
        f"  proj.pkg{i % 50}.*.fn{i}: {{error_on_graph_break: {'true' if i % 2 else 'false'}}}\n"
        for i in range(1000)
    )
    policy.write_text(text)
    _, load_seconds = timed(lambda: pc.load(policy, max_bytes=10**7))
    found, validate_seconds = timed(lambda: validate_file(str(policy), max_bytes=10**7), 120)
    assert not [d for d in found if d.severity == "error"]  # type: ignore[attr-defined]
    assert validate_seconds < 5 * load_seconds + 2, (validate_seconds, load_seconds)


def test_conflicts_are_still_found_among_many_targets(tmp_path: Path) -> None:
    lines = ["version: 1", "targets:"]
    lines += [f"  pkg.m{i}.Cls.fn: {{disable: true}}" for i in range(3000)]
    # the only name both of these match, pkg.m7.Cls.fn, has an exact rule: no conflict
    lines += ["  pkg.m7.*.fn: {disable: false}", "  pkg.*.Cls.fn: {disable: true}"]
    # these meet at pkg.m9.Kls.fn, which nothing more specific decides
    lines += ["  pkg.m9.*.fn: {disable: true}", "  pkg.*.Kls.fn: {disable: false}"]
    policy = tmp_path / "p.yaml"
    policy.write_text("\n".join(lines) + "\n")
    found, _ = timed(lambda: validate_file(str(policy)))
    warnings = [d for d in found if d.severity == "warning"]  # type: ignore[attr-defined]
    assert len(warnings) == 1, warnings
    assert "pkg.m9.*.fn" in warnings[0].message and "pkg.*.Kls.fn" in warnings[0].message


def test_cli_answers_a_fifo_fast(tmp_path: Path) -> None:
    fifo = tmp_path / "policy.yaml"
    os.mkfifo(fifo)
    done = python("-m", "policycompile", "validate", str(fifo), cwd=tmp_path, timeout=60)
    assert done.returncode == 1
    assert f"{fifo}:1:1: error: is a FIFO (named pipe), not a regular file" in done.stdout


def test_extending_a_file_with_many_compile_options_costs_about_one_load(tmp_path: Path) -> None:
    base = tmp_path / "base.yaml"
    targets = [f"  pkg.m{i}.fn: {{compile: {{dynamic: false}}}}" for i in range(10_000)]
    base.write_text("\n".join(["version: 1", "targets:", *targets]) + "\n")
    top = tmp_path / "top.yaml"
    top.write_text("version: 1\nextends: base.yaml\ntargets:\n  pkg.x: {disable: true}\n")
    _, alone = timed(lambda: pc.load(base, max_bytes=10**7))
    policy, extended = timed(lambda: pc.load(top, max_bytes=10**7), 120)
    assert isinstance(policy, pc.Policy) and len(policy.rules) == 10_001
    assert extended < 2 * alone + 2, (extended, alone)
