"""Audit mode as a CI gate: it lists a violation for every graph break a normal run would
raise (found one normal run per break, each break taken out of the source after it raised),
and never more; breaks are attributed to the right function, rule and region even where
functions share a code object (``functools.wraps``)."""

from __future__ import annotations

import importlib
import json
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from ..conftest import python
from .conftest import BACKEND, Modules, apply
from .test_seed import CELLS, HEADER, policy_text

BREAK = "torch._dynamo.graph_break()"


def raised_one_run_each(
    modules: Modules, source: str, targets: str, call: Callable[[Any], Any]
) -> list[int]:
    """The lines of the breaks a normal run raises at, one run per break: after each run that
    raised, the break it raised at is taken out of the source and the program runs again."""
    lines = source.splitlines()
    raised: list[int] = []
    for attempt in range(len(lines)):
        name = modules.write(modules.name(f"run{attempt}"), "\n".join(lines) + "\n")
        policy = modules.policy(policy_text(targets, name), f"run{attempt}.yaml")
        torch._dynamo.reset()
        with apply(policy):
            module = importlib.import_module(name)
            try:
                call(module)
            except torch._dynamo.exc.Unsupported as exc:
                frame = exc.real_stack[-1]  # where the break is
                assert frame.filename == module.__file__, frame
                line = int(frame.lineno or 0)
            else:
                return raised
        assert BREAK in lines[line - 1], (line, lines[line - 1])
        lines[line - 1] = lines[line - 1].replace(BREAK, "None")
        raised.append(line)
    raise AssertionError("the program never stopped raising")


def audited(modules: Modules, source: str, targets: str, call: Callable[[Any], Any]) -> list[Any]:
    name = modules.write(modules.name("audit"), source)
    policy = modules.policy(policy_text(targets, name), "audit.yaml")
    torch._dynamo.reset()
    with apply(policy, audit=True) as handle:
        call(importlib.import_module(name))  # never raises for what the policy forbids
        report = handle.report()
    return list(report.violations)


@pytest.mark.parametrize("cell", sorted(CELLS))
def test_audit_lists_exactly_what_normal_runs_raise_on_the_seed(
    modules: Modules, cell: str
) -> None:
    source = HEADER + CELLS[cell].plain
    call = lambda m: m.fn(torch.randn(3))  # noqa: E731
    raised = raised_one_run_each(modules, source, CELLS[cell].targets, call)
    violations = audited(modules, source, CELLS[cell].targets, call)
    assert sorted(v.line for v in violations) == sorted(raised)
    assert bool(raised) == CELLS[cell].error


SHARED = """
import functools
import torch

def deco(f):
    @functools.wraps(f)
    def wrapper(*a, **k):
        return f(*a, **k)
    return wrapper

@deco
def strict_fn(x):
    x = x + 1
    torch._dynamo.graph_break()
    return x * 2

@deco
def lenient_fn(x):
    x = x - 1
    torch._dynamo.graph_break()
    return x * 3

def entry(x):
    return strict_fn(x) + lenient_fn(x)
"""
SHARED_TARGETS = """
  M.entry: {compile: true}
  M.strict_fn: {error_on_graph_break: true}
  M.lenient_fn: {error_on_graph_break: false}
"""


def test_functions_sharing_one_code_object_get_their_own_rule(modules: Modules) -> None:
    call = lambda m: m.entry(torch.ones(2))  # noqa: E731
    raised = raised_one_run_each(modules, SHARED, SHARED_TARGETS, call)
    assert raised == [14]  # strict_fn's break, and nothing else
    name = modules.write(modules.name("shared"), SHARED)
    policy = modules.policy(policy_text(SHARED_TARGETS, name), "shared.yaml")
    with apply(policy, audit=True) as handle:
        out = importlib.import_module(name).entry(torch.ones(2))
        report = handle.report()
    assert torch.equal(out, torch.full((2,), 4.0))
    by_function = {b.function: b for b in report.graph_breaks}
    strict, lenient = by_function[f"{name}.strict_fn"], by_function[f"{name}.lenient_fn"]
    assert (strict.allowed, str(strict.rule)) == (False, f"{name}.strict_fn ({policy}:5)")
    assert (lenient.allowed, str(lenient.rule)) == (True, f"{name}.lenient_fn ({policy}:6)")
    assert strict.region == lenient.region == f"{name}.entry"
    assert [v.function for v in report.violations] == [f"{name}.strict_fn"]


def test_run_audit_exits_4_for_functions_sharing_one_code_object(tmp_path: Path) -> None:
    (tmp_path / "shared.py").write_text(SHARED)
    (tmp_path / "main.py").write_text("import torch, shared\nprint(shared.entry(torch.ones(2)))\n")
    policy = policy_text(SHARED_TARGETS, "shared").replace(BACKEND, "eager")
    (tmp_path / "p.yaml").write_text(policy)
    out = tmp_path / "report.json"
    args = ["-m", "policycompile", "run", "p.yaml", "--audit", "--report-json", str(out)]
    done = python(*args, "main.py", cwd=tmp_path)
    assert done.returncode == 4, done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert [v["function"] for v in report["violations"]] == ["shared.strict_fn"]
    assert [v["rule"] for v in report["violations"]] == ["shared.strict_fn (p.yaml:5)"]


FULLGRAPH = """
import torch

def first(x):
    x = x + 1
    torch._dynamo.graph_break()
    return x

def second(x):
    x = x * 2
    torch._dynamo.graph_break()
    return x

def entry(x):
    return second(first(x)) + 1
"""


def test_audit_of_a_fullgraph_entry_lists_every_break(modules: Modules) -> None:
    targets = """
      M.entry: {fullgraph: true}
      M.first: {error_on_graph_break: false, reason: allowed but not under fullgraph}
    """
    call = lambda m: m.entry(torch.ones(2))  # noqa: E731
    raised = raised_one_run_each(modules, FULLGRAPH, targets, call)
    assert raised == [6, 11]  # fullgraph forbids both, even the one error_on_graph_break allows
    violations = audited(modules, FULLGRAPH, targets, call)
    assert sorted(v.line for v in violations) == [6, 11]
    assert all(v.rule is not None and str(v.rule).startswith(f"{v.region} (") for v in violations)


def test_a_caught_forbidden_break_is_still_reported(modules: Modules) -> None:
    source = FULLGRAPH + textwrap.dedent(
        """
        def careful(x):
            try:
                return entry(x)
            except torch._dynamo.exc.Unsupported:
                return None  # user code swallows it
        """
    )
    for targets, rule in [
        ("M.entry: {fullgraph: true}", "entry"),  # the break raises in the entry's own compile
        ("M.entry: {compile: true}\n  M.second: {error_on_graph_break: true}", "second"),
    ]:
        name = modules.write(modules.name(f"caught_{rule}"), source)
        policy = modules.policy(policy_text(targets, name), f"{rule}.yaml")
        torch._dynamo.reset()
        with apply(policy) as handle:
            mod = importlib.import_module(name)
            assert mod.careful(torch.ones(2)) is None
            report = handle.report()
        assert [v.function for v in report.violations][-1:] == [
            f"{name}.{'first' if rule == 'entry' else 'second'}"
        ]
        assert all(
            v.raised and v.rule and str(v.rule).startswith(f"{name}.{rule} ")
            for v in report.violations
        )
        (region,) = report.regions
        assert region.name == f"{name}.entry"
        assert "no compile entry ran" not in report.text()
        if rule == "entry":
            assert region.graphs == 0 and region.failed_compiles == 1


# -- transformers: shared decorator wrappers everywhere, breaks from hooks ------------------

TRANSFORMERS_SCRIPT = """
import json, sys, torch
import policycompile

mode = sys.argv[1]
handle = policycompile.apply("policy.yaml", audit=mode == "audit")
import transformers, hooks

config = transformers.GPT2Config(
    n_embd=32, n_layer=2, n_head=2, vocab_size=64, n_positions=32, bos_token_id=0, eos_token_id=0
)
config._attn_implementation = "pc_breaking"
torch.manual_seed(0)
model = transformers.GPT2LMHeadModel(config).eval()
model.transformer.h[0].ln_2.register_forward_hook(hooks.on_ln)
model.transformer.h[0].mlp.register_forward_hook(hooks.on_mlp)
ids = torch.randint(0, 64, (1, 8), generator=torch.Generator().manual_seed(1))
result = {"raised": None}
try:
    with torch.no_grad():
        model(ids, use_cache=False)
except torch._dynamo.exc.Unsupported as exc:
    frame = exc.real_stack[-1]
    result["raised"] = [frame.filename.rsplit("/", 1)[-1], frame.lineno]
report = handle.report()
result["violations"] = [[v.function, v.line, str(v.rule), v.region] for v in report.violations]
result["breaks"] = [
    [b.function, b.line, b.rule and str(b.rule), b.allowed, b.region]
    for b in report.graph_breaks
]
print(json.dumps(result))
"""

HOOKS = """
import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward

def breaking_attention(*args, **kwargs):
    torch._dynamo.graph_break()  # called from GPT2Attention.forward: its rule allows it
    return sdpa_attention_forward(*args, **kwargs)

AttentionInterface.register("pc_breaking", breaking_attention)

def on_ln(module, args, out):
    torch._dynamo.graph_break()  # inside GPT2Block.forward: forbidden
    return out

def on_mlp(module, args, out):
    torch._dynamo.graph_break()  # likewise
    return out
"""

GPT2 = "transformers.models.gpt2.modeling_gpt2"
TRANSFORMERS_POLICY = f"""
version: 1
compile: {{backend: eager}}
targets:
  {GPT2}.GPT2Block: {{compile: true}}
  {GPT2}.**: {{error_on_graph_break: true}}
  {GPT2}.GPT2Attention: {{error_on_graph_break: false, reason: tolerated}}
"""


def test_audit_lists_exactly_what_normal_runs_raise_on_transformers(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    (tmp_path / "policy.yaml").write_text(TRANSFORMERS_POLICY)
    (tmp_path / "run.py").write_text(TRANSFORMERS_SCRIPT)
    hooks = HOOKS.splitlines()
    raised = []
    for _ in range(4):
        (tmp_path / "hooks.py").write_text("\n".join(hooks) + "\n")
        done = python("run.py", "normal", cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-3000:]
        result = json.loads(done.stdout.strip().splitlines()[-1])
        if result["raised"] is None:
            break
        file, line = result["raised"]
        assert file == "hooks.py" and BREAK in hooks[line - 1]
        hooks[line - 1] = hooks[line - 1].replace(BREAK, "None")
        raised.append(line)
    assert sorted(raised) == [13, 17]  # the two hooks; never the attention's allowed break
    (tmp_path / "hooks.py").write_text(HOOKS)
    done = python("run.py", "audit", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    audit = json.loads(done.stdout.strip().splitlines()[-1])
    assert sorted(v[1] for v in audit["violations"]) == sorted(raised)
    assert {v[2] for v in audit["violations"]} == {f"{GPT2}.** (policy.yaml:6)"}
    by_line = {b[1]: b for b in audit["breaks"]}
    # the attention function's break: inside GPT2Attention.forward (whose code is shared
    # with other forwards through transformers' deprecation decorator), allowed by its rule
    assert by_line[7][0] == "hooks.breaking_attention"
    assert by_line[7][2:4] == [f"{GPT2}.GPT2Attention (policy.yaml:7)", True]
    # every break happened inside the decorated GPT2Block.forward, a compile entry
    assert {b[4] for b in audit["breaks"]} == {f"{GPT2}.GPT2Block.forward"}
