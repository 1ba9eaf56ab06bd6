"""benchmarks/gpu.py on a machine without CUDA: a clear message and a clean exit."""

from __future__ import annotations

from .conftest import ROOT, python


def test_gpu_script_without_a_gpu_exits_cleanly() -> None:
    done = python("-m", "benchmarks.gpu", cwd=ROOT, env={"CUDA_VISIBLE_DEVICES": ""}, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (
        "benchmarks/gpu.py: no CUDA GPU on this machine; nothing to measure (exit 0)."
    )
