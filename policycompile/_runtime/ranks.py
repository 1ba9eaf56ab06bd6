"""Ranks of a ``torch.distributed`` job under one policy (docs/distributed.md): they agree on the
policy when the process group is created, and ``policycompile run`` merges their reports
into one before the group is destroyed.

Both exchanges go through the default process group's key-value store, the one
``init_process_group`` rendezvoused on (torchrun's TCPStore): it needs no device and no
shared filesystem, works with every backend, and every wait on it is bounded, so a rank that
does not take part (one not started under policycompile) is an error in seconds, not a hang.
Per exchange each rank writes one key and reads one; rank 0 reads them all in one request.
"""

from __future__ import annotations

import functools
import json
import os
import time
import types
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from .._engine.journal import HookRecord
from .._errors import PolicyRankError
from .._observe.merge import merge_ranks
from .._observe.report import Report, span
from .._policy.policy import Policy
from .._torch import catalog, dist
from .._version import __version__

RANK_CHECK_ENV = "POLICYCOMPILE_RANK_CHECK"
AGREE_TIMEOUT_ENV = "POLICYCOMPILE_RANK_TIMEOUT"
REPORT_TIMEOUT_ENV = "POLICYCOMPILE_REPORT_TIMEOUT"
AGREE_TIMEOUT_S = 60.0
REPORT_TIMEOUT_S = 300.0
_RANK0_GRACE_S = 10.0  # the other ranks wait this much longer than rank 0 for its answer

#: what every rank must have in common, in the order a difference is told
COMPARED = ("sha256", "profile", "audit", "policycompile", "torch")


def rank_check_from_env() -> bool:
    """``POLICYCOMPILE_RANK_CHECK``: on unless ``0``, ``false``, ``no`` or ``off``."""
    return os.environ.get(RANK_CHECK_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def _seconds(env: str, default: float) -> float:
    try:
        value = float(os.environ.get(env, default))
    except ValueError:
        return default
    return value if value > 0 else default


class Ranks:
    """Watches ``init_process_group`` and ``destroy_process_group`` for one applied policy.

    :param digest: what this rank applies (:func:`digest`), compared between the ranks.
    :param check: exchange the digest when a process group is created.
    """

    def __init__(self, digest: Mapping[str, Any], *, check: bool) -> None:
        self.mine = dict(digest)
        self.check = check
        #: set by ``policycompile run``: the report this process sends to rank 0 (its own
        #: joined with its children's); None: no merged report (plain ``apply``)
        self.local: Callable[[], Report] | None = None
        self.rank: int | None = None
        self.world = 1
        self.generation = 0
        self.pending = False  # a default group exists whose reports were not gathered
        self.merged: Report | None = None  # rank 0, after a gather
        self.summary: dict[str, Any] | None = None  # other ranks, after a gather
        self.timings: dict[str, float] = {}
        #: this rank could not exchange its report (the job's store failed): an audit fails
        self.failure: str | None = None
        self._finish: tuple[Any, str] | None = None

    # -- hooking the process group's life
    def install(self, modules: Sequence[types.ModuleType]) -> list[HookRecord]:
        """Wrap ``init_process_group`` and ``destroy_process_group`` wherever one of
        ``modules`` holds them (``torch.distributed``, ``distributed_c10d``, ``from ... import``
        copies)."""
        c10d = dist.c10d()
        if c10d is None:
            return []
        init, destroy = c10d.init_process_group, c10d.destroy_process_group

        @functools.wraps(init)
        def init_process_group(*args: Any, **kwargs: Any) -> Any:
            result = init(*args, **kwargs)
            self.on_init()
            return result

        @functools.wraps(destroy)
        def destroy_process_group(*args: Any, **kwargs: Any) -> Any:
            group = args[0] if args else kwargs.get("group")
            if group is None or group is c10d.GroupMember.WORLD:
                self.gather()
            return destroy(*args, **kwargs)

        swaps = {"init_process_group": (init, init_process_group)}
        swaps["destroy_process_group"] = (destroy, destroy_process_group)
        records = []
        # by name: a copy bound under another name (`import ... as`) is not watched; looking
        # up two names per module keeps this well under a millisecond with torch imported
        for module in modules:
            try:
                namespace = vars(module)
            except TypeError:
                continue
            for name, (original, wrapper) in swaps.items():
                if namespace.get(name) is not original:
                    continue
                try:
                    setattr(module, name, wrapper)
                except (AttributeError, TypeError):  # a module refusing setattr
                    continue  # its copy stays unwatched, as a copy under another name does
                records.append(HookRecord(module, name, original, wrapper))
        return records

    def on_init(self) -> None:
        c10d = dist.c10d()
        if c10d is None or not c10d.is_initialized():
            return
        self.rank, self.world = c10d.get_rank(), c10d.get_world_size()
        self.generation += 1
        self.pending = True
        if self.check and self.world > 1:
            start = time.perf_counter()
            try:
                self._agree(dist.default_store(c10d))
            except BaseException:
                self.pending = False  # no report to gather from ranks that did not agree
                raise
            self.timings["agree_s"] = time.perf_counter() - start

    # -- agreement
    def _agree(self, store: Any) -> None:
        timeout = _seconds(AGREE_TIMEOUT_ENV, AGREE_TIMEOUT_S)

        def verdict_of(digests: dict[int, str], missing: list[int], failed: str | None) -> str:
            if failed is not None:
                return f"the exchange through the job's store failed ({failed})"
            if missing:
                return (
                    f"rank(s) {span(missing)} sent no policy within {timeout:g} s: start every "
                    "rank under `policycompile run` with the same policy (or turn this check "
                    f"off with {RANK_CHECK_ENV}=0)"
                )
            return differences({r: json.loads(d) for r, d in digests.items()})

        verdict, failed = self._through_rank0(
            store, "agree", json.dumps(self.mine), timeout, verdict_of
        )
        if failed is not None:
            verdict = f"the exchange through the job's store failed ({failed})"
        elif verdict is None:
            verdict = (
                f"rank 0 gave no verdict on the policy within {timeout + _RANK0_GRACE_S:g} s (is "
                "rank 0 running under `policycompile run`?)"
            )
        if verdict:
            raise PolicyRankError(
                f"the ranks of this job do not apply the same policy: {verdict}. Every rank "
                "stops here, in init_process_group, before any compile decision can differ",
                path=self.mine.get("path"),
            )

    # -- one report
    def gather(self) -> None:
        """Send this rank's report to rank 0, which merges them (``policycompile run``)."""
        c10d = dist.c10d()
        if self.local is None or not self.pending or c10d is None or not c10d.is_initialized():
            return
        self.pending = False
        start = time.perf_counter()
        local = self.local()
        rank = self.rank or 0
        if self.world == 1:
            self.merged = merge_ranks({rank: local})
            return
        store = dist.default_store(c10d)
        # kept for finish(): this reference also keeps a store that rank 0 serves alive
        self._finish = (store, f"{self._prefix('report')}/done")
        timeout = _seconds(REPORT_TIMEOUT_ENV, REPORT_TIMEOUT_S)

        def merge(sent: dict[int, str], missing: list[int], failed: str | None) -> str:
            merged = merge_ranks({r: Report.from_dict(json.loads(v)) for r, v in sent.items()})
            if missing:
                merged = replace(
                    merged,
                    warnings=(
                        *merged.warnings,
                        f"rank(s) {span(missing)} sent no report within {timeout:g} s "
                        f"({REPORT_TIMEOUT_ENV}): this report covers rank(s) {span(sent)}",
                    ),
                )
            if failed is not None:
                merged = replace(
                    merged,
                    failures=(
                        *merged.failures,
                        f"could not gather the reports of rank(s) {span(missing)}: the job's "
                        f"store failed ({failed})",
                    ),
                )
            self.merged = merged
            summary = {
                "violations": len(merged.violations),
                "failures": len(merged.failures),
                "ranks": list(merged.ranks or ()),
            }
            return json.dumps(summary)

        answer, failed = self._through_rank0(
            store, "report", local.to_json(indent=None), timeout, merge
        )
        if failed is not None:
            self.failure = (
                f"could not exchange this rank's report: the job's store failed ({failed})"
            )
        if rank != 0 and answer is not None:
            self.summary = json.loads(answer)
        self.timings["gather_s"] = time.perf_counter() - start

    def finish(self, *, failing: bool) -> None:
        """The end of a run, after rank 0 printed and wrote the job's report.

        A launcher stops every rank as soon as one exits with a failure status (torchrun
        does). So each rank says it reached the end; rank 0 waits for them all (bounded)
        before saying it is done, and a rank about to exit with a failure status (4: a
        violation on some rank) waits for that. No rank is stopped before it wrote what it
        had to say, and rank 0 not before the job's report is written.
        """
        if self._finish is None:
            return
        store, done = self._finish
        prefix = done.rsplit("/", 1)[0]
        timeout = _seconds(REPORT_TIMEOUT_ENV, REPORT_TIMEOUT_S)
        try:
            store.set(f"{prefix}/finished/{self.rank}", "1")
            if self.rank == 0:
                dist.wait(store, [f"{prefix}/finished/{r}" for r in range(self.world)], timeout)
                store.set(done, "1")
            elif failing:
                dist.wait(store, [done], timeout + _RANK0_GRACE_S)
        except dist.STORE_ERRORS:
            pass  # the store went with rank 0 at the job's end: nothing left to wait for

    def _through_rank0(
        self,
        store: Any,
        kind: str,
        mine: str,
        timeout: float,
        conclude: Callable[[dict[int, str], list[int], str | None], str],
    ) -> tuple[str | None, str | None]:
        """One exchange: every rank writes ``mine``; rank 0 reads what the ranks wrote within
        ``timeout`` (in one request), concludes from it, the ranks missing and a store
        failure, and publishes the conclusion, which every rank returns (None: rank 0
        published none in time), with what the store raised where it failed."""
        prefix = self._prefix(kind)
        rank = self.rank or 0
        answer_key = f"{prefix}/answer"
        try:
            store.set(f"{prefix}/{rank}", mine)
            if rank == 0:
                keys = [f"{prefix}/{r}" for r in range(self.world)]
                missing, failed = dist.wait(store, keys, timeout)
                sent = [r for r in range(self.world) if r not in missing]
                values = dist.get_all(store, [keys[r] for r in sent])
                got = {r: v.decode() for r, v in zip(sent, values, strict=True)}
                answer = conclude(got, missing, failed)
                store.set(answer_key, answer)
                return answer, failed
            missing, failed = dist.wait(store, [answer_key], timeout + _RANK0_GRACE_S)
            if missing:  # rank 0 answers within its own timeout
                return None, failed
            answer_bytes: bytes = store.get(answer_key)
            return answer_bytes.decode(), None
        except dist.STORE_ERRORS as exc:
            return None, f"{type(exc).__name__}: {exc}"

    def _prefix(self, kind: str) -> str:
        # a job restarted by torchrun's elastic agent keeps its store: keep rounds apart
        run = os.environ.get("TORCHELASTIC_RUN_ID", "")
        restart = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        return f"policycompile/{run}/{restart}/{self.generation}/{kind}"


def digest(policy: Policy, *, audit: bool) -> dict[str, Any]:
    """What a rank applies: the resolved policy (after extends and profile), and the versions
    that decide what its rules do; ``path`` is shown, never compared."""
    return {
        "sha256": policy.fingerprint,
        "profile": policy.profile,
        "audit": audit,
        "policycompile": __version__,
        "torch": catalog.version(),
        "path": policy.path,
    }


def differences(digests: dict[int, dict[str, Any]]) -> str:
    """What differs between the ranks' digests, each value with the ranks that have it;
    empty when they all agree. The policy's path is shown beside its hash, never compared:
    each node may have its own checkout, and each rank of ``suggest`` its own scratch file."""
    told = []
    for field in COMPARED:
        groups: dict[str, list[int]] = {}
        shown: dict[str, str] = {}
        for rank, digest in sorted(digests.items()):
            value = json.dumps(digest.get(field))
            groups.setdefault(value, []).append(rank)
            if field == "sha256":
                shown.setdefault(value, f"{str(digest.get(field))[:12]} ({digest.get('path')})")
        if len(groups) > 1:
            parts = [f"{shown.get(v, v)} on rank(s) {span(ranks)}" for v, ranks in groups.items()]
            told.append(f"{field}: {'; '.join(parts)}")
    return "; ".join(told)
