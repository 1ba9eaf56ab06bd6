"""One rank of the distributed benchmark (started by torchrun, under ``policycompile run`` or
plain ``python``): a small DDP model, a few steps, and the wall time of
``init_process_group`` and ``destroy_process_group``, which is where policycompile adds the
agreement check and the report gather. Writes ``rank<N>.json`` into the folder given."""

from __future__ import annotations

import json
import os
import sys
import time

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel


class Block(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.lin = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.lin(x)) + x


def main() -> None:
    start = time.perf_counter()
    dist.init_process_group("gloo")
    init_s = time.perf_counter() - start
    rank = dist.get_rank()
    torch.manual_seed(0)
    model = DistributedDataParallel(nn.Sequential(*(Block(16) for _ in range(4))))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    for _ in range(3):
        loss = model(torch.randn(8, 16)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    start = time.perf_counter()
    dist.destroy_process_group()
    destroy_s = time.perf_counter() - start
    timings: dict[str, float] = {}
    from policycompile._runtime.state import STATE

    if STATE.active is not None:
        timings = dict(STATE.active.ranks.timings)
    line = {"rank": rank, "init_s": init_s, "destroy_s": destroy_s, **timings}
    with open(os.path.join(sys.argv[1], f"rank{rank}.json"), "w") as f:
        json.dump(line, f)


if __name__ == "__main__":
    main()
