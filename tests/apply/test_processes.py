"""Child processes of ``policycompile run`` apply its policy (docs/distributed.md): multiprocessing
with spawn and forkserver, DataLoader workers, Python subprocesses; their observations join
the parent's report. Each case is checked against the same program run by plain ``python``,
where the child's break does not raise: the difference is the policy, applied in the child."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jsonschema
import pytest

from tests.conftest import ROOT, python

pytestmark = pytest.mark.slow

REPORT_SCHEMA = json.loads((ROOT / "schemas" / "report.schema.json").read_text())

NET = """
import torch

class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 4)

    def forward(self, x):
        x = self.lin(x)
        torch._dynamo.graph_break()
        return x.relu()
"""

BREAK = ("netlib.Net.forward", 1 + NET.splitlines().index("        torch._dynamo.graph_break()"))

POLICY = """
version: 1
compile: {backend: eager}
profiles:
  lenient:
    targets:
      netlib.Net: {error_on_graph_break: false}
targets:
  netlib.Net:
    compile: true
    error_on_graph_break: true
"""

MULTIPROCESSING = """
import multiprocessing as mp
import sys
import time
import torch
import netlib

def double(x):  # a compile entry by policy, defined in the main module
    torch._dynamo.graph_break()
    return x * 2

def outcome(call):
    try:
        call()
        return "ok"
    except Exception as exc:
        return type(exc).__name__

def work(q):
    q.put(outcome(lambda: netlib.Net()(torch.ones(2, 4))))
    q.put(outcome(lambda: double(torch.ones(2))))

def late():  # left running by a parent that does not join it: the interpreter waits for it
    time.sleep(1)
    outcome(lambda: double(torch.ones(2)))

if __name__ == "__main__":
    ctx = mp.get_context(sys.argv[1])
    if sys.argv[2:] == ["late"]:
        ctx.Process(target=late).start()
        sys.exit(0)
    q = ctx.Queue()
    p = ctx.Process(target=work, args=(q,))
    p.start()
    print("child:", q.get(), q.get())
    p.join()
"""


def _project(tmp_path: Path, program: str, name: str = "prog.py") -> None:
    (tmp_path / "netlib.py").write_text(NET)
    policy = textwrap.dedent(POLICY).lstrip()
    policy += "  prog.double:\n    compile: true\n    error_on_graph_break: true\n"
    (tmp_path / "p.yaml").write_text(policy)
    (tmp_path / name).write_text(textwrap.dedent(program).lstrip())


def _run(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], dict[str, object]]:
    out = tmp_path / "report.json"
    done = python(
        "-m", "policycompile", "run", "p.yaml", "--report-json", str(out), *args, cwd=tmp_path
    )
    report = json.loads(out.read_text())
    jsonschema.validate(report, REPORT_SCHEMA)
    return done, report


def _violations(report: dict[str, object]) -> list[tuple[str, int]]:
    return [(v["function"], v["line"]) for v in report["violations"]]  # type: ignore[attr-defined, index]


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_multiprocessing_child_applies_the_policy(tmp_path: Path, method: str) -> None:
    _project(tmp_path, MULTIPROCESSING)
    plain = python("prog.py", method, cwd=tmp_path)
    assert plain.stdout == "child: ok ok\n", plain.stderr[-2000:]

    done, report = _run(tmp_path, "prog.py", method)
    assert done.returncode == 0, done.stderr[-3000:]
    # an imported module's rule, and one on the parent's main module, re-run as __mp_main__
    assert done.stdout == "child: Unsupported Unsupported\n"
    # the child's breaks, joined into the parent's report, with the child's regions
    assert report["processes"] == 2
    assert sorted(_violations(report)) == [BREAK, ("prog.double", 8)]
    regions = {r["name"]: r["failed_compiles"] for r in report["regions"]}  # type: ignore[attr-defined]
    assert regions == {"netlib.Net.forward": 1, "prog.double": 1}
    assert "ranks" not in report  # no process group: not a merged report


def test_child_takes_the_profile_and_audit_setting(tmp_path: Path) -> None:
    _project(tmp_path, MULTIPROCESSING)
    done, report = _run(tmp_path, "--profile", "lenient", "prog.py", "spawn")
    assert done.stdout == "child: ok Unsupported\n", done.stderr[-3000:]
    assert report["policy"]["profile"] == "lenient"  # type: ignore[index]
    assert _violations(report) == [("prog.double", 8)]
    # audit: nothing raises in the child; its violations make the run exit 4
    done, report = _run(tmp_path, "--audit", "prog.py", "spawn")
    assert done.stdout == "child: ok ok\n", done.stderr[-3000:]
    assert done.returncode == 4
    assert sorted(_violations(report)) == [BREAK, ("prog.double", 8)]


def test_report_waits_for_children_the_interpreter_waits_for(tmp_path: Path) -> None:
    _project(tmp_path, MULTIPROCESSING)
    done, report = _run(tmp_path, "prog.py", "spawn", "late")
    assert done.returncode == 0, done.stderr[-3000:]
    assert report["processes"] == 2
    assert _violations(report) == [("prog.double", 8)]


DATALOADER = """
import torch
from torch.utils.data import DataLoader, Dataset
import netlib

class Items(Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, i):
        return netlib.Net()(torch.ones(1, 4))[0].detach()

def main():
    loader = DataLoader(Items(), batch_size=2, num_workers=2, multiprocessing_context="spawn")
    try:
        batches = list(loader)
        print("loaded", len(batches))
    except Exception as exc:
        print("worker failed:", "graph_break" in str(exc))

if __name__ == "__main__":
    main()
"""


def test_dataloader_spawn_workers_apply_the_policy(tmp_path: Path) -> None:
    _project(tmp_path, DATALOADER)
    plain = python("prog.py", cwd=tmp_path)
    assert plain.stdout == "loaded 2\n", plain.stderr[-2000:]

    done, report = _run(tmp_path, "prog.py")
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout == "worker failed: True\n"
    assert report["processes"] == 3  # the run and its two workers
    assert _violations(report) == [BREAK]


SUBPROCESS = """
import subprocess
import sys

done = subprocess.run([sys.executable, "child.py"], capture_output=True, text=True)
print("child status", done.returncode)
print("child stderr has the break:", "graph_break" in done.stderr)
print("child stderr:", done.stderr.splitlines()[-1] if done.stderr else "")
"""

CHILD = """
import torch
import netlib

def helper(x):
    return netlib.Net()(x)

helper(torch.ones(2, 4))
print("child ran")
"""


def test_python_subprocess_applies_the_policy(tmp_path: Path) -> None:
    _project(tmp_path, SUBPROCESS)
    (tmp_path / "child.py").write_text(textwrap.dedent(CHILD).lstrip())
    with (tmp_path / "p.yaml").open("a") as f:
        f.write("  child.helper:\n    error_on_graph_break: false\n")
    plain = python("prog.py", cwd=tmp_path)
    assert "child status 0" in plain.stdout, plain.stdout + plain.stderr[-2000:]

    done, report = _run(tmp_path, "prog.py")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "child status 1" in done.stdout and "the break: True" in done.stdout
    assert report["processes"] == 2
    assert _violations(report) == [BREAK]
    # the child's own script is run by the interpreter, not by policycompile run: said
    (warning,) = [w for w in report["warnings"] if "not patched in child process" in w]  # type: ignore[attr-defined]
    assert "child: helper" in warning and "policycompile run" in warning


def test_child_refuses_a_policy_that_changed(tmp_path: Path) -> None:
    """A child that would load another policy than its parent applied stops, loudly."""
    _project(tmp_path, "")
    session = {
        "policy": str(tmp_path / "p.yaml"),
        "profile": None,
        "audit": False,
        "sha256": "0" * 64,
        "spool": str(tmp_path),
        "rank_check": True,
    }
    env = {"POLICYCOMPILE_RUN": json.dumps(session)}
    done = python("-c", "import torch; print('ran')", cwd=tmp_path, env=env)
    assert done.returncode == 1 and done.stdout == ""
    assert "the policy file changed since `policycompile run` started" in done.stderr
    assert "Traceback" not in done.stderr
    # a child that never imports torch pays nothing and is left alone
    done = python("-c", "import sys; print('ran', 'torch' in sys.modules)", cwd=tmp_path, env=env)
    assert (done.returncode, done.stdout) == (0, "ran False\n")
    # a malformed variable: read, not parsed, at start-up (a child that never imports torch
    # compiles nothing); the child stops with one line where torch is imported
    done = python("-c", "print('ran')", cwd=tmp_path, env={"POLICYCOMPILE_RUN": "{"})
    assert (done.returncode, done.stdout, done.stderr) == (0, "ran\n", "")
    done = python("-c", "import torch; print('ran')", cwd=tmp_path, env={"POLICYCOMPILE_RUN": "{"})
    assert done.returncode == 1 and done.stdout == ""
    assert "POLICYCOMPILE_RUN is not valid" in done.stderr
    assert "Traceback" not in done.stderr and "Fatal Python error" not in done.stderr
    # a well-formed variable with a field of the wrong type: the same one line
    wrong = json.dumps({**session, "profile": 5})
    done = python(
        "-c", "import torch; print('ran')", cwd=tmp_path, env={"POLICYCOMPILE_RUN": wrong}
    )
    assert done.returncode == 1 and done.stdout == ""
    assert "POLICYCOMPILE_RUN is not valid (field 'profile' must be str or null, not 5)" in (
        done.stderr
    )
    assert "Traceback" not in done.stderr


def test_startup_file_is_installed_and_inert_without_the_variable() -> None:
    """The .pth that starts children is in site-packages, as the wheel installs it, and
    does nothing unless ``policycompile run`` set its variable."""
    import site

    found = [Path(d) / "policycompile.pth" for d in site.getsitepackages()]
    installed = [p for p in found if p.exists()]
    assert installed, f"policycompile.pth not in {site.getsitepackages()}: reinstall (make)"
    assert installed[0].read_bytes() == (ROOT / "startup" / "policycompile.pth").read_bytes()
    env = {k: v for k, v in os.environ.items() if k != "POLICYCOMPILE_RUN"}
    code = "import sys; print(sorted(m for m in sys.modules if m.startswith('policycompile')))"
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert done.stdout == "[]\n"


SPAWNED = """
import multiprocessing as mp
import torch
import netlib

def work(q):
    try:
        netlib.Net()(torch.ones(2, 4))
        q.put("ok")
    except Exception as exc:
        q.put(type(exc).__name__)

def answer(q, p):
    # the child's answer, or at once how it died (its own stderr says why): a child that
    # fails at start-up never answers, and waiting out a timeout would hide the cause
    import queue

    while True:
        try:
            return q.get(timeout=0.5)
        except queue.Empty:
            if not p.is_alive():
                return f"died with exit status {p.exitcode}"

if __name__ == "__main__":
    q = mp.get_context("spawn").Queue()
    p = mp.get_context("spawn").Process(target=work, args=(q,))
    p.start()
    print("child:", answer(q, p))
    p.join()
"""


def test_suggest_update_runs_the_lenient_file_in_children(tmp_path: Path) -> None:
    """``suggest --update`` runs a ``strict`` file as lenient, so that a rule naming nothing
    is marked instead of stopping the program; a spawned child applies the same lenient
    policy (it would otherwise refuse a policy other than its parent's) and its break, which
    the file forbids, reaches the update."""
    _project(tmp_path, SPAWNED)
    with (tmp_path / "p.yaml").open("a") as f:
        f.write("  netlib.gone: {disable: true}\n")  # strict: this alone would stop a run
    assert python("prog.py", cwd=tmp_path).stdout == "child: ok\n"
    assert python("-m", "policycompile", "run", "p.yaml", "prog.py", cwd=tmp_path).returncode == 1

    done = python("-m", "policycompile", "suggest", "--update", "p.yaml", "prog.py", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout == "child: ok\n"  # audit: the child records the break, raises nothing
    assert "graph_break()`: forbidden by netlib.Net (p.yaml:" in done.stderr, done.stderr[-3000:]
    assert "p.yaml: netlib.gone matched nothing in the run" in done.stderr
    updated = (tmp_path / "p.yaml").read_text()
    assert "      netlib.Net.forward:\n        error_on_graph_break: true\n" in updated


FORKING = """
import multiprocessing as mp
import torch
from torch._dynamo.utils import counters

def graphs():
    return counters["stats"]["unique_graphs"]

def first(x):
    return x + 1

def second(x):
    return x * 2

def grandchild():
    before = graphs()  # its memory holds a copy of its parent's counts
    second(torch.ones(3))
    print("graphs", graphs() - before, flush=True)

def child():
    first(torch.ones(2))
    print("graphs", graphs(), flush=True)
    p = mp.get_context("fork").Process(target=grandchild)
    p.start()
    p.join()

if __name__ == "__main__":
    p = mp.get_context("spawn").Process(target=child)
    p.start()
    p.join()
"""


def test_a_forked_process_reports_only_what_it_compiled(tmp_path: Path) -> None:
    """A process forked by a child holds a copy of the child's counts: it reports only its
    own, and the report's totals equal torch's own counts summed over the processes."""
    (tmp_path / "prog.py").write_text(FORKING)
    (tmp_path / "p.yaml").write_text(
        "version: 1\ncompile: {backend: eager}\ntargets:\n"
        "  prog.first: {compile: true}\n  prog.second: {compile: true}\n"
    )
    done, report = _run(tmp_path, "prog.py")
    assert done.returncode == 0, done.stderr[-3000:]
    torch_graphs = sum(int(line.split()[1]) for line in done.stdout.splitlines())
    regions = report["regions"]
    assert torch_graphs == 2 and report["processes"] == 3
    assert sum(r["graphs"] for r in regions) == torch_graphs  # type: ignore[attr-defined]
    assert not any(r["recompile_reasons"] for r in regions)  # type: ignore[attr-defined]


FORKED_BY_MAIN = """
import multiprocessing as mp
import torch

def step(x):
    x = x + 1
    torch._dynamo.graph_break()
    return x * 2

def work():
    torch.compile(step, backend="eager")(torch.ones(2))

if __name__ == "__main__":
    p = mp.get_context("fork").Process(target=work)
    p.start()
    p.join()
    print("child", p.exitcode)
"""


def test_an_audit_sees_a_process_forked_by_the_main_program(tmp_path: Path) -> None:
    """A fork-context worker of the main program reports its break: the audit fails as it
    must, never "0 violations" for a break it could not see."""
    (tmp_path / "prog.py").write_text(FORKED_BY_MAIN)
    (tmp_path / "p.yaml").write_text(
        "version: 1\ntargets:\n  prog.**: {error_on_graph_break: true}\n"
    )
    done, report = _run(tmp_path, "--audit", "prog.py")
    assert done.returncode == 4, done.stderr[-3000:]
    assert done.stdout == "child 0\n" and report["processes"] == 2
    (violation,) = report["violations"]  # type: ignore[misc]
    assert violation["function"] == "prog.step"  # type: ignore[index]


def test_startup_imports_only_what_reads_the_variable_and_watches_for_torch() -> None:
    """A child that never imports torch pays for reading the variable and a watch on torch
    only (docs/distributed.md, benchmarks/startup.py): beyond what plain ``python`` imports,
    start-up adds policycompile's own start-up modules and four small standard ones; not
    ``json`` (nor ``re``, which it imports), ``typing``, ``collections`` or ``dataclasses``."""
    code = "import sys; print(' '.join(sorted(sys.modules)))"
    plain_env = {k: v for k, v in os.environ.items() if k != "POLICYCOMPILE_RUN"}
    child_env = {**plain_env, "POLICYCOMPILE_RUN": '{"policy": "p.yaml"}'}
    imported = [
        set(
            subprocess.run(
                [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
            ).stdout.split()
        )
        for env in (plain_env, child_env)
    ]
    added = imported[1] - imported[0]
    ours = {m for m in added if m.split(".")[0] == "policycompile"}
    assert "policycompile._runtime.startup" in ours
    assert added - ours <= {"__future__", "atexit", "itertools", "types"}, added - ours
