"""The resolver: patterns, specificity, per-key inheritance, conflicts (docs/policy.md)."""

from __future__ import annotations

from typing import Any

import pytest

from policycompile import PolicyConflictError, PolicyPatternError, Position
from policycompile._policy.keys import COMPILE, DISABLE, EOGB
from policycompile._policy.patterns import Pattern, overlap_witness
from policycompile._policy.tree import Rule, RuleTree, Setting

Rules = dict[str, dict[str, Any]]


def tree(rules: Rules) -> RuleTree:
    built = []
    for line, (text, settings) in enumerate(rules.items(), start=1):
        pos = Position("p.yaml", line, 3)
        built.append(
            Rule(
                Pattern.parse(text), tuple(Setting(k, v, pos) for k, v in sorted(settings.items()))
            )
        )
    return RuleTree(built)


def winner(rules: Rules, name: str, key: str = EOGB) -> Any:
    """The value of ``key`` for ``name``, and the pattern that set it (None, None if unset)."""
    decision = tree(rules).resolve(name).decisions.get(key)
    if decision is None:
        return None, None
    assert decision.winner.rule is not None
    return decision.value, decision.winner.rule.pattern.text


T, F = {EOGB: True}, {EOGB: False}

# (rules, name, expected value, expected winning pattern)
CASES: list[tuple[Rules, str, Any, str | None]] = [
    # exact names and plain inheritance
    ({"pkg.mod.fn": T}, "pkg.mod.fn", True, "pkg.mod.fn"),
    ({"pkg.mod": T}, "pkg.mod.fn", True, "pkg.mod"),
    ({"pkg": T}, "pkg.mod.Class.method", True, "pkg"),
    ({"pkg": T}, "pkg", True, "pkg"),
    ({"pkg.mod.fn": T}, "pkg.mod", None, None),  # a rule never reaches upwards
    ({"pkg.mod.fn": T}, "pkg.mod.fn2", None, None),
    # the boundary: pkg is not a prefix of pkg_other
    ({"pkg": T}, "pkg_other.mod", None, None),
    ({"pkg.mod": T}, "pkg.module.fn", None, None),
    ({"pkg*": T}, "pkg_other.mod", True, "pkg*"),
    # '**' matches zero or more segments
    ({"pkg.**": T}, "pkg", True, "pkg.**"),
    ({"pkg.**": T}, "pkg.a.b.c.d", True, "pkg.**"),
    ({"pkg.**.fn": T}, "pkg.fn", True, "pkg.**.fn"),
    ({"pkg.**.fn": T}, "pkg.a.b.fn", True, "pkg.**.fn"),
    ({"pkg.**.fn": T}, "pkg.a.b.fn.inner", True, "pkg.**.fn"),  # inherited by what is under
    ({"pkg.**.fn": T}, "pkg.a.b.fn2", None, None),
    ({"pkg.**.**.fn": T}, "pkg.fn", True, "pkg.**.**.fn"),
    # '*' inside one segment never crosses a dot
    ({"pkg.*.fn": T}, "pkg.mod.fn", True, "pkg.*.fn"),
    ({"pkg.*.fn": T}, "pkg.a.b.fn", None, None),
    ({"pkg.*.fn": T}, "pkg.fn", None, None),
    ({"pkg.mod.*Block": T}, "pkg.mod.DecoderBlock.forward", True, "pkg.mod.*Block"),
    ({"pkg.mod.*Block": T}, "pkg.mod.BlockList", None, None),
    ({"pkg.mod.Dec*Layer": T}, "pkg.mod.DecoderLayer", True, "pkg.mod.Dec*Layer"),
    ({"pkg.mod.*": T}, "pkg.mod", None, None),  # '*' matches exactly one segment
    # 1. more literal segments win
    ({"acme.models": F, "acme.**": T}, "acme.models.x.fn", False, "acme.models"),
    ({"acme.**": T, "acme.models.fn": F}, "acme.models.fn", False, "acme.models.fn"),
    ({"pkg.*.fn": T, "pkg.mod.*": F}, "pkg.mod.fn.x", None, "conflict"),
    ({"pkg.mod": F, "pkg.*.fn": T}, "pkg.mod.fn", True, "pkg.*.fn"),  # 2 literals each, deeper
    ({"pkg.mod.fn": F, "pkg.**.mod.fn": T}, "pkg.mod.fn", False, "pkg.mod.fn"),
    ({"a.b.c": F, "a.**.d": T}, "a.b.c.d", False, "a.b.c"),  # 3 literals beat 2 at any depth
    # 2. the deeper node wins on equal literal count
    ({"pkg.mod": F, "pkg.**.fn": T}, "pkg.mod.fn", True, "pkg.**.fn"),
    ({"pkg.mod.C": F, "pkg.mod.*.meth": T}, "pkg.mod.C.meth", True, "pkg.mod.*.meth"),
    ({"pkg.**.C": F, "pkg.**.meth": T}, "pkg.x.C.meth", True, "pkg.**.meth"),
    # 3. segments mixing text and '*' beat bare '*'
    ({"pkg.*Block": T, "pkg.*": F}, "pkg.DecoderBlock", True, "pkg.*Block"),
    (
        {"pkg.mod.*Layer.forward": T, "pkg.mod.*.forward": F},
        "pkg.mod.XLayer.forward",
        True,
        "pkg.mod.*Layer.forward",
    ),
    # 4. fewer '**' win
    ({"pkg.**.*": F, "pkg.**.**.*": T}, "pkg.a.b", False, "pkg.**.*"),
    ({"pkg.*.**": T, "pkg.**.*": T}, "pkg.a.b", True, None),  # tie, same value: no conflict
    # per-key inheritance: each key resolved on its own
    ({"pkg": {DISABLE: True}, "pkg.mod.fn": F}, "pkg.mod.fn", False, "pkg.mod.fn"),
    ({"pkg.mod.fn": T, "pkg.mod": {COMPILE: True}}, "pkg.mod.fn", True, "pkg.mod.fn"),
    # ':' pins where the module ends
    ({"pkg.mod:Class.method": T}, "pkg.mod:Class.method", True, "pkg.mod:Class.method"),
    ({"pkg.mod:Class.method": T}, "pkg:mod.Class.method", None, None),
    ({"pkg.mod:Class.method": T}, "pkg.mod.Class.method", True, "pkg.mod:Class.method"),
    ({"pkg.mod.Class.method": T}, "pkg.mod:Class.method", True, "pkg.mod.Class.method"),
    ({"pkg.**:Foo": T}, "pkg.a.b:Foo.bar", True, "pkg.**:Foo"),
    ({"pkg.**:Foo": T}, "pkg.a:b.Foo", None, None),
    # conflicts: equally specific, different values
    ({"pkg.*.fn": T, "pkg.mod.*": F}, "pkg.mod.fn", None, "conflict"),
    ({"pkg.*Block": T, "pkg.Dec*": F}, "pkg.DecBlock", None, "conflict"),
    ({"pkg.*Block": T, "pkg.Dec*": F}, "pkg.Block", True, "pkg.*Block"),  # no overlap here
    ({"pkg.**.a": T, "pkg.a.**": F}, "pkg.a.a", None, "conflict"),
]


@pytest.mark.parametrize(("rules", "name", "value", "pattern"), CASES)
def test_precedence(rules: Rules, name: str, value: Any, pattern: str | None) -> None:
    if pattern == "conflict":
        with pytest.raises(PolicyConflictError) as info:
            tree(rules).resolve(name)
        message = str(info.value)
        assert all(p in message for p in rules)
        assert "p.yaml:1" in message and "p.yaml:2" in message
        return
    got_value, got_pattern = winner(rules, name)
    assert got_value == value
    if pattern is not None:
        assert got_pattern == pattern


def test_precedence_ignores_file_order() -> None:
    ties = 0
    for rules, name, _, pattern in CASES:
        if pattern == "conflict":
            continue
        reverse = dict(reversed(list(rules.items())))
        # the value and the winning pattern, also where two rules tie with the same value
        assert winner(rules, name) == winner(reverse, name), (rules, name)
        ties += pattern is None and len(rules) > 1
    assert ties >= 1


def test_defaults_lose_to_any_rule_and_are_inherited_everywhere() -> None:
    pos = Position("p.yaml", 2, 3)
    t = RuleTree(
        [
            Rule(
                Pattern.parse("pkg.fn"),
                (Setting(COMPILE, True, pos), Setting("compile.mode", "x", pos)),
            )
        ],
        [
            Setting("compile.mode", "default", Position("p.yaml", 1, 3)),
            Setting("compile.backend", "eager", Position("p.yaml", 1, 3)),
        ],
    )
    res = t.resolve("pkg.fn")
    assert res.compile_options == {"mode": "x", "backend": "eager"}
    # not a compile entry: options are not reported at all
    assert t.resolve("pkg.other").decisions == {}


def test_direct_only_ignores_ancestors() -> None:
    t = tree({"pkg.mod.C": {COMPILE: True}, "pkg.mod.C.helper": T})
    assert t.resolve("pkg.mod.C.helper").get(COMPILE) is True
    direct = t.resolve("pkg.mod.C.helper", frozenset({COMPILE}))
    assert direct.get(COMPILE) is None
    assert direct.get(EOGB) is True
    assert t.resolve("pkg.mod.C", frozenset({COMPILE})).decisions[COMPILE].direct


def test_explain_lists_losers_with_the_deciding_criterion() -> None:
    t = tree({"acme.**": T, "acme.models": F, "acme.models.fn": T, "acme.*.fn": F})
    explanation = t.explain("acme.models.fn")
    assert explanation.resolution.get(EOGB) is True
    why = {loser.candidate.source: loser.why for loser in explanation.losers[EOGB]}
    assert why == {
        "acme.*.fn": "fewer literal segments (2 < 3)",
        "acme.models": "fewer literal segments (2 < 3)",
        "acme.**": "fewer literal segments (1 < 3)",
    }
    t2 = tree({"pkg.mod": F, "pkg.**.fn": T})
    (loser,) = t2.explain("pkg.mod.fn").losers[EOGB]
    assert loser.why == "matches a shallower node ('pkg.mod', depth 2 < 3)"


def test_resolve_is_shared_by_names_the_same_rules_match() -> None:
    t = tree({"pkg.**": T, "pkg.a.special": F})
    assert t.resolve("pkg.a.b").decisions is t.resolve("pkg.z.c").decisions
    assert t.resolve("pkg.a.special").decisions is not t.resolve("pkg.a.other").decisions


def test_shared_resolutions_equal_a_fresh_tree_for_each_name() -> None:
    rules = {"pkg.**": T, "pkg.a.*": F, "pkg.a:C.*": T, "pkg.*.deep.x": F, "pkg.b:f": F}
    rules |= {"other.c": T}
    names = [
        "pkg.a.b",
        "pkg.a:C.m",
        "pkg.a:D.m",
        "pkg.q.deep.x",
        "pkg.b:f",
        "pkg.b:g",
        "pkg.a.C.m",
        "pkg.a",
        "pkg",
        "pkg.q:deep.x",
        "other.c",
        "other.c:f",
    ]
    shared = tree(rules)
    for name in names * 2:  # the second time from the caches
        fresh = tree(rules)
        for direct in (frozenset(), frozenset({"error_on_graph_break"})):
            assert shared.resolve(name, direct) == fresh.resolve(name, direct), name
            assert shared.matches(name) == fresh.matches(name), name


def test_covers_package() -> None:
    t = tree({"pkg.mod": T, "tf*.x": F})
    assert t.covers_package("pkg")
    assert t.covers_package("tfx")
    assert not t.covers_package("pkg_other")
    assert not t.covers_package("numpy")


@pytest.mark.parametrize(
    ("text", "message", "column"),
    [
        ("a..b", "empty segment", 3),
        ("a.b.", "empty segment", 5),
        (".a", "empty segment", 1),
        ("a**b", "'**' must be a whole segment", 1),
        ("pkg.a**", "'**' must be a whole segment", 5),
        ("**", "first segment must name a package", 1),
        ("*.mod", "first segment must name a package", 1),
        ("pkg.a-b", "not a Python identifier", 5),
        ("pkg.mod.<locals>", "not a Python identifier", 9),
        ("a:b:c", "at most one ':'", 4),
        ("pkg.mod:**", "'**' cannot follow ':'", 9),
        (" pkg", "without spaces", 1),
        ("", "without spaces", 1),
    ],
)
def test_bad_patterns(text: str, message: str, column: int) -> None:
    with pytest.raises(PolicyPatternError) as info:
        Pattern.parse(text, Position("p.yaml", 4, 1))
    assert message in info.value.message
    assert (info.value.line, info.value.column) == (4, column)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("a", "b", "overlaps"),
    [
        ("pkg.*.fn", "pkg.mod.*", True),
        ("pkg.*Block", "pkg.Dec*", True),
        ("pkg.a*", "pkg.b*", False),
        ("pkg.*x", "pkg.*y", False),
        ("pkg.**.a", "pkg.a.**", True),
        ("pkg.**", "other.**", False),
        ("pkg.*.*", "pkg.*", False),
        ("pkg.**.c", "pkg.a.b.*", True),
    ],
)
def test_overlap_witness(a: str, b: str, overlaps: bool) -> None:
    witness = overlap_witness(Pattern.parse(a), Pattern.parse(b))
    assert (witness is not None) == overlaps
    if witness is not None:
        t = tree({a: T})
        assert t.resolve(witness).decisions[EOGB].direct
        t = tree({b: T})
        assert t.resolve(witness).decisions[EOGB].direct


def test_names_below_a_trailing_double_star_match_as_if_walked() -> None:
    # below `deep.**` nothing but '**' leads on: the matches are not walked segment by
    # segment; they must be what the walk of the same name without ':' finds
    t = tree({"deep.**": T, "deep.a.**": F, "other.x": T})
    names = ["deep.a:B.c", "deep.a:f", "deep.a.b:C.d.e", "deep.a", "deep:f"]
    names += ["deep.x:B.c", "deep.x:f", "deep.x:B.c.d", "deep.x.y:f", "deep.x.y:C.d"]
    for name in names:
        assert t.matches(name) == t.matches(name.replace(":", ".")), name
        assert t.resolve(name).values() == t.resolve(name.replace(":", ".")).values(), name
