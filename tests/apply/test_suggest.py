"""``policycompile suggest``: a first policy from a run (docs/suggest.md).

Each program runs in a fresh interpreter, as a user runs it. What the suggestion must match
comes from outside policycompile: the graph breaks torch itself logs for the plain program
(``TORCH_LOGS=graph_breaks``), the breaks the team wrote by hand into the bundled demo
policy, and the layer count of the model's own ``named_modules``.
"""

from __future__ import annotations

import json
import os
import re
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

import policycompile as pc

from ..conftest import ROOT, python

BREAKS = """
import torch

def host_sync(x):
    y = x * 2
    n = y.sum().item()
    return y + n

def branch(x):
    if x.sum() > 0:
        return x + 1
    return x - 1

def explicit(x):
    x = x.cos()
    torch._dynamo.graph_break()
    return x.sin()

def clean(x):
    return x.relu() * 3

def step(x):
    return explicit(branch(host_sync(clean(x))))

def main():
    torch.manual_seed(0)
    f = torch.compile(step, backend="eager")
    for n in (4, 4, 8):
        f(torch.randn(n))

if __name__ == "__main__":
    main()
"""

_TORCH_BREAK = re.compile(r"Graph break in user code at (?P<file>.+):(?P<line>\d+)")


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def _cli(tmp_path: Path, *args: str) -> Any:
    return python("-m", "policycompile", *args, cwd=tmp_path)


def _torch_breaks(tmp_path: Path, *program: str) -> set[tuple[str, int]]:
    """(file, line) of every graph break torch logs for the program run plainly."""
    done = python(*program, cwd=tmp_path, env={"TORCH_LOGS": "graph_breaks"})
    assert done.returncode == 0, done.stderr[-3000:]
    found = {(m["file"], int(m["line"])) for m in _TORCH_BREAK.finditer(done.stderr)}
    assert found, "torch logged no graph break: the program no longer tests anything"
    return found


def _report(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return loaded


def _sites(rows: list[dict[str, Any]]) -> set[tuple[str, int]]:
    return {(r["file"], r["line"]) for r in rows}


def _suggested(tmp_path: Path, *args: str, out: str = "s.yaml") -> dict[str, Any]:
    done = _cli(tmp_path, "suggest", "-o", out, *args)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"wrote {out}" in done.stderr
    # the report names the policy the user gave, not the run's scratch files
    base = args[args.index("--base") + 1] if "--base" in args else "(no policy)"
    assert f"policycompile report (audit): {base}, torch" in done.stderr, done.stderr[-3000:]
    loaded: dict[str, Any] = yaml.safe_load((tmp_path / out).read_text(encoding="utf-8"))
    return loaded


def _rule_sites(targets: dict[str, Any], folder: Path) -> set[tuple[str, int]]:
    """(file, line) of each break a suggested rule gives as its reason."""
    out = set()
    for settings in targets.values():
        for file, line in re.findall(r"\(([^()]+\.py):(\d+)\)", settings.get("reason", "")):
            out.add((str((folder / file).resolve()), int(line)))
    return out


def test_three_kinds_of_break(tmp_path: Path) -> None:
    """Host sync, data-dependent branch, explicit graph_break: each function gets its rule
    with the break's reason and place; the program runs under the suggestion without a
    violation, and its strict profile in audit lists exactly the breaks torch logs."""
    script = _write(tmp_path, "breaks.py", BREAKS)
    expected = _torch_breaks(tmp_path, str(script))
    doc = _suggested(tmp_path, "breaks.py")
    text = (tmp_path / "s.yaml").read_text(encoding="utf-8")

    # the modeline names the schema, relative to the file; the policy validates
    modeline = text.splitlines()[0]
    assert modeline.startswith("# yaml-language-server: $schema=")
    schema = (tmp_path / modeline.split("=", 1)[1]).resolve()
    assert schema == (ROOT / "schemas" / "policy.schema.json").resolve()
    assert _cli(tmp_path, "validate", "s.yaml").returncode == 0

    targets = doc["targets"]
    assert targets["breaks"] == {"error_on_graph_break": True}
    allowed = {k: v for k, v in targets.items() if v.get("error_on_graph_break") is False}
    assert set(allowed) == {"breaks.host_sync", "breaks.branch", "breaks.explicit"}
    assert "item()" in allowed["breaks.host_sync"]["reason"]
    assert "Data-dependent branching" in allowed["breaks.branch"]["reason"]
    assert "graph_break()" in allowed["breaks.explicit"]["reason"]
    assert _rule_sites(allowed, tmp_path) == {(str(script), line) for _, line in expected}
    assert set(doc["profiles"]["strict"]["targets"]) == set(allowed)
    # where the comments say each rule came from, and the recompile with its guard
    assert "# suggest: graph break(s) observed in" in text
    assert re.search(r"guard failed: tensor 'x' size mismatch", text)
    assert "dynamic=True" in text

    # under the suggestion: no violation, whether torch raises (normal) or the policy decides
    for mode in ([], ["--audit"]):
        done = _cli(tmp_path, "run", "s.yaml", *mode, "--report-json", "r.json", "breaks.py")
        assert done.returncode == 0, done.stderr[-3000:]
        report = _report(tmp_path / "r.json")
        assert report["violations"] == []
        assert _sites(report["graph_breaks"]) == expected

    # the strict profile in audit: exactly the observed breaks, and exit status 4
    args = ["run", "s.yaml", "--profile", "strict", "--audit", "--report-json", "r.json"]
    done = _cli(tmp_path, *args, "breaks.py")
    assert done.returncode == 4, done.stderr[-3000:]
    assert _sites(_report(tmp_path / "r.json")["violations"]) == expected

    # and without audit, the strict profile stops the program at its first break
    done = _cli(tmp_path, "run", "s.yaml", "--profile", "strict", "breaks.py")
    assert done.returncode == 1
    assert "graph_break" in done.stderr or "Unsupported" in done.stderr


def test_suggest_twice_gives_the_same_file(tmp_path: Path) -> None:
    _write(tmp_path, "breaks.py", BREAKS)
    _suggested(tmp_path, "breaks.py", out="one.yaml")
    _suggested(tmp_path, "breaks.py", out="two.yaml")
    one = (tmp_path / "one.yaml").read_bytes()
    assert one == (tmp_path / "two.yaml").read_bytes()
    assert b"breaks.host_sync" in one


DEMO_BASE = """
version: 1
compile: {backend: eager}
targets:
  policycompile.examples.tiny_transformer.TinyTransformer:
    compile: true
"""


def test_bundled_example(tmp_path: Path) -> None:
    """The bundled example, its whole model a compile entry by ``--base``: the suggestion
    allows the two breaks the team wrote by hand into policies/demo.yaml and no other,
    and suggests its decoder blocks as regional entries, with their number."""
    from policycompile.examples import tiny_transformer

    _write(tmp_path, "base.yaml", DEMO_BASE)
    program = ["-m", "policycompile.examples.demo"]
    doc = _suggested(tmp_path, "--base", "base.yaml", *program)
    assert doc["extends"] == ["base.yaml"]

    hand = pc.load(ROOT / "policies" / "demo.yaml", profile="")
    by_hand = {
        r.pattern.text
        for r in hand.rules
        if any(s.key == "error_on_graph_break" and s.value is False for s in r.settings)
    }
    targets = doc["targets"]
    allowed = {k for k, v in targets.items() if v.get("error_on_graph_break") is False}
    assert allowed == by_hand
    assert targets["policycompile.examples.tiny_transformer"] == {"error_on_graph_break": True}

    # regional: the blocks, as many as the model holds; the whole-model entry off
    blocks = sum(
        isinstance(m, tiny_transformer.DecoderBlock) for m in tiny_transformer.build().modules()
    )
    regional = doc["profiles"]["regional"]["targets"]
    block = "policycompile.examples.tiny_transformer.DecoderBlock"
    assert set(regional) == {
        block,
        "policycompile.examples.tiny_transformer.TinyTransformer.forward",
    }
    text = (tmp_path / "s.yaml").read_text(encoding="utf-8")
    assert f"# suggest: {blocks} instances of {block} ran under" in text

    done = _cli(tmp_path, "run", "s.yaml", "--report-json", "r.json", *program)
    assert done.returncode == 0, done.stderr[-3000:]
    assert _report(tmp_path / "r.json")["violations"] == []
    args = ["run", "s.yaml", "--profile", "strict", "--audit", "--report-json", "r.json"]
    assert _cli(tmp_path, *args, *program).returncode == 4
    violations = _report(tmp_path / "r.json")["violations"]
    assert {v["function"] for v in violations} == by_hand
    # the regional profile runs: the blocks are the compile entries, the output unchanged
    args = ["run", "s.yaml", "--profile", "regional", "--report-json", "r.json"]
    done = _cli(tmp_path, *args, *program)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "output equals eager: True" in done.stdout
    regions = {r["name"] for r in _report(tmp_path / "r.json")["regions"]}
    assert regions == {f"{block}.forward"}


GPT2 = """
import sys

import torch
from transformers import GPT2Config, GPT2LMHeadModel

def step(model, ids):
    logits = model(ids).logits
    if logits.mean() > 0:  # data-dependent: a graph break after the model
        logits = logits * 2
    return logits

def main():
    torch.manual_seed(0)
    config = GPT2Config(n_layer=3, n_embd=64, n_head=4, vocab_size=128, n_positions=64,
                        bos_token_id=0, eos_token_id=0)
    model = GPT2LMHeadModel(config).eval()
    run = step if "--eager" in sys.argv else torch.compile(step, backend="eager")
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for n in (16, 16, 24):
            out = run(model, torch.randint(0, 128, (1, n), generator=gen))
    print("sum", float(out.sum()))

if __name__ == "__main__":
    main()
"""


@pytest.mark.slow
def test_transformers_model(tmp_path: Path) -> None:
    """A tiny GPT-2 compiled by the program itself: its blocks are suggested as regional
    entries (as many as the config's layers), the recompile for a new length is noted with
    its guard, and the suggestion holds: no violation, strict audit lists the break."""
    script = _write(tmp_path, "gpt2run.py", GPT2)
    expected = _torch_breaks(tmp_path, str(script))
    doc = _suggested(tmp_path, "gpt2run.py")
    text = (tmp_path / "s.yaml").read_text(encoding="utf-8")
    # own code only: transformers and torch, traced too, are installed packages
    assert set(doc["targets"]) == {"gpt2run", "gpt2run.step"}
    assert doc["targets"]["gpt2run"] == {"error_on_graph_break": True}
    assert doc["targets"]["gpt2run.step"]["error_on_graph_break"] is False
    block = "transformers.models.gpt2.modeling_gpt2.GPT2Block"
    assert doc["profiles"]["regional"]["targets"] == {block: {"compile": {"backend": "eager"}}}
    assert f"3 instances of {block} ran under gpt2run.step (transformer.h.0, " in text
    assert "takes effect where the program stops compiling gpt2run.step whole" in text
    assert re.search(r"guard failed: tensor '.*' size mismatch at index 1\. expected 16", text)

    done = _cli(tmp_path, "run", "s.yaml", "--report-json", "r.json", "gpt2run.py")
    assert done.returncode == 0, done.stderr[-3000:]
    assert _report(tmp_path / "r.json")["violations"] == []
    args = ["run", "s.yaml", "--profile", "strict", "--audit", "--report-json", "r.json"]
    assert _cli(tmp_path, *args, "gpt2run.py").returncode == 4
    assert _sites(_report(tmp_path / "r.json")["violations"]) == expected

    # the regional profile, on the program without its own whole compile: the blocks compile
    plain = python(str(script), "--eager", cwd=tmp_path)
    args = ["run", "s.yaml", "--profile", "regional", "--report-json", "r.json"]
    done = _cli(tmp_path, *args, "gpt2run.py", "--eager")
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout == plain.stdout
    regions = {r["name"]: r for r in _report(tmp_path / "r.json")["regions"]}
    assert set(regions) == {f"{block}.forward"}


HAND_EDITS = [
    # a comment of the team's own, and a rule for a function since renamed
    (
        "targets:\n",
        "targets:\n  # TEAM: renamed in the last refactor\n  helpers.old_name:\n"
        "    error_on_graph_break: true\n",
    ),
    # the branch must never break: a hand rule that forbids it
    (
        "  breaks.branch:\n    error_on_graph_break: false\n",
        "  # TEAM: must not break; tracked in JIRA-12\n  breaks.branch:\n"
        "    error_on_graph_break: true   # keep strict\n",
    ),
]

CALLS = "return noisy(explicit(branch(host_sync(clean(x)))))"
#: the new module's function compiled on its own, where no rule sets anything (the module's
#: top level: the rule on the module reaches its functions, ``main`` among them)
LOUD = '    torch.compile(helpers.loud, backend="eager")(torch.ones(2))\n'

NEW_BREAK = """
def noisy(x):
    print("value", x.shape)
    return x * 2
"""
HELPERS = """
import torch

def loud(x):
    torch._dynamo.graph_break()
    return x - 1
"""


def test_update_keeps_the_hand_edits(tmp_path: Path) -> None:
    """``--update`` on a hand-edited suggestion, after the program gained two breaks: the
    team's comments, key order and rules stay. A rule that forbids an observed break is not
    loosened (the hand rule on the branch, and the module rule on a new break in that
    module: a regression the policy exists to catch), and says how to allow it; a break no
    rule governed (in a new module, compiled on its own) gets its rule, and the module its
    rule; strict gains both breaks; the rule on a function since renamed is marked as
    matching nothing (the run treats a ``strict`` policy as lenient for this: the module's
    import would fail on that rule)."""
    _write(tmp_path, "breaks.py", BREAKS)
    _suggested(tmp_path, "breaks.py", out="policy.yaml")
    policy = tmp_path / "policy.yaml"
    text = policy.read_text(encoding="utf-8")
    for old, new in HAND_EDITS:
        assert old in text
        text = text.replace(old, new, 1)
    policy.write_text(text, encoding="utf-8")
    hand = text

    # the program changes: a break in the module, and one in a new module it imports
    source = textwrap.dedent(BREAKS).replace("def step(x):", NEW_BREAK.lstrip() + "\ndef step(x):")
    source = source.replace("return explicit(branch(host_sync(clean(x))))", CALLS)
    source = source.replace("import torch\n", "import torch\nimport helpers\n", 1)
    source = source.replace("    main()\n", "    main()\n" + LOUD)
    (tmp_path / "breaks.py").write_text(source, encoding="utf-8")
    _write(tmp_path, "helpers.py", HELPERS)
    expected = _torch_breaks(tmp_path, "breaks.py")

    done = _cli(tmp_path, "suggest", "--update", "policy.yaml", "breaks.py")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "policycompile report (audit): policy.yaml, torch" in done.stderr
    # the run applied the file leniently (strict overridden): its report, its warning for
    # the rule that names nothing, and its rules all point at the file itself
    assert re.search(r"policy\.yaml:\d+:\d+: warning: target 'helpers\.old_name'", done.stderr)
    assert "governed by breaks.branch (policy.yaml:" in done.stderr
    assert ".policycompile-update-" not in done.stderr
    assert "forbidden by breaks.branch (policy.yaml:" in done.stderr
    assert "forbidden by breaks (policy.yaml:" in done.stderr
    assert "helpers.old_name matched nothing" in done.stderr
    updated = policy.read_text(encoding="utf-8")

    # every line the team wrote is still there, in the same order
    kept = iter(updated.splitlines())
    assert all(line in kept for line in hand.splitlines())
    doc = yaml.safe_load(updated)
    targets = doc["targets"]
    assert targets["breaks.branch"]["error_on_graph_break"] is True
    assert "breaks.noisy" not in targets
    assert targets["helpers.loud"]["error_on_graph_break"] is False
    assert targets["helpers"] == {"error_on_graph_break": True}
    strict = doc["profiles"]["strict"]["targets"]
    assert {"breaks.noisy", "helpers.loud"} <= set(strict)
    assert "# suggest: helpers.old_name matched nothing in the last run" in updated
    assert "# suggest: forbids graph break(s) observed in breaks.branch" in updated
    assert "#   to allow them, add:  breaks.noisy: {error_on_graph_break: false}" in updated
    assert _cli(tmp_path, "validate", "policy.yaml").returncode == 0

    # the marked rule still stops a run, as strict says, until the team removes it
    done = _cli(tmp_path, "run", "policy.yaml", "breaks.py")
    assert done.returncode == 1
    assert re.search(r"policy\.yaml:\d+:\d+: error: .*helpers\.old_name", done.stderr)
    (tmp_path / "lenient.yaml").write_text(updated + "strict: false\n", encoding="utf-8")

    # never loosened: what the file forbade stays forbidden, and nothing else is
    args = ["run", "lenient.yaml", "--audit", "--report-json", "r.json", "breaks.py"]
    assert _cli(tmp_path, *args).returncode == 4
    violations = _report(tmp_path / "r.json")["violations"]
    assert sorted(v["function"] for v in violations) == ["breaks.branch", "breaks.noisy"]
    # and the strict profile lists every break torch logs
    args = ["run", "lenient.yaml", "--profile", "strict", "--audit", "--report-json", "r.json"]
    assert _cli(tmp_path, *args, "breaks.py").returncode == 4
    assert _sites(_report(tmp_path / "r.json")["violations"]) == expected

    # a second update finds nothing new and writes the same file
    done = _cli(tmp_path, "suggest", "--update", "policy.yaml", "breaks.py")
    assert done.returncode == 0, done.stderr[-3000:]
    assert policy.read_text(encoding="utf-8") == updated


def test_pytest_plugin_suggests_from_a_test_session(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(breaks=BREAKS)
    pytester.makepyfile(
        test_breaks="""
        import torch
        import breaks

        def test_step():
            torch.manual_seed(0)
            torch.compile(breaks.step, backend="eager")(torch.randn(4))
        """
    )
    pytester.syspathinsert()
    quiet = ("-p", "no:cacheprovider")
    result = pytester.runpytest_subprocess("--policy-suggest", "s.yaml", *quiet)
    result.assert_outcomes(passed=1)
    text = (pytester.path / "s.yaml").read_text(encoding="utf-8")
    assert re.search(r"# Suggested from a run of `pytest .*--policy-suggest s\.yaml", text)
    doc = yaml.safe_load(text)
    allowed = {k for k, v in doc["targets"].items() if v.get("error_on_graph_break") is False}
    assert allowed == {"breaks.host_sync", "breaks.branch", "breaks.explicit"}

    # with a base that forbids the breaks: they are findings, the session still passes
    pytester.makefile(
        ".yaml", base="version: 1\ntargets:\n  breaks: {error_on_graph_break: true}\n"
    )
    result = pytester.runpytest_subprocess(
        "--policy", "base.yaml", "--policy-suggest", "t.yaml", *quiet
    )
    assert result.ret == pytest.ExitCode.OK
    assert "extends:\n  - base.yaml\n" in (pytester.path / "t.yaml").read_text(encoding="utf-8")

    # the same session under the suggestion passes; under strict audit it fails, with them
    result = pytester.runpytest_subprocess("--policy", "s.yaml", *quiet)
    result.assert_outcomes(passed=1)
    strict = ("--policy-profile", "strict", "--policy-audit", "--policy-report-json", "r.json")
    result = pytester.runpytest_subprocess("--policy", "s.yaml", *strict, *quiet)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    violations = _report(pytester.path / "r.json")["violations"]
    assert {v["function"] for v in violations} == allowed


FORMS = """
import functools
import torch
import torch.nn as nn

@torch.compile(backend="eager", dynamic=False)
def deco(x):
    torch._dynamo.graph_break()
    return x + 1

@torch.compile
def bare(x):
    return x * 2

class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.l = nn.Linear(4, 4)
    def forward(self, x):
        return self.l(x).relu()

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleList([Block() for _ in range(3)])
    def forward(self, x):
        for b in self.blocks:
            x = b(x)
        return x
    def score(self, x):
        return self(x).sum()

def main():
    torch.manual_seed(0)
    x = torch.randn(2, 4)
    out = [deco(x)]
    net = Net()
    net.compile(backend="eager")
    out.append(net(x))
    out.append(torch.compile(net.score, backend="eager")(x))
    out.append(torch.compile(functools.partial(torch.add, other=1), backend="eager")(x))
    # torch.cond run eagerly: torch compiles for itself, which is not the program's entry
    out.append(torch.cond(x.sum() > 0, lambda t: t + 1, lambda t: t - 1, (x,)))
    try:
        torch.compile(bare, mode="default", options={"a": 1})
    except RuntimeError as e:
        print("refused:", e)
    print([round(float(o.sum()), 4) for o in out])

if __name__ == "__main__":
    main()
"""


SHAPES = """
import torch
from torch._dynamo.utils import counters

def step(x):
    return (x * 2).sum()

def main():
    for n in (4, 8, 16):
        step(torch.ones(n))
    print("graphs", counters["stats"]["unique_graphs"])

if __name__ == "__main__":
    main()
"""


SHAPES_BASE = """
version: 1
compile: {backend: eager}
targets:
  shapes.step:
    compile: true
"""


def test_recompile_of_a_base_entry_gets_a_dynamic_rule(tmp_path: Path) -> None:
    """A compile entry of ``--base`` that recompiles for a new shape: the note names the
    guard and the rule to add; with that rule added, torch compiles one graph, not two."""
    _write(tmp_path, "shapes.py", SHAPES)
    _write(tmp_path, "base.yaml", SHAPES_BASE)
    done = _cli(tmp_path, "run", "base.yaml", "shapes.py")
    assert "graphs 2" in done.stdout, done.stderr[-3000:]
    _suggested(tmp_path, "--base", "base.yaml", "shapes.py")
    text = (tmp_path / "s.yaml").read_text(encoding="utf-8")
    assert "guard failed: tensor 'x' size mismatch at index 0. expected 4, actual 8" in text
    found = re.search(r"consider the rule  (shapes\.step: \{compile: \{dynamic: true\}\})", text)
    assert found, text
    _write(tmp_path, "dynamic.yaml", f"version: 1\nextends: [s.yaml]\ntargets:\n  {found[1]}\n")
    done = _cli(tmp_path, "run", "dynamic.yaml", "shapes.py")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "graphs 1" in done.stdout


def test_every_form_of_the_programs_own_compile(tmp_path: Path) -> None:
    """The program's torch.compile as a decorator with and without options, ``m.compile()``,
    a bound method, a partial and a call torch refuses: the program prints what it prints
    plainly, and each entry is a region under its qualified name; torch's own use of
    torch.compile (an eager ``torch.cond``) is not one."""
    _write(tmp_path, "forms.py", FORMS)
    plain = python("forms.py", cwd=tmp_path)
    assert plain.returncode == 0, plain.stderr[-3000:]
    assert "refused: Either mode or options" in plain.stdout
    done = _cli(tmp_path, "suggest", "-o", "s.yaml", "--report-json", "r.json", "forms.py")
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout == plain.stdout
    regions = {r["name"]: r for r in _report(tmp_path / "r.json")["regions"]}
    assert set(regions) == {"forms.deco", "forms.Net.forward", "forms.Net.score"}
    lines = (tmp_path / "forms.py").read_text(encoding="utf-8").splitlines()
    calls = {"forms.deco": "@torch.compile(backend", "forms.Net.forward": "net.compile("}
    for region, call in calls.items():
        line = next(i for i, text in enumerate(lines, 1) if call in text)
        assert regions[region]["rule"] == f"torch.compile at forms.py:{line}"
    doc = yaml.safe_load((tmp_path / "s.yaml").read_text(encoding="utf-8"))
    assert doc["targets"]["forms.deco"]["error_on_graph_break"] is False
    assert set(doc["profiles"]["regional"]["targets"]) == {"forms.Block"}


def test_usage_errors_change_nothing(tmp_path: Path) -> None:
    _write(tmp_path, "breaks.py", BREAKS)
    existing = _write(tmp_path, "policy.yaml", "version: 1\ntargets: {}\n")
    done = _cli(tmp_path, "suggest", "breaks.py")  # the default output exists
    assert done.returncode == 2
    assert "policy.yaml exists" in done.stderr
    assert existing.read_text(encoding="utf-8") == "version: 1\ntargets: {}\n"
    done = _cli(
        tmp_path, "suggest", "--base", "policy.yaml", "--update", "policy.yaml", "breaks.py"
    )
    assert done.returncode == 2
    assert "give --base or --update, not both" in done.stderr
    assert "graph break" not in done.stderr  # refused before the program ran
    done = _cli(tmp_path, "suggest", "-o", "s.yaml")
    assert done.returncode == 2 and "give either -m MODULE or SCRIPT" in done.stderr
    bad = _write(tmp_path, "bad.yaml", "version: 1\ntargets:\n  a: [1\n")
    done = _cli(tmp_path, "suggest", "--update", "bad.yaml", "breaks.py")
    assert done.returncode == 1
    assert re.search(r"bad\.yaml:\d+:\d+: error: invalid YAML", done.stderr), done.stderr
    assert "Traceback" not in done.stderr
    assert bad.read_text(encoding="utf-8") == "version: 1\ntargets:\n  a: [1\n"
    # an exact duplicate key, and a FIFO: located errors, nothing run
    _write(
        tmp_path, "dup.yaml", "version: 1\ntargets:\n  a: {disable: true}\n  a: {disable: true}\n"
    )
    done = _cli(tmp_path, "suggest", "--update", "dup.yaml", "breaks.py")
    assert done.returncode == 1
    assert "dup.yaml:4:3: error: duplicate key 'a'" in done.stderr
    os.mkfifo(tmp_path / "fifo.yaml")
    done = _cli(tmp_path, "suggest", "--update", "fifo.yaml", "breaks.py")
    assert (done.returncode, "FIFO" in done.stderr) == (1, True)
    done = _cli(tmp_path, "suggest", "-o", "missing/s.yaml", "breaks.py")
    assert done.returncode == 2
    assert "cannot write missing/s.yaml: no folder" in done.stderr
    assert "graph break" not in done.stderr  # refused before the program ran
    assert not (tmp_path / "s.yaml").exists()
    (tmp_path / "folder.yaml").mkdir()
    done = _cli(tmp_path, "suggest", "-o", "folder.yaml", "breaks.py")
    assert done.returncode == 2
    assert "cannot write folder.yaml: it is a folder" in done.stderr
    assert "graph break" not in done.stderr


def test_a_failing_program_and_an_unnamed_function(tmp_path: Path) -> None:
    """A break in a lambda has no name a rule could give: its rule goes on the function that
    compiles it, and the guarantees hold; a failing program still gets its policy, and the
    program's exit status."""
    _write(
        tmp_path,
        "lam.py",
        """
        import torch

        def named(x):
            torch._dynamo.graph_break()
            return x + 1

        def main():
            f = torch.compile(lambda x: named(x * 2).sum().item() + 1, backend="eager")
            f(torch.ones(3))
            raise SystemExit(3)

        if __name__ == "__main__":
            main()
        """,
    )
    done = _cli(tmp_path, "suggest", "-o", "s.yaml", "lam.py")
    assert done.returncode == 3
    assert "the program exited with status 3" in done.stderr
    text = (tmp_path / "s.yaml").read_text(encoding="utf-8")
    doc = yaml.safe_load(text)
    assert doc["targets"]["lam.named"]["error_on_graph_break"] is False
    # the lambda's break: decided where the lambda is compiled, in main
    assert "item()" in doc["targets"]["lam.main"]["reason"]
    assert "no rule of its own can name: lam.py:<lambda>" in text
    assert doc["profiles"]["strict"]["targets"]["lam.main"] == {"error_on_graph_break": True}
    for mode in ([], ["--audit"]):
        args = ["run", "s.yaml", *mode, "--report-json", "r.json", "lam.py"]
        assert _cli(tmp_path, *args).returncode == 3
        assert _report(tmp_path / "r.json")["violations"] == []
    args = ["run", "s.yaml", "--profile", "strict", "--audit", "--report-json", "r.json"]
    assert _cli(tmp_path, *args, "lam.py").returncode == 3  # the program's own status first
    assert len(_report(tmp_path / "r.json")["violations"]) == 2


def test_a_script_whose_name_no_rule_can_give(tmp_path: Path) -> None:
    """``train-model.py`` runs as module ``train-model``, which no pattern can spell: the
    breaks are listed in the header, the command says so, and the file still validates
    (a rule with that name would not)."""
    _write(tmp_path, "train-model.py", BREAKS)
    done = _cli(tmp_path, "suggest", "-o", "s.yaml", "train-model.py")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "3 graph break(s) in code no rule can name" in done.stderr
    text = (tmp_path / "s.yaml").read_text(encoding="utf-8")
    assert re.search(r"#   train-model\.py:\d+: Data-dependent branching", text)
    assert yaml.safe_load(text)["targets"] == {}
    assert _cli(tmp_path, "validate", "s.yaml").returncode == 0


def test_code_made_by_exec(tmp_path: Path) -> None:
    """A function exec() made without a ``__name__`` has no module: its compile entry is
    named by its file, and its break is listed, not written as a rule."""
    _write(
        tmp_path,
        "made.py",
        """
        import torch

        ns = {}
        code = "import torch\\ndef made(x):\\n    torch._dynamo.graph_break()\\n    return x + 1\\n"
        exec(code, ns)
        torch.compile(ns["made"], backend="eager")(torch.ones(2))
        """,
    )
    done = _cli(tmp_path, "suggest", "-o", "s.yaml", "--report-json", "r.json", "made.py")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "1 graph break(s) in code no rule can name" in done.stderr
    text = (tmp_path / "s.yaml").read_text(encoding="utf-8")
    assert "#   <string>:3: Call to `torch._dynamo.graph_break()`" in text
    assert [r["name"] for r in _report(tmp_path / "r.json")["regions"]] == ["<string>.made"]
    assert _cli(tmp_path, "validate", "s.yaml").returncode == 0
