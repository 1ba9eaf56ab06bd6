"""The cost of definition-time placement (docs/apply.md, "Where the wrapper sits"): importing
15 transformers modeling modules under a broad rule (``transformers.**``), with the caches of
rewritten code and of wrapper code empty (cold) and filled (warm), against the plain import,
and against the same policy applied after the import (the modules patched once they ran, no
rewrite), and against what hand-written decorators would cost: the plain import, then torch's
own ``error_on_graph_break`` applied to the functions and methods of the modules it imported.
Fresh processes, interleaved; the bytecode of everything else is cached in a prefix of the run's
own, filled before measuring, so the plain import reads cached bytecode as installed.

"Decorators by hand" puts torch's decorator on the objects once the import is done, so it
never pays their calls while the modules import; "decorated source" stands for a source with
``@torch._dynamo.error_on_graph_break(True)`` written on each function and method: torch's
decorator goes on each definition as its statement runs (through the rewrite's decorator hook,
which only places it: the policy is not applied) and on the helpers of the modules imported
before, so their calls during the import are paid too. Methods named ``validate*`` are left
undecorated there: huggingface_hub's strict dataclasses refuse a validator wrapped by torch's
decorator (``StrictDataclassDefinitionError``), so a decorated transformers source would have
to leave them out."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks._harness import Timing

MODELS = (
    "bert",
    "gpt2",
    "t5",
    "llama",
    "mistral",
    "mixtral",
    "gemma",
    "gemma2",
    "qwen2",
    "phi",
    "whisper",
    "vit",
    "roberta",
    "bart",
    "opt",
)
MODULES = [f"transformers.models.{m}.modeling_{m}" for m in MODELS]
RUNS = 9

PROBE = """
import importlib, json, sys, time
import torch, torch._dynamo, transformers  # the same for every mode: out of the figure
import policycompile
mode, policy = sys.argv[1], sys.argv[2]
handle = policycompile.apply(policy) if mode == "before" else None
if mode == "source":
    exec(SOURCE)
before = set(sys.modules)
start = time.perf_counter()
for name in {modules!r}:
    importlib.import_module(name)
imported = time.perf_counter() - start
if mode == "after":
    handle = policycompile.apply(policy)
decorated = len(done) if mode == "source" else 0
if mode == "hand":  # what the decorators themselves cost, written on the same objects
    from policycompile._engine.targets import module_targets
    fresh = [sys.modules[n] for n in sorted(set(sys.modules) - before)
             if n.startswith("transformers.")]
    targets = [t for m in fresh for t in module_targets(m)
               if not (t.attr.startswith("__") and t.attr != "__call__")]
    begin = time.perf_counter()
    for t in targets:
        wrapped = torch._dynamo.error_on_graph_break(True)(t.func)
        setattr(t.owner, t.attr, wrapped if t.raw is t.func else type(t.raw)(wrapped))
    decorated = len(targets)
    imported += time.perf_counter() - begin
total = time.perf_counter() - start
print(json.dumps({{"import": imported, "total": total,
                  "patched": len(handle.records) if handle else decorated}}))
"""

#: the "decorated source" mode's set-up (see the module's docstring), run by the probe
SOURCE = """
import importlib.machinery, types
from policycompile._engine import rewrite
from policycompile._engine.targets import class_targets, module_targets
hand = torch._dynamo.error_on_graph_break(True)
done = set()

def bare(name):  # as the hand mode, and the validators strict dataclasses refuse wrapped
    return name.startswith("validate") or (name.startswith("__") and name != "__call__")

def put(t):
    if bare(t.attr) or id(t.func) in done:
        return
    wrapped = hand(t.func)
    done.add(id(wrapped))
    setattr(t.owner, t.attr, wrapped if t.raw is t.func else type(t.raw)(wrapped))

def decorate(module, fresh=()):
    for t in module_targets(module):
        put(t)

def definer(module):
    def at(name):
        def place(obj):
            if type(obj) is types.FunctionType and not bare(name):
                wrapped = hand(obj)
                done.add(id(wrapped))
                return wrapped
            if isinstance(obj, type):
                for t in class_targets(obj, module.__name__):
                    put(t)
            return obj
        return place
    return at

class Source:
    def find_spec(self, name, path, target=None):
        if not name.startswith("transformers."):
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path, target)
        if spec is not None and rewrite.rewritable(spec.loader):
            spec.loader = rewrite.DefiningLoader(spec.loader, decorate, definer)
        return spec

for name, module in list(sys.modules.items()):
    if name.startswith("transformers") and isinstance(module, types.ModuleType):
        decorate(module)
sys.meta_path.insert(0, Source())
"""


def _once(env: dict[str, str], mode: str, policy: Path) -> dict[str, float]:
    code = f"SOURCE = {SOURCE!r}\n" + PROBE.format(modules=MODULES)
    done = subprocess.run(
        [sys.executable, "-c", code, mode, str(policy)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _forget_rewrites(prefix: Path) -> int:
    """Remove the cached rewrites and wrapper codes (os.walk: glob's ``**`` skips hidden
    folders, ``.venv``)."""
    removed = 0
    for folder, _, files in os.walk(prefix):
        for name in files:
            if ".policycompile-" in name:
                os.unlink(os.path.join(folder, name))
                removed += 1
    return removed


def run() -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        policy = Path(tmp) / "p.yaml"
        policy.write_text("version: 1\ntargets:\n  transformers.**: {error_on_graph_break: true}\n")
        prefix = Path(tmp) / "pycache"
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env |= {"PYTHONPYCACHEPREFIX": str(prefix), "HF_HUB_OFFLINE": "1"}
        _once(env, "plain", policy)  # fills the bytecode cache of everything
        _once(env, "source", policy)  # ... and the rewritten code's, for the source mode
        times: dict[str, list[float]] = {
            "plain": [],
            "hand": [],
            "source": [],
            "cold": [],
            "warm": [],
            "after": [],
        }
        patched = decorated = in_source = 0.0
        for _ in range(RUNS):  # interleaved, so that the machine's load falls on all
            times["plain"].append(_once(env, "plain", policy)["import"])
            hand = _once(env, "hand", policy)
            times["hand"].append(hand["import"])
            decorated = hand["patched"]
            source = _once(env, "source", policy)
            times["source"].append(source["import"])
            in_source = source["patched"]
            assert _forget_rewrites(prefix) or not times["cold"], "no cached rewrite found"
            times["cold"].append(_once(env, "before", policy)["import"])
            warm = _once(env, "before", policy)
            times["warm"].append(warm["import"])
            patched = warm["patched"]
            times["after"].append(_once(env, "after", policy)["total"])
    out: dict[str, object] = {
        k: Timing(statistics.median(v), min(v), max(v)) for k, v in times.items()
    }
    plain = statistics.median(times["plain"])
    out["warm_ratio"] = statistics.median(times["warm"]) / plain
    out["cold_ratio"] = statistics.median(times["cold"]) / plain
    out["after_ratio"] = statistics.median(times["after"]) / plain
    out["hand_ratio"] = statistics.median(times["hand"]) / plain
    out["warm_to_hand"] = statistics.median(times["warm"]) / statistics.median(times["hand"])
    out["source_ratio"] = statistics.median(times["source"]) / plain
    out["warm_to_source"] = statistics.median(times["warm"]) / statistics.median(times["source"])
    out["patched"] = patched
    out["decorated"] = decorated
    out["source_decorated"] = in_source
    return out


def report(results: dict[str, object]) -> str:
    def t(key: str) -> str:
        timing = results[key]
        assert isinstance(timing, Timing)
        return timing.fmt("s", 1)

    return "\n".join(
        [
            f"Import of {len(MODULES)} transformers modeling modules, rule transformers.** "
            f"({results['patched']:.0f} objects wrapped; {RUNS} fresh processes each):",
            f"  plain import, no policy:             {t('plain')}",
            f"  plain import, decorators by hand:    {t('hand')}"
            f" (torch's error_on_graph_break on {results['decorated']:.0f} objects)",
            f"  source decorated by hand:            {t('source')}"
            f" (torch's decorator at each definition: {results['source_decorated']:.0f} objects)",
            f"  apply, then import, cache cold:      {t('cold')}",
            f"  apply, then import, cache warm:      {t('warm')}",
            f"  import, then apply (no rewrite):     {t('after')}",
            f"  warm / plain: {results['warm_ratio']:.2f} (goal <= 1.10); "
            f"cold / plain: {results['cold_ratio']:.2f}; "
            f"after / plain: {results['after_ratio']:.2f}; "
            f"decorators by hand / plain: {results['hand_ratio']:.2f}; "
            f"warm / decorators by hand: {results['warm_to_hand']:.2f}; "
            f"decorated source / plain: {results['source_ratio']:.2f}; "
            f"warm / decorated source: {results['warm_to_source']:.2f}",
        ]
    )
