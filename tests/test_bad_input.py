"""The malformed policies in tests/bad: each a located PolicyError, one CLI line, exit 1."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

import policycompile as pc
from policycompile._commands.cli import main

BAD = Path(__file__).parent / "bad"

# file -> (error class, line, column or None, text the message contains)
CORPUS: dict[str, tuple[type[pc.PolicyError], int, int | None, str]] = {
    "unclosed_flow.yaml": (pc.PolicySyntaxError, 4, 1, "invalid YAML"),
    "tab_indent.yaml": (pc.PolicySyntaxError, 3, 1, "tabs cannot indent YAML"),
    "empty.yaml": (pc.PolicySchemaError, 1, 1, "the policy is empty"),
    "only_comment.yaml": (pc.PolicySchemaError, 1, 1, "the policy is empty"),
    "top_level_list.yaml": (pc.PolicySchemaError, 1, 1, "not a list"),
    "top_level_scalar.yaml": (pc.PolicySchemaError, 1, 1, "not a str"),
    "unknown_top_key.yaml": (pc.PolicySchemaError, 5, 1, "did you mean 'profiles'?"),
    "misspelt_target_key.yaml": (pc.PolicySchemaError, 4, 5, "did you mean 'fullgraph'?"),
    "int_for_bool.yaml": (pc.PolicySchemaError, 4, 27, "must be true or false, not int 1"),
    "string_for_bool.yaml": (pc.PolicySchemaError, 4, 14, "must be true, false or {recursive"),
    "int_reason.yaml": (pc.PolicySchemaError, 4, 13, "must be a string"),
    "targets_list.yaml": (pc.PolicySchemaError, 3, 3, "must be a mapping, not a list"),
    "duplicate_target.yaml": (pc.PolicySyntaxError, 5, 3, "duplicate key 'pkg.fn'"),
    "duplicate_top_key.yaml": (pc.PolicySyntaxError, 2, 1, "duplicate key 'version'"),
    "pattern_empty_segment.yaml": (pc.PolicyPatternError, 3, 5, "empty segment"),
    "pattern_partial_doublestar.yaml": (pc.PolicyPatternError, 3, 7, "must be a whole segment"),
    "pattern_everything.yaml": (pc.PolicyPatternError, 3, 3, "must name a package"),
    "unknown_version.yaml": (pc.PolicySchemaError, 1, 10, "unsupported policy version int 2"),
    "missing_version.yaml": (pc.PolicySchemaError, 1, 1, "missing required key 'version'"),
    "missing_targets.yaml": (pc.PolicySchemaError, 1, 1, "missing required key 'targets'"),
    "reason_alone.yaml": (pc.PolicySchemaError, 3, 3, "'reason' alone is not a setting"),
    "disable_with_fullgraph.yaml": (pc.PolicySchemaError, 4, 5, "cannot be combined"),
    "disable_with_compile.yaml": (pc.PolicySchemaError, 4, 5, "cannot be combined"),
    "stance_typo.yaml": (pc.PolicyOptionError, 5, 5, "did you mean 'fail_on_recompile'?"),
    "dynamo_config_typo.yaml": (
        pc.PolicyOptionError,
        6,
        7,
        "did you mean 'capture_scalar_outputs'?",
    ),
    "dynamo_config_type.yaml": (pc.PolicyOptionError, 5, 21, "recompile_limit takes an integer"),
    "dynamo_config_empty.yaml": (pc.PolicySchemaError, 4, 20, "'dynamo_config' in target"),
    "dynamo_config_float_for_int.yaml": (pc.PolicyOptionError, 5, 21, "not float 1.5"),
    "compile_with_allow_in_graph.yaml": (pc.PolicySchemaError, 5, 5, "sets compile and allow_in"),
    "stance_without_compile.yaml": (pc.PolicySchemaError, 5, 5, "with 'compile: false'"),
    "disable_recursive_type.yaml": (pc.PolicySchemaError, 4, 14, "{recursive: true or false}"),
    "disable_mapping_with_compile.yaml": (pc.PolicySchemaError, 3, 3, "sets compile and disable"),
    "python_tag.yaml": (pc.PolicySyntaxError, 3, 11, "is not allowed"),
    "python_name_tag.yaml": (pc.PolicySyntaxError, 4, 13, "is not allowed"),
    "custom_tag.yaml": (pc.PolicySyntaxError, 4, 14, "'!custom' is not allowed"),
    "alias_bomb.yaml": (pc.PolicySyntaxError, 5, None, "alias bomb"),
    "cycle_a.yaml": (
        pc.PolicyExtendsError,
        2,
        10,
        "circular extends: cycle_a.yaml -> b.yaml -> cycle_a.yaml",
    ),
    "b.yaml": (pc.PolicyExtendsError, 2, 11, "circular extends: b.yaml -> cycle_a.yaml -> b.yaml"),
    "missing_extends.yaml": (pc.PolicyExtendsError, 3, 5, "no such file"),
    "unknown_compile_option.yaml": (pc.PolicyOptionError, 4, 15, "did you mean 'fullgraph'?"),
    "unknown_file_compile_option.yaml": (pc.PolicyOptionError, 4, 3, "did you mean 'backend'?"),
    "compile_string.yaml": (pc.PolicySchemaError, 4, 14, "must be true, false or a mapping"),
    "fullgraph_twice.yaml": (pc.PolicySchemaError, 4, 5, "shorthand"),
    "two_documents.yaml": (pc.PolicySyntaxError, 5, 1, "one YAML document"),
    "not_utf8.yaml": (pc.PolicySyntaxError, 4, 15, "not valid UTF-8"),
    "profile_bad_value.yaml": (pc.PolicySchemaError, 7, 25, "in profile 'ci' in target"),
    "merge_key.yaml": (pc.PolicySyntaxError, 4, 3, "merge keys"),
    "backend_typo.yaml": (pc.PolicyOptionError, 2, 11, "did you mean 'inductor'?"),
    "profile_backend_typo.yaml": (pc.PolicyOptionError, 7, 7, "did you mean 'eager'?"),
    "mode_typo.yaml": (pc.PolicyOptionError, 4, 15, "did you mean 'max-autotune'?"),
    "mode_with_options.yaml": (pc.PolicyOptionError, 4, 3, "Either mode or options"),
    "inductor_option_typo.yaml": (pc.PolicyOptionError, 4, 15, "did you mean 'max_autotune'?"),
    "inductor_option_type.yaml": (pc.PolicyOptionError, 4, 15, "takes true or false, not int 3"),
    "nfd_pattern.yaml": (pc.PolicyPatternError, 3, 7, "(NFKC): Python reads the identifier"),
    "nested_too_deep.yaml": (pc.PolicySyntaxError, 67, 131, "nested more than 64 levels deep"),
}


def test_corpus_is_complete() -> None:
    assert len(CORPUS) >= 25
    assert {p.name for p in BAD.glob("*.yaml")} == set(CORPUS)


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_load_raises_located_error(name: str) -> None:
    cls, line, column, text = CORPUS[name]
    with pytest.raises(pc.PolicyError) as info:
        pc.load(BAD / name)
    err = info.value
    assert type(err) is cls, f"{type(err).__name__}: {err}"
    assert err.path is not None and Path(err.path).name in (name, "b.yaml", "cycle_a.yaml")
    assert err.line == line, str(err)
    if column is not None:
        assert err.column == column, str(err)
    assert text in err.message
    assert str(err).startswith(f"{err.path}:{err.line}:{err.column}: error: ")


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_cli_prints_one_located_line(name: str) -> None:
    out = io.StringIO()
    status = main(["validate", str(BAD / name)], out=out)
    lines = out.getvalue().splitlines()
    assert status == 1
    assert len(lines) == 1, lines
    assert ": error: " in lines[0]
    assert "Traceback" not in out.getvalue()


def test_nothing_is_executed() -> None:
    marker = Path("/tmp/policycompile-pwned")
    marker.unlink(missing_ok=True)
    for name in ("python_tag.yaml", "python_name_tag.yaml"):
        with pytest.raises(pc.PolicySyntaxError):
            pc.load(BAD / name)
    assert not marker.exists()


def test_alias_bomb_is_refused_fast_with_bounded_memory() -> None:
    import time
    import tracemalloc

    tracemalloc.start()
    start = time.perf_counter()
    with pytest.raises(pc.PolicySyntaxError):
        pc.load(BAD / "alias_bomb.yaml")
    elapsed = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # 9**8 = 43 million strings if expanded; refusing it takes a few KiB and milliseconds.
    assert peak < 5 * 2**20
    assert elapsed < 2.0


def test_oversized_file(write_policy: object, tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    big.write_text(
        "version: 1\ntargets:\n" + "".join(f"  p.f{i}: {{disable: true}}\n" for i in range(200))
    )
    with pytest.raises(pc.PolicyFileError) as info:
        pc.load(big, max_bytes=1000)
    assert "over the limit of 1000" in str(info.value)
    assert isinstance(info.value, OSError)
    assert len(pc.load(big).rules) == 200


def test_missing_file() -> None:
    with pytest.raises(pc.PolicyFileError) as info:
        pc.load("/nonexistent/policy.yaml")
    assert str(info.value) == "/nonexistent/policy.yaml: error: no such policy file"


def test_errors_are_catchable_as_builtins() -> None:
    assert issubclass(pc.PolicySchemaError, ValueError)
    assert issubclass(pc.PolicyProfileError, LookupError)
    assert issubclass(pc.PolicyTargetError, LookupError)
    assert issubclass(pc.PolicyStateError, RuntimeError)
