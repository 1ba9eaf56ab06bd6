"""Warnings that validate proves: conflicts, unreachable inheritance, nested compile entries."""

from __future__ import annotations

import io

from policycompile._commands.cli import main

from .conftest import WritePolicy


def warnings(path: object) -> list[str]:
    out = io.StringIO()
    assert main(["validate", str(path)], out=out) == 0
    return out.getvalue().splitlines()


def test_provable_conflict_is_reported_with_a_witness(write_policy: WritePolicy) -> None:
    path = write_policy(
        "version: 1\ntargets:\n  app.*.step: {error_on_graph_break: true}\n"
        "  app.train.*: {error_on_graph_break: false}\n"
    )
    (line,) = warnings(path)
    assert line.startswith(f"{path}:3:3: warning: conflicting rules for 'app.train.step'")


def test_no_conflict_when_patterns_cannot_overlap(write_policy: WritePolicy) -> None:
    path = write_policy(
        "version: 1\ntargets:\n  app.a*.step: {error_on_graph_break: true}\n"
        "  app.b*.step: {error_on_graph_break: false}\n"
        "  app.*.step: {error_on_graph_break: false}\n"  # less specific than both: no tie
    )
    assert warnings(path) == []


def test_no_conflict_when_a_more_specific_rule_settles_it(write_policy: WritePolicy) -> None:
    path = write_policy(
        "version: 1\ntargets:\n  app.*.step: {disable: true}\n  app.train.*: {disable: false}\n"
        "  app.train.step: {disable: true}\n"
    )
    # the only name both wildcard rules match is app.train.step, which the exact rule settles
    assert warnings(path) == []


def test_disable_that_does_not_reach_a_compile_entry(write_policy: WritePolicy) -> None:
    path = write_policy(
        "version: 1\ntargets:\n  app.utils: {disable: true}\n"
        "  app.utils.hot_loop: {compile: true}\n"
    )
    (line,) = warnings(path)
    assert line.startswith(f"{path}:3:3: warning: 'disable' of 'app.utils' does not reach")
    assert f"'app.utils.hot_loop' ({path}:4) makes it a compile entry" in line


def test_nested_compile_entry(write_policy: WritePolicy) -> None:
    path = write_policy(
        "version: 1\ntargets:\n  app.model.Model: {compile: true}\n"
        "  app.model.Model.forward: {fullgraph: true}\n"  # the same entry: no warning
        "  app.model.Model.helper: {compile: {dynamic: true}}\n"
        "  app.model: {compile: true}\n"  # a module: its functions, not an outer region
        "  app.model.fn: {compile: {dynamic: false}}\n"
    )
    (line,) = warnings(path)
    assert line.startswith(
        f"{path}:5:3: warning: compile entry 'app.model.Model.helper' lies inside compile entry "
        f"'app.model.Model' ({path}:3)"
    )


def test_warnings_in_profiles_are_found(write_policy: WritePolicy) -> None:
    path = write_policy(
        "version: 1\ntargets:\n  app.*.step: {error_on_graph_break: true}\n"
        "profiles:\n  ci:\n    targets:\n      app.train.*: {error_on_graph_break: false}\n"
    )
    (line,) = warnings(path)
    assert ": warning: conflicting rules for 'app.train.step'" in line
