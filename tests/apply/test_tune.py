"""``policycompile tune`` (docs/tune.md): candidates measured in fresh processes, rejected for a
reason, the winner written through the round trip; the budget; the issue's Mixtral case, whose
regional layer meets a break only when it is the compile entry."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from ..conftest import ROOT, python

NET = """
import torch


class Block(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(16, 16)

    def forward(self, x):
        return torch.relu(self.lin(x)) + x


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = torch.nn.ModuleList(Block() for _ in range(4))

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return x
"""

PROGRAM = """
import torch
import net

torch.manual_seed(0)
model = net.Net()
x = torch.randn(2, 16)
with torch.no_grad():
    for _ in range(3):
        model(x)
"""

POLICY = (
    "# the team's policy\nversion: 1\ntargets:\n  net.Net.forward:\n    compile: {backend: eager}\n"
)


def _project(tmp_path: Path) -> None:
    (tmp_path / "net.py").write_text(NET)
    (tmp_path / "prog.py").write_text(PROGRAM)
    (tmp_path / "p.yaml").write_text(POLICY)


_NOTE = (
    "import os\nwith open({path!r}, 'a') as f:\n"
    "    f.write(f'{what} {{os.getpid()}} {{os.environ.get(\"RANK\")}}\\n')\n"
)


def _noted(program: str, pids: Path) -> str:
    """``program``, writing ``start PID RANK`` to ``pids`` first and ``done PID RANK`` last."""
    start = _NOTE.format(path=str(pids), what="start")
    return start + program + _NOTE.format(path=str(pids), what="done")


def _tune(tmp_path: Path, *args: str) -> tuple[Any, dict[str, Any]]:
    done = python("-m", "policycompile", "tune", "p.yaml", "--json", *args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    doc: dict[str, Any] = json.loads(done.stdout)
    return done, doc


def test_candidates_are_measured_and_the_winner_written(tmp_path: Path) -> None:
    _project(tmp_path)
    done, doc = _tune(tmp_path, "-o", "tuned.yaml", "prog.py")
    assert doc["entry"] == "net.Net.forward" and doc["goal"] == "cold"
    rows = {r["candidate"]: r for r in doc["candidates"]}
    assert list(rows) == ["policy (as it is)", "regional Block", "nested Block"]
    assert rows["regional Block"]["rules"] == {
        "net.Block": {"compile": {"backend": "eager"}},
        "net.Net.forward": {"compile": False},
    }
    for row in rows.values():
        assert row["status"] == 0 and row["calls"] == 3 and row["cold_s"] > 0
        assert row["graph_breaks"] == 0 and row["peak_mib"] > 0
    assert rows["regional Block"]["rejected"] is None  # same output, no break, no recompile
    assert rows["policy (as it is)"]["graphs"] == 1 and rows["nested Block"]["graphs"] >= 1
    for n in range(1, 4):
        assert f"[{n}/3]" in done.stderr  # a progress line per candidate
    winner = rows[doc["winner"]]
    accepted = [r for r in rows.values() if r["rejected"] is None]
    assert winner["cold_s"] == min(r["cold_s"] for r in accepted)
    out = tmp_path / "tuned.yaml"
    if winner["kind"] == "policy":
        assert not out.exists()
        return
    text = out.read_text()
    assert text.startswith("# the team's policy\n")  # the round trip keeps the file's own
    assert f"# tune: {doc['winner']}, chosen for the cold goal; cold first call" in text
    assert python("-m", "policycompile", "validate", "tuned.yaml", cwd=tmp_path).returncode == 0
    rerun = python("-m", "policycompile", "run", "tuned.yaml", "prog.py", cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr[-2000:]


def test_the_budget_skips_what_does_not_fit(tmp_path: Path) -> None:
    _project(tmp_path)
    done, doc = _tune(tmp_path, "--budget", "0", "prog.py")
    assert [r["candidate"] for r in doc["candidates"]] == ["policy (as it is)"]
    assert "[2/3] regional Block: skipped, about" in done.stderr
    assert doc["winner"] == "policy (as it is)"


def test_usage_errors_change_nothing(tmp_path: Path) -> None:
    _project(tmp_path)
    both = python(
        "-m",
        "policycompile",
        "tune",
        "p.yaml",
        "-o",
        "x.yaml",
        "--update",
        "prog.py",
        cwd=tmp_path,
    )
    assert both.returncode == 2 and "not both" in both.stderr
    onto = python("-m", "policycompile", "tune", "p.yaml", "-o", "p.yaml", "prog.py", cwd=tmp_path)
    assert onto.returncode == 2 and "give another -o, or --update" in onto.stderr
    assert (tmp_path / "p.yaml").read_text() == POLICY and not (tmp_path / "x.yaml").exists()


MIXTRAL = """
import torch
from transformers import MixtralConfig, MixtralForCausalLM

torch.manual_seed(0)
config = MixtralConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=2, num_key_value_heads=1, num_local_experts=2,
                       num_experts_per_tok=1, vocab_size=100, max_position_embeddings=64)
model = MixtralForCausalLM(config)
ids = torch.randint(0, 100, (1, 8))
optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
for _ in range(2):
    model(input_ids=ids, labels=ids).loss.backward()
    optimizer.step()
    optimizer.zero_grad()
"""


def test_mixtral_regional_layer_is_measured_and_rejected(tmp_path: Path) -> None:
    """The issue's case: suggest proposed Mixtral's decoder layer as a regional entry it never
    ran, and as an entry of its own the layer behaves otherwise than inside the whole model
    (transformers' output-capturing hooks). tune runs it, and rejects it saying why."""
    pytest.importorskip("transformers")
    (tmp_path / "prog.py").write_text(MIXTRAL)
    entry = "transformers.models.mixtral.modeling_mixtral.MixtralForCausalLM.forward"
    (tmp_path / "p.yaml").write_text(
        f"version: 1\ntargets:\n  {entry}:\n    compile: {{backend: eager}}\n"
    )
    done, doc = _tune(tmp_path, "prog.py")
    rows = {r["candidate"]: r for r in doc["candidates"]}
    base, regional = rows["policy (as it is)"], rows["regional MixtralDecoderLayer"]
    assert base["graph_breaks"] == 0 and base["recompiles"] == 0 and base["rejected"] is None
    assert regional["rejected"] is not None
    assert regional["rejected"].startswith(
        ("adds graph breaks", "adds recompiles", "the program failed")
    ), regional
    assert doc["winner"] != "regional MixtralDecoderLayer"
    assert "regional MixtralDecoderLayer: cold" in done.stderr


DISTRIBUTED = """
import os
import torch
import torch.distributed as dist
import net

dist.init_process_group("gloo")
torch.manual_seed(0)
model = net.Net()
x = torch.randn(2, 16)
with torch.no_grad():
    for _ in range(3):
        y = model(x)
        dist.all_reduce(y)
dist.destroy_process_group()
"""


def test_under_torchrun_rank_0_decides_and_every_rank_runs_each_candidate(
    tmp_path: Path,
) -> None:
    _project(tmp_path)
    (tmp_path / "prog.py").write_text(DISTRIBUTED)
    done = python(
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--master-addr",
        "127.0.0.1",
        "--master-port",
        "29561",
        "-m",
        "policycompile",
        "tune",
        "p.yaml",
        "--json",
        "-o",
        "tuned.yaml",
        "prog.py",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "rank 1: rank 0 runs each candidate on all 2 ranks, and writes" in done.stderr
    doc = json.loads(done.stdout[done.stdout.index("{") :])
    rows = {r["candidate"]: r for r in doc["candidates"]}
    assert list(rows) == ["policy (as it is)", "regional Block", "nested Block"]
    for row in rows.values():
        assert row["status"] == 0 and row["calls"] == 3, row
    winner = rows[doc["winner"]]
    assert (tmp_path / "tuned.yaml").exists() == (winner["kind"] != "policy")


def _sigint_default() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _tune_started(
    tmp_path: Path, *launcher: str, stdout: int = subprocess.PIPE
) -> subprocess.Popen[str]:
    """``policycompile tune p.yaml --json prog.py`` started in ``tmp_path`` as from a terminal,
    with SIGINT at its default (a suite started in the background by a shell inherits SIGINT
    ignored, and Python then never raises KeyboardInterrupt); ``launcher``: what runs
    ``-m policycompile`` (this Python, unless a torchrun)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    command = [*(launcher or [sys.executable]), "-m", "policycompile"]
    return subprocess.Popen(
        [*command, "tune", "p.yaml", "--json", "prog.py"],
        cwd=tmp_path,
        env=env,
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_sigint_default,
    )


def _started(pids: Path) -> list[tuple[int, str]]:
    """(pid, RANK) of each program run that ``pids`` notes as started (:func:`_noted`)."""
    text = pids.read_text() if pids.exists() else ""
    return [(int(ln.split()[1]), ln.split()[2]) for ln in text.splitlines() if "start" in ln]


def _runs(
    pids: Path, proc: subprocess.Popen[str], count: int, within: float
) -> list[tuple[int, str]]:
    """:func:`_started`, once ``count`` runs have started, tune has ended, or ``within``
    seconds have passed."""
    deadline = time.monotonic() + within
    while len(_started(pids)) < count and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    runs = _started(pids)
    assert len(runs) >= count, pids.read_text() if pids.exists() else "no program run"
    return runs


def test_ctrl_c_keeps_what_was_measured(tmp_path: Path) -> None:
    _project(tmp_path)
    proc = _tune_started(tmp_path)
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:  # interrupt while the second candidate runs
        seen.append(line)
        if "[2/3] regional Block: running" in line:
            proc.send_signal(signal.SIGINT)
            break
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, "".join(seen) + err
    assert "interrupted: keeping the 1 candidate(s) measured" in err
    doc = json.loads(out)
    assert doc["interrupted"] is True
    assert [r["candidate"] for r in doc["candidates"]] == ["policy (as it is)"]


def test_ctrl_c_as_a_candidate_starts_stops_that_candidate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C landing after the fork inside ``Popen``, before it returns the child: tune stops
    as it does for Ctrl-C anywhere else, and the candidate's process does not run on."""
    import argparse

    from policycompile._commands import candidates

    _project(tmp_path)
    (tmp_path / "prog.py").write_text("import time\ntime.sleep(120)\n")
    real = subprocess.Popen
    started: list[int] = []

    class PressedAsItStarts(real):  # type: ignore[misc,valid-type]
        """The real Popen, with Ctrl-C pressed once the child exists, before it returns."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            started.append(self.pid)
            os.kill(os.getpid(), signal.SIGINT)
            _ = [0 for _ in range(3)]  # Python's own handler raises here, between bytecodes

    monkeypatch.setattr(subprocess, "Popen", PressedAsItStarts)
    monkeypatch.chdir(tmp_path)
    args = argparse.Namespace(module=None, program="prog.py", program_args=[], profile=None)
    candidate = candidates.Candidate("policy (as it is)", "policy", None)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal
    try:
        with pytest.raises(KeyboardInterrupt):
            candidates.run_candidate(candidate, args, "p.yaml", "net.Net.forward", str(tmp_path))
        assert started
        with pytest.raises(ProcessLookupError):  # killed and reaped, not running on
            os.kill(started[0], 0)
    finally:
        signal.signal(signal.SIGINT, previous)
        for pid in started:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_sigterm_ends_tune_and_the_candidate_it_runs(tmp_path: Path) -> None:
    """``kill -TERM`` while a candidate runs (a CI job's timeout): tune exits 143, as a
    terminated process does, and takes the candidate's process with it."""
    _project(tmp_path)
    pids = tmp_path / "pids"
    (tmp_path / "prog.py").write_text(_noted(PROGRAM, pids))
    proc = _tune_started(tmp_path, stdout=subprocess.DEVNULL)
    # the observing run (in tune's own process), the baseline, then the second candidate
    candidate, _ = _runs(pids, proc, 3, within=240)[2]
    try:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 128 + signal.SIGTERM, err[-3000:]
        assert "terminated: the candidate running was stopped, and nothing is written" in err
        time.sleep(5)  # the candidate takes about 2 s to its end: time to write, had it run on
        with pytest.raises(ProcessLookupError):
            os.kill(candidate, 0)
        assert f"done {candidate} " not in pids.read_text()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(candidate, signal.SIGKILL)


def test_ctrl_c_under_torchrun_stops_every_rank_of_the_candidate(tmp_path: Path) -> None:
    """A candidate of a torchrun job is a torchrun job itself, whose ranks each run in a
    session of their own: Ctrl-C to tune stops them all, not only their launcher."""
    _project(tmp_path)
    pids = tmp_path / "pids"
    (tmp_path / "prog.py").write_text(_noted(DISTRIBUTED, pids))
    job = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"]
    job += ["--master-addr", "127.0.0.1", "--master-port", "29563"]
    proc = _tune_started(tmp_path, *job, stdout=subprocess.DEVNULL)
    # the observing run (in the job's two tune processes), the baseline's two ranks, then
    # the second candidate's two
    runs = _runs(pids, proc, 6, within=300)
    try:
        tune_rank_0 = next(pid for pid, rank in runs[:2] if rank == "0")
        os.kill(tune_rank_0, signal.SIGINT)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err[-3000:]
        assert "interrupted: keeping the 1 candidate(s) measured" in err
        time.sleep(5)  # the candidate takes about 3 s to its end: time to write, had it run on
        for pid, _ in runs[4:6]:
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
            assert f"done {pid} " not in pids.read_text()
    finally:
        for pid, _ in _started(pids):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()
