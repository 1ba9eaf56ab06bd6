"""Reports and audit mode: breaks attributed to functions and rules, violations listed in one
run, recompiles with reasons, the JSON shape, and robustness to user logging calls."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import jsonschema
import pytest
import torch

from ..conftest import python
from .conftest import BACKEND, Modules, apply

ROOT = Path(__file__).parent.parent.parent
REPORT_SCHEMA = json.loads((ROOT / "schemas" / "report.schema.json").read_text())

THREE = """
import torch

def first(x):
    x = x + 1
    torch._dynamo.graph_break()
    return x * 2

def second(x):
    x = x - 1
    print("second", tuple(x.shape))
    return x * 3

class Third:
    def run(self, x):
        x = x * 5
        y = x.sum().item()
        return x + y

def entry(x):
    return Third().run(second(first(x)))
"""
LINES = {"first": 6, "second": 11, "Third.run": 17}


def three_policy(modules: Modules, name: str) -> Path:
    return modules.policy(
        f"version: 1\ncompile: {{backend: {BACKEND}}}\ntargets:\n"
        f"  {name}.entry: {{compile: true}}\n"
        f"  {name}.**: {{error_on_graph_break: true}}\n"
    )


def test_normal_run_raises_at_the_first_forbidden_break(modules: Modules) -> None:
    name = modules.write(modules.name("three"), THREE)
    with apply(three_policy(modules, name)) as handle:
        mod = importlib.import_module(name)
        with pytest.raises(torch._dynamo.exc.Unsupported) as info:
            mod.entry(torch.ones(2))
        handle.record_exception(info.value)
        report = handle.report()
    (violation,) = report.violations
    assert (violation.function, violation.line) == (f"{name}.first", LINES["first"])
    assert violation.raised


def test_audit_lists_all_three_and_finishes(
    modules: Modules, capsys: pytest.CaptureFixture[str]
) -> None:
    name = modules.write(modules.name("three"), THREE)
    policy = three_policy(modules, name)
    with apply(policy, audit=True) as handle:
        mod = importlib.import_module(name)
        out = mod.entry(torch.ones(2))
        report = handle.report()
    assert torch.equal(out, torch.full((2,), 135.0))  # the program ran to the end
    got = {(v.function, v.line) for v in report.violations}
    assert got == {(f"{name}.{f}", line) for f, line in LINES.items()}
    assert len(report.violations) == 3
    for v in report.violations:
        assert str(v.rule) == f"{name}.** ({policy}:5)"
        assert v.region == f"{name}.entry"
        assert not v.allowed and not v.raised
        assert v.file.endswith(f"{name}.py")
    (region,) = report.regions
    assert region.name == f"{name}.entry" and region.graphs >= 4
    jsonschema.validate(report.to_dict(), REPORT_SCHEMA)
    text = report.text()
    assert f"governed by {name}.** ({policy}:5):" in text
    assert text.count("VIOLATION") == 3


def test_run_command_exits_non_zero_in_audit(tmp_path: Path) -> None:
    (tmp_path / "three.py").write_text(
        THREE + "\nif __name__ == '__main__':\n    entry(torch.ones(2))\n"
    )
    (tmp_path / "p.yaml").write_text(
        "version: 1\ncompile: {backend: eager}\ntargets:\n"
        "  three.entry: {compile: true}\n  three.**: {error_on_graph_break: true}\n"
    )
    out = tmp_path / "report.json"
    done = python(
        "-m",
        "policycompile",
        "run",
        "p.yaml",
        "--audit",
        "--report-json",
        str(out),
        "three.py",
        cwd=tmp_path,
    )
    assert done.returncode == 4, done.stderr[-2000:]
    report = json.loads(out.read_text())
    jsonschema.validate(report, REPORT_SCHEMA)
    assert sorted(v["function"] for v in report["violations"]) == [
        "three.Third.run",
        "three.first",
        "three.second",
    ]
    assert "policycompile report (audit)" in done.stderr
    # without --audit: the program fails at the first break, with its own status
    done = python("-m", "policycompile", "run", "p.yaml", "three.py", cwd=tmp_path)
    assert done.returncode == 1
    assert "Unsupported" in done.stderr and "VIOLATION three.first" in done.stderr


def test_run_behaves_like_python(tmp_path: Path) -> None:
    (tmp_path / "prog.py").write_text("import sys\nprint(__name__, sys.argv[1:])\nsys.exit(7)\n")
    pkg = tmp_path / "tool"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "__main__.py").write_text("import sys\nprint(__name__, sys.argv[1:])\n")
    (tmp_path / "p.yaml").write_text("version: 1\ntargets:\n  prog.**: {disable: true}\n")
    run = ["-m", "policycompile", "run", "p.yaml"]
    done = python(*run, "prog.py", "-x", "--y", cwd=tmp_path)
    assert (done.returncode, done.stdout) == (7, "__main__ ['-x', '--y']\n")
    done = python(*run, "-m", "tool", "a", cwd=tmp_path)
    assert (done.returncode, done.stdout) == (0, "__main__ ['a']\n"), done.stderr
    done = python(*run, "nothere.py", cwd=tmp_path)
    assert done.returncode == 2 and "no such file" in done.stderr


ATTRIBUTION = """
import torch

def leaf(x):
    return x.sum().item()  # break here; leaf has no rule of its own

def helper(x):
    return leaf(x) + 1

class Model:
    def step(self, x):
        y = x * 2
        torch._dynamo.graph_break()
        return y + helper(y)

def entry(x):
    return Model().step(x)
"""


def test_attribution_through_methods_callees_and_resume_frames(modules: Modules) -> None:
    name = modules.write(modules.name("attr"), ATTRIBUTION)
    policy = modules.policy(
        f"version: 1\ncompile: {{backend: {BACKEND}}}\ntargets:\n"
        f"  {name}.entry: {{compile: true}}\n"
        f"  {name}.helper: {{error_on_graph_break: true}}\n"
        f"  {name}.Model.step: {{error_on_graph_break: false, reason: known break}}\n"
    )
    with apply(policy, audit=True) as handle:
        importlib.import_module(name).entry(torch.ones(3))
        report = handle.report()
    by_function = {b.function: b for b in report.graph_breaks}
    step = by_function[f"{name}.Model.step"]
    assert step.allowed and str(step.rule) == f"{name}.Model.step ({policy}:6)" and step.line == 13
    # the break in leaf (no rule) is governed by its caller helper's rule, even though it is
    # reached from the resume function Dynamo made after the break in step
    leaf = by_function[f"{name}.leaf"]
    assert not leaf.allowed and str(leaf.rule) == f"{name}.helper ({policy}:5)"
    assert (leaf.under, step.under) == (f"{name}.helper", None)  # the rule came from a caller
    assert f"in force from its caller {name}.helper (no rule of its own reaches it)" in (
        report.text()
    )
    assert [v.function for v in report.violations] == [f"{name}.leaf"]


def test_recompiles_are_reported_with_their_reason(modules: Modules) -> None:
    name = modules.write(modules.name("rc"), "def f(x):\n    return x * 2\n")
    policy = modules.policy(
        f"version: 1\ncompile: {{backend: {BACKEND}, dynamic: false}}\ntargets:\n"
        f"  {name}.f: {{compile: true}}\n"
    )
    with apply(policy) as handle:
        mod = importlib.import_module(name)
        mod.f(torch.ones(2))
        mod.f(torch.ones(5))
        (region,) = handle.report().regions
    assert region.graphs == 2 and region.recompiles == 1 and region.frames == 1
    assert "size" in region.recompile_reasons[0] or "shape" in region.recompile_reasons[0]


def test_user_logging_calls_and_reset_do_not_stop_recording(modules: Modules) -> None:
    name = modules.write(
        modules.name("lg"),
        "import torch\ndef f(x):\n    x = x + 1\n    torch._dynamo.graph_break()\n    return x\n",
    )
    policy = modules.policy(
        f"version: 1\ncompile: {{backend: {BACKEND}}}\ntargets:\n  {name}.f: {{compile: true}}\n"
    )
    with apply(policy) as handle:
        mod = importlib.import_module(name)
        torch._logging.set_logs(dynamo=40)  # what user code may do
        torch._dynamo.reset()
        mod.f(torch.ones(2))
        report = handle.report()
    torch._logging.set_logs()
    (brk,) = report.graph_breaks
    assert brk.function == f"{name}.f" and brk.line == 4 and brk.allowed and brk.rule is None


def test_unused_rules_and_patched_counts(modules: Modules) -> None:
    name = modules.write(modules.name("u"), "def a(x):\n    return x\ndef b(x):\n    return x\n")
    policy = modules.policy(
        f"version: 1\ntargets:\n  {name}.**: {{disable: true}}\n"
        "  nothing.here.**: {disable: true}\n"
    )
    with apply(policy) as handle:
        importlib.import_module(name)
        report = handle.report()
    assert [(r.pattern, r.where) for r in report.unused_rules] == [
        ("nothing.here.**", f"{policy}:4")
    ]
    assert [(str(r), n) for r, n in report.patched] == [(f"{name}.** ({policy}:3)", 2)]
    doc = report.to_dict()
    assert set(doc) >= {"policy", "torch", "regions", "graph_breaks", "violations", "unused_rules"}
    assert doc["policy"]["sha256"] == handle.policy.fingerprint
    assert doc["torch"]["version"] == torch.__version__


EMPTY_RESUME = """
import torch

def pause(x):
    torch._dynamo.graph_break()

def entry(x):
    y = x + 1
    pause(y)
    return y
"""


def test_audit_counts_no_more_than_a_normal_run_and_says_so(modules: Modules) -> None:
    """The one compile decision audit changes is torch's: a frame that traces no operation
    (here the resume function after the allowed break) is an empty graph while
    error_on_graph_break is on, and skipped once audit turned it off."""
    name = modules.write(modules.name("empty"), EMPTY_RESUME)
    policy = modules.policy(
        f"version: 1\ncompile: {{backend: {BACKEND}}}\ntargets:\n"
        f"  {name}.entry: {{compile: true}}\n"
        f"  {name}.**: {{error_on_graph_break: true}}\n"
        f"  {name}.pause: {{error_on_graph_break: false}}\n"
    )
    counts = {}
    for audit in (False, True):
        torch._dynamo.reset()
        with apply(policy, audit=audit) as handle:
            importlib.import_module(name).entry(torch.ones(2))
            report = handle.report()
        assert not report.violations and len(report.graph_breaks) == 1
        (region,) = report.regions
        counts[audit] = (region.frames, region.graphs)
        assert ("audit counts:" in report.text()) is audit
    assert counts[True] == (counts[False][0] - 1, counts[False][1] - 1)


OWN_COMPILE = """
import torch

class Block(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 4)

    def forward(self, x):
        return self.lin(x).relu()

class Model(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = torch.nn.ModuleList([Block(), Block()])

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        torch._dynamo.graph_break()
        return x * 2

if __name__ == "__main__":
    model = torch.compile(Model(), backend="eager")  # the program compiles the model whole
    model(torch.ones(2, 4))
"""


def test_run_counts_the_programs_own_compile_as_a_region(tmp_path: Path) -> None:
    """A program that compiles its model whole is a region of the report, with its graphs,
    and the policy's own entry traced inside it is said to lose its options there."""
    (tmp_path / "own.py").write_text(OWN_COMPILE)
    (tmp_path / "p.yaml").write_text("version: 1\ntargets:\n  own.Block: {fullgraph: true}\n")
    done = python(
        "-m", "policycompile", "run", "p.yaml", "--report-json", "r.json", "own.py", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "r.json").read_text())
    regions = {r["name"]: r for r in report["regions"]}
    model = regions["own.Model.forward"]
    lines = OWN_COMPILE.splitlines()
    line = next(i for i, text in enumerate(lines) if "model = torch.compile(" in text)
    assert model["rule"] == f"torch.compile at own.py:{line + 1}" and model["graphs"] == 2
    assert model["nested_entries"] == ["own.Block.forward"]
    assert "no compile entry ran" not in done.stderr
    assert "traces own.Block.forward, itself a compile entry" in done.stderr
    (brk,) = report["graph_breaks"]
    assert brk["function"] == "own.Model.forward" and brk["region"] == "own.Model.forward"


RECOMPILING = """
import torch

STATS = []

def step(x):
    x = x * 2
    torch._dynamo.graph_break()
    STATS.append(1)  # the resume function guards on the list: it recompiles
    return x + len(STATS)

if __name__ == "__main__":
    f = torch.compile(step, backend="eager")
    for n in (2, 2, 3, 3):
        f(torch.ones(n))
"""


def test_run_counts_every_recompile_torch_logs(tmp_path: Path) -> None:
    """Recompiles of the program's own compile, its resume functions included, as many as
    torch itself logs (``TORCH_LOGS=recompiles``), each with its guard."""
    (tmp_path / "rec.py").write_text(RECOMPILING)
    (tmp_path / "p.yaml").write_text("version: 1\ntargets: {}\n")
    plain = python("rec.py", cwd=tmp_path, env={"TORCH_LOGS": "recompiles"})
    logged = plain.stderr.count("Recompiling function")
    assert logged >= 3, plain.stderr[-3000:]  # the shape, and the resume function's guard
    done = python(
        "-m", "policycompile", "run", "p.yaml", "--report-json", "r.json", "rec.py", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (region,) = json.loads((tmp_path / "r.json").read_text())["regions"]
    assert region["recompiles"] == logged == len(region["recompile_reasons"])
    assert any("STATS" in reason for reason in region["recompile_reasons"])


FULLGRAPH_OWN = """
import torch

def g(x):
    print("in g")
    return x + 1

@torch.compile(fullgraph=True, backend="eager")
def f(x):
    return g(x.cos())

if __name__ == "__main__":
    try:
        f(torch.ones(2))
    except Exception as exc:
        print("caught", type(exc).__name__)
"""


@pytest.mark.parametrize("caught", [True, False])
def test_the_programs_own_fullgraph_failure_is_a_violation_of_its_call(
    tmp_path: Path, caught: bool
) -> None:
    """Audit relaxes nothing of the program's own torch.compile: its fullgraph failure is
    listed, under that call as the rule, whether or not the program catches it."""
    source = FULLGRAPH_OWN if caught else FULLGRAPH_OWN.replace("    try:\n", "    if True:\n")
    source = source if caught else source.replace("    except Exception as exc:", "    if False:")
    (tmp_path / "own.py").write_text(source)
    (tmp_path / "p.yaml").write_text("version: 1\ntargets: {}\n")
    done = python(
        "-m",
        "policycompile",
        "run",
        "p.yaml",
        "--audit",
        "--report-json",
        "r.json",
        "own.py",
        cwd=tmp_path,
    )
    assert done.returncode == (4 if caught else 1), done.stderr[-3000:]
    report = json.loads((tmp_path / "r.json").read_text())
    (region,) = report["regions"]
    assert (region["name"], region["failed_compiles"]) == ("own.f", 1)
    (violation,) = report["violations"]
    assert violation["rule"] == "torch.compile at own.py:8"


@pytest.mark.inductor
def test_inductors_compile_workers_are_never_children_of_the_program(tmp_path: Path) -> None:
    """Inductor's own worker processes compile nothing of the program's: they never apply the
    policy, and are never joined into the report."""
    (tmp_path / "cw.py").write_text(
        "import torch\n\ndef f(x):\n    return (x * 2).sin() + 1\n\n"
        "if __name__ == '__main__':\n    print(torch.compile(f)(torch.ones(8)).sum().item())\n"
    )
    (tmp_path / "p.yaml").write_text(
        "version: 1\ntargets:\n  cw.**: {error_on_graph_break: true}\n"
    )
    env = {"TORCHINDUCTOR_COMPILE_THREADS": "2", "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "c")}
    done = python(
        "-m",
        "policycompile",
        "run",
        "p.yaml",
        "--report-json",
        "r.json",
        "cw.py",
        cwd=tmp_path,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["processes"] == 1 and [r["name"] for r in report["regions"]] == ["cw.f"]
