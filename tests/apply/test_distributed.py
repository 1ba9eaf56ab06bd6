"""Ranks of a torch.distributed job under one policy (docs/distributed.md): launched by torchrun
(gloo on CPU, a small DDP model whose blocks are compile entries by policy), they agree on
the policy, and rank 0 prints and writes one merged report."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import jsonschema
import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow

REPORT_SCHEMA = json.loads((ROOT / "schemas" / "report.schema.json").read_text())
CONSOLE = Path(sys.executable).parent / "policycompile"

BLOCKS = """
import os
import torch
from torch import nn

def maybe_break(x):
    # a break only one rank has (rank 1, or BREAK_RANK): a constant to Dynamo
    if os.environ["RANK"] == os.environ.get("BREAK_RANK", "1"):
        torch._dynamo.graph_break()
    return x

class Block(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.lin = nn.Linear(dim, dim)

    def forward(self, x):
        return maybe_break(torch.relu(self.lin(x))) + x

class Model(nn.Module):
    def __init__(self, dim=8, depth=3):
        super().__init__()
        self.blocks = nn.ModuleList(Block(dim) for _ in range(depth))
        self.head = nn.Linear(dim, 1)

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return self.head(x)
"""

TRAIN = """
import os
import sys
import torch
import torch.distributed as dist
from torch._dynamo.utils import counters
from torch.nn.parallel import DistributedDataParallel as DDP
import blocks

def main():
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(0)
    model = DDP(blocks.Model())
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for step in range(3):
        # rank 1 changes its batch size at step 2: a recompile only it has
        batch = 5 if (rank == 1 and step == 2 and "--diverge" in sys.argv) else 4
        loss = model(torch.randn(batch, 8)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    graphs = counters["stats"]["unique_graphs"]
    print(f"TORCH rank={rank} graphs={graphs}", file=sys.stderr)
    # DDP goes before its group: where DDP's reducer holds a destroyed gloo group's last
    # reference, torch 2.13 can deadlock at main's return (docs/distributed.md)
    del model, opt, loss
    if "--keep-group" not in sys.argv:
        dist.destroy_process_group()

if __name__ == "__main__":
    main()
"""

POLICY = """
version: 1
compile: {backend: eager}
targets:
  blocks.Block:
    compile: true
  blocks.maybe_break:
    error_on_graph_break: %s
profiles:
  other:
    compile: {dynamic: false}
"""

LAUNCH = """
# runs each rank's command, chosen by rank: `launch.py RANK:ARGS... -- COMMON...`
import os
import sys

rank = os.environ["RANK"]
common = sys.argv[sys.argv.index("--") + 1 :]
extra = [a.split(":", 1)[1] for a in sys.argv[1 : sys.argv.index("--")] if a.startswith(rank + ":")]
if "plain" in extra:
    os.execv(sys.executable, [sys.executable, *common[-1:]])
os.execv(sys.executable, [sys.executable, "-m", "policycompile", "run", "p.yaml", *extra, *common])
"""


def _project(tmp_path: Path, *, forbid: bool = False) -> None:
    (tmp_path / "blocks.py").write_text(BLOCKS)
    (tmp_path / "train.py").write_text(TRAIN)
    (tmp_path / "launch.py").write_text(LAUNCH)
    (tmp_path / "p.yaml").write_text(POLICY % ("true" if forbid else "false"))


def _torchrun(
    tmp_path: Path, nproc: int, *command: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, **(env or {})}
    full["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tmp_path), str(ROOT)]))
    full.pop("POLICYCOMPILE_RUN", None)
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    # a session of its own: on a timeout, the ranks go with torchrun instead of living on
    with subprocess.Popen(
        [*launcher, "--nproc-per-node", str(nproc), *command],
        cwd=tmp_path,
        env=full,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    ) as process:
        try:
            out, err = process.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            out, err = process.communicate()
            pytest.fail(f"torchrun ran past 300 s:\n{(out + err)[-4000:]}")
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def _torch_graphs(output: str) -> dict[int, int]:
    return {int(r): int(g) for r, g in re.findall(r"TORCH rank=(\d+) graphs=(\d+)", output)}


@pytest.mark.parametrize(
    ("nproc", "form"), [(2, "python -m torch.distributed.run -m"), (4, "torchrun --no-python")]
)
def test_ranks_give_one_merged_report(tmp_path: Path, nproc: int, form: str) -> None:
    _project(tmp_path)
    out = tmp_path / "report.json"
    ours = ["run", "p.yaml", "--report-json", str(out), "train.py", "--diverge"]
    if form.endswith("-m"):
        done = _torchrun(tmp_path, nproc, "-m", "policycompile", *ours)
    else:
        done = _torchrun(tmp_path, nproc, "--no-python", str(CONSOLE), *ours)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert output.count("policycompile report") == 1  # printed once, by rank 0
    assert f"merged from {nproc} rank(s) (0-{nproc - 1})" in output
    report = json.loads(out.read_text())
    jsonschema.validate(report, REPORT_SCHEMA)
    assert report["ranks"] == list(range(nproc)) and report["processes"] == nproc

    (region,) = report["regions"]
    assert region["name"] == "blocks.Block.forward" and region["ranks"] == list(range(nproc))
    # each rank's graphs, as torch itself counted them on that rank
    by_rank = {e["rank"]: e["graphs"] for e in region["by_rank"]}
    assert by_rank == _torch_graphs(output)
    # rank 1 broke in maybe_break (allowed) and recompiled for its new batch size: the
    # region is divergent, and the break is reported for rank 1 alone
    assert region["divergent"] is True
    assert by_rank[1] > by_rank[0] and len(set(by_rank.values()) - {by_rank[1]}) == 1
    (brk,) = report["graph_breaks"]
    assert (brk["function"], brk["ranks"], brk["allowed"]) == ("blocks.maybe_break", [1], True)
    assert "DIVERGENT between ranks" in output and "on rank(s) 1 only" in output


def test_group_left_alive_is_merged_at_the_end(tmp_path: Path) -> None:
    _project(tmp_path)
    out = tmp_path / "report.json"
    done = _torchrun(
        tmp_path,
        2,
        "-m",
        "policycompile",
        "run",
        "p.yaml",
        "--report-json",
        str(out),
        "train.py",
        "--keep-group",
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    report = json.loads(out.read_text())
    assert report["ranks"] == [0, 1]
    (region,) = report["regions"]
    assert {e["rank"]: e["graphs"] for e in region["by_rank"]} == _torch_graphs(done.stderr)


def test_audit_exits_4_on_every_rank_when_one_rank_violates(tmp_path: Path) -> None:
    """Rank 0 violates, rank 1 does not: rank 1 learns it from rank 0's merged summary."""
    _project(tmp_path, forbid=True)
    out = tmp_path / "report.json"
    done = _torchrun(
        tmp_path,
        2,
        "-m",
        "policycompile",
        "run",
        "p.yaml",
        "--audit",
        "--report-json",
        str(out),
        "train.py",
        env={"BREAK_RANK": "0"},
    )
    output = done.stdout + done.stderr
    assert done.returncode != 0
    # Rank 1, which saw no violation itself, exits with 4 too, and says so. torchrun stops
    # the other ranks as soon as one exits with a failure, so each rank's status as torchrun
    # lists it is 4 or, stopped, -15; rank 0's report is written either way.
    assert "policycompile: rank 1: exit status 4: the job's audit found 1 violation" in output
    failed = dict(re.findall(r"rank\s*: (\d+) \(local_rank: \d+\)\s+exitcode\s*: (-?\d+)", output))
    assert set(failed) == {"0", "1"} and set(failed.values()) <= {"4", "-15"}, output[-4000:]
    assert "4" in failed.values()
    report = json.loads(out.read_text())
    assert [(v["function"], v["ranks"]) for v in report["violations"]] == [
        ("blocks.maybe_break", [0])
    ]


def test_ranks_with_different_profiles_all_fail_fast(tmp_path: Path) -> None:
    _project(tmp_path)
    start = time.monotonic()
    done = _torchrun(tmp_path, 2, "launch.py", "1:--profile", "1:other", "--", "train.py")
    elapsed = time.monotonic() - start
    output = done.stdout + done.stderr
    assert done.returncode != 0
    message = "the ranks of this job do not apply the same policy: "
    assert output.count(message) == 2, output[-4000:]  # every rank says it
    assert 'profile: null on rank(s) 0; "other" on rank(s) 1' in output
    assert "policycompile/_runtime/ranks.py" not in output  # a message, not a traceback of ours
    assert elapsed < 60, elapsed  # the timeout is 60 s: the mismatch did not wait for it
    assert "TORCH rank" not in output  # no rank trained

    # turned off, the same job runs
    done = _torchrun(
        tmp_path,
        2,
        "launch.py",
        "1:--profile",
        "1:other",
        "0:--no-rank-check",
        "1:--no-rank-check",
        "--",
        "train.py",
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]


def test_rank_without_policycompile_is_named_within_the_timeout(tmp_path: Path) -> None:
    _project(tmp_path)
    start = time.monotonic()
    done = _torchrun(
        tmp_path,
        2,
        "launch.py",
        "1:plain",
        "--",
        "train.py",
        env={"POLICYCOMPILE_RANK_TIMEOUT": "3"},
    )
    elapsed = time.monotonic() - start
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert "rank(s) 1 sent no policy within 3 s" in output, output[-4000:]
    assert elapsed < 60, elapsed


def test_suggest_without_a_base_on_ranks_agrees(tmp_path: Path) -> None:
    """The README's first command under torchrun: each rank runs under its own empty scratch
    policy, at a path of its own; the same content is the same policy, so the ranks agree."""
    _project(tmp_path)
    done = _torchrun(tmp_path, 2, "-m", "policycompile", "suggest", "-o", "s.yaml", "train.py")
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert "do not apply the same policy" not in output
    assert output.count("policycompile suggest: wrote s.yaml") == 1


def test_suggest_on_ranks_writes_one_policy_from_every_rank(tmp_path: Path) -> None:
    """``policycompile suggest`` under torchrun: rank 0 writes the policy once, from the
    report merged across ranks, so a break only rank 1 has gets its rule; the job under the
    suggestion's strict profile in audit lists that break."""
    _project(tmp_path)
    ours = ["suggest", "-o", "s.yaml", "--base", "p.yaml", "train.py"]
    done = _torchrun(tmp_path, 2, "-m", "policycompile", *ours)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert output.count("policycompile suggest: wrote s.yaml") == 1
    text = (tmp_path / "s.yaml").read_text(encoding="utf-8")
    assert "\n  blocks.maybe_break:\n    error_on_graph_break: false\n" in text
    assert "\n      blocks.maybe_break:\n        error_on_graph_break: true\n" in text

    report = tmp_path / "report.json"
    ours = ["run", "s.yaml", "--profile", "strict", "--audit", "--report-json", str(report)]
    done = _torchrun(tmp_path, 2, "-m", "policycompile", *ours, "train.py")
    assert done.returncode != 0
    (violation,) = json.loads(report.read_text())["violations"]
    assert (violation["function"], violation["ranks"]) == ("blocks.maybe_break", [1])
