"""The candidates of ``policycompile tune`` (docs/tune.md): each a policy extending the user's,
run as ``policycompile run`` in a fresh process (a torchrun job of the same size under
torchrun) with empty compile caches, measured, and judged against the policy as it is."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .tuning import ENV


@dataclass
class Candidate:
    """A strategy: ``targets`` are the rules added to the policy (an ``extends`` of it)."""

    name: str
    kind: str  # "policy", "regional" or "nested"
    layer: str | None
    targets: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class Measured:
    """What one candidate's run did."""

    candidate: Candidate
    status: int
    seconds: float  # the whole run
    cold: float | None  # from the process's start to the end of the entry's first call
    steady: float | None  # median seconds per call after the first
    calls: int
    graphs: int
    recompiles: int
    breaks: int
    peak_mib: float
    output: str | None  # the saved tensors of the first call
    error: str = ""
    rejected: str | None = None

    def value(self, goal: str) -> float | None:
        return {"cold": self.cold, "steady": self.steady, "memory": self.peak_mib}[goal]

    def row(self) -> dict[str, Any]:
        c = self.candidate
        return {
            "candidate": c.name,
            "kind": c.kind,
            "layer": c.layer,
            "rules": c.targets,
            "status": self.status,
            "seconds": round(self.seconds, 3),
            "cold_s": None if self.cold is None else round(self.cold, 3),
            "steady_ms": None if self.steady is None else round(self.steady * 1e3, 3),
            "calls": self.calls,
            "graphs": self.graphs,
            "recompiles": self.recompiles,
            "graph_breaks": self.breaks,
            "peak_mib": round(self.peak_mib, 1),
            "rejected": self.rejected,
        }


#: what a launcher (torchrun) tells the processes it starts: a candidate's own launcher sets
#: them afresh for its ranks
_LAUNCHER_ENV = (
    "RANK",
    "LOCAL_RANK",
    "WORLD_SIZE",
    "LOCAL_WORLD_SIZE",
    "GROUP_RANK",
    "ROLE_RANK",
    "ROLE_WORLD_SIZE",
    "ROLE_NAME",
    "GROUP_WORLD_SIZE",
    "MASTER_ADDR",
    "MASTER_PORT",
)


def _launcher(world: int) -> list[str]:
    """How a candidate starts: one process, or a torchrun job of ``world`` ranks on a port of
    its own, so that every rank runs the same candidate."""
    if world <= 1:
        return [sys.executable]
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        str(world),
        "--master-addr",
        "127.0.0.1",
        "--master-port",
        str(port),
    ]


def run_candidate(
    candidate: Candidate,
    args: argparse.Namespace,
    policy_path: str,
    entry: str,
    scratch: str,
    world: int = 1,
) -> Measured:
    folder = tempfile.mkdtemp(prefix="candidate-", dir=scratch)
    file = os.path.join(folder, "policy.yaml")
    doc: dict[str, Any] = {"version": 1, "extends": [policy_path], "targets": candidate.targets}
    with open(file, "w", encoding="utf-8") as f:
        json.dump(doc, f)  # JSON is YAML
    report, timing = os.path.join(folder, "report.json"), os.path.join(folder, "timing.json")
    command = [*_launcher(world), "-m", "policycompile", "run", file, "--report-json", report]
    command += ["--no-rank-check", *(["--profile", args.profile] if args.profile else [])]
    command += ["-m", args.module] if args.module else [args.program]
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in _LAUNCHER_ENV and not k.startswith(("TORCHELASTIC_", "TORCHRUN_"))
    }
    env |= {  # a cold start: compile caches of its own, empty
        "TORCHINDUCTOR_CACHE_DIR": os.path.join(folder, "inductor"),
        "TRITON_CACHE_DIR": os.path.join(folder, "triton"),
        ENV: json.dumps({"entry": entry, "out": timing}),
    }
    log = os.path.join(folder, "stderr.txt")
    started = time.time()
    with open(log, "wb") as err:
        proc: subprocess.Popen[bytes] | None = None
        try:
            with _guarded() as release:
                proc = subprocess.Popen(
                    [*command, *args.program_args], env=env, stdout=subprocess.DEVNULL, stderr=err
                )
                release()
                _, wait_status, usage = os.wait4(proc.pid, 0)
        except BaseException:
            if proc is not None:  # Ctrl-C or SIGTERM, wherever it landed: the candidate stops
                _stop(proc)
            raise
        status = proc.returncode = os.waitstatus_to_exitcode(wait_status)  # reaped: Popen knows
    seconds = time.time() - started
    times = _json(timing) or {}
    calls = list(times.get("calls") or [])
    first = times.get("first_done")
    rep = _json(report) or {}
    regions = rep.get("regions") or []
    output = timing + ".pt"
    return Measured(
        candidate,
        status,
        seconds,
        None if first is None else float(first) - started,
        statistics.median(calls[1:]) if len(calls) > 1 else None,
        len(calls),
        sum(int(r.get("graphs", 0)) for r in regions),
        sum(int(r.get("recompiles", 0)) for r in regions),
        len(rep.get("graph_breaks") or []),
        usage.ru_maxrss / 1024,
        output if os.path.exists(output) else None,
        _last_error(log),
    )


#: how long a candidate told to stop (SIGTERM) has before it is killed (SIGKILL)
STOP_GRACE_S = 30.0


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop a candidate's process and wait for it: SIGTERM, which torchrun passes on to its
    ranks (each runs in a session of its own: SIGKILL to torchrun would leave them running on),
    then SIGKILL after :data:`STOP_GRACE_S`, or at once on another Ctrl-C."""
    proc.terminate()
    try:
        proc.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        pass
    finally:
        if proc.returncode is None:
            proc.kill()
            proc.wait()


def _terminated(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def _guarded() -> Iterator[Callable[[], None]]:
    """While a candidate's process is started and waited for, a signal that ends ``tune``
    ends the candidate too (docs/tune.md, "Budget, progress, interruption").

    SIGTERM raises ``SystemExit(143)`` instead of ending the process where it stands (where it
    is SIG_DFL), so that the caller kills the candidate on its way out. SIGINT and SIGTERM that
    land while ``Popen`` starts the process are held until it returns the child, then handled
    (by calling what is yielded): raised between two bytecodes after the fork, they would
    leave the child running on, unseen. Only in the main thread, where handlers can be set; a
    signal that is ignored, or left to the system, is left as it is.
    """
    if threading.current_thread() is not threading.main_thread():
        yield lambda: None
        return
    handlers: dict[int, Any] = {signal.SIGINT: signal.getsignal(signal.SIGINT)}
    term = signal.getsignal(signal.SIGTERM)
    handlers[signal.SIGTERM] = _terminated if term == signal.SIG_DFL else term
    handlers = {signum: h for signum, h in handlers.items() if callable(h)}
    arrived: list[tuple[int, Any]] = []
    previous = {
        signum: signal.signal(signum, lambda signum, frame: arrived.append((signum, frame)))
        for signum in handlers
    }

    def release() -> None:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
        while arrived:
            signum, frame = arrived.pop(0)
            handlers[signum](signum, frame)

    try:
        yield release
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _json(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _last_error(log: str) -> str:
    try:
        with open(log, encoding="utf-8", errors="replace") as f:
            lines = [ln.strip() for ln in f if ln.strip()]
    except OSError:
        return ""
    errors = [ln for ln in lines if "Error" in ln or "Unsupported" in ln]
    return (errors or lines or [""])[-1][:300]


def judge(measured: Measured, base: Measured) -> str | None:
    """Why a candidate is rejected against the policy as it is; None when it is not."""
    if measured.status != 0:
        return f"the program failed (exit status {measured.status}): {measured.error}"
    if measured.cold is None:
        return "the outer entry never completed a call"
    if measured.breaks > base.breaks:
        return f"adds graph breaks ({measured.breaks} sites, against {base.breaks})"
    if measured.recompiles > base.recompiles:
        return f"adds recompiles ({measured.recompiles}, against {base.recompiles})"
    return _same_output(measured.output, base.output)


def _same_output(a: str | None, b: str | None) -> str | None:
    import torch

    if a is None or b is None:
        return "its output could not be compared"
    mine, theirs = torch.load(a), torch.load(b)
    if len(mine) != len(theirs):
        return f"changes the output ({len(mine)} tensors, against {len(theirs)})"
    for x, y in zip(mine, theirs, strict=True):
        if x.shape != y.shape or x.dtype != y.dtype:
            mine_, theirs_ = f"{x.dtype} {tuple(x.shape)}", f"{y.dtype} {tuple(y.shape)}"
            return f"changes the output (a {mine_} tensor, against {theirs_})"
        if not x.is_floating_point():
            if not torch.equal(x, y):
                return "changes the output (integer tensors differ)"
            continue
        low = x.dtype in (torch.float16, torch.bfloat16)
        rtol, atol = (1e-2, 1e-2) if low else (1e-4, 1e-5)
        if not torch.allclose(x, y, rtol=rtol, atol=atol, equal_nan=True):
            diff = (x.float() - y.float()).abs().max().item()
            return f"changes the output (largest difference {diff:.3g}, {x.dtype})"
    return None
