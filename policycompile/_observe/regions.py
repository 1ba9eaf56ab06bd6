"""A compile entry as the observer counts it, and the backend that counts its graphs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .._policy.tree import RuleRef


@dataclass
class RegionStats:
    """What happened under one compile entry."""

    name: str
    plan: Any  # the compile entry's Plan
    frames: set[int] = field(default_factory=set)
    graphs: int = 0
    compiles: set[tuple[int, int]] = field(default_factory=set)  # (frame id, compile id)
    failed: set[str] = field(default_factory=set)  # compiles that raised ("frame/attempt")
    limit_hit: bool = False  # a frame hit recompile_limit: Dynamo runs it eagerly from then on
    inner: set[str] = field(default_factory=set)  # other compile entries traced inside it
    stance_errors: int = 0  # calls that the stance `fail_on_recompile` stopped

    @property
    def rule(self) -> RuleRef | None:
        rule: RuleRef | None = self.plan.rules.get("compile")
        return rule

    @property
    def fullgraph(self) -> bool:
        return bool(self.plan.compile.get("fullgraph"))

    @property
    def program(self) -> bool:
        """A ``torch.compile`` call of the program's own, not a compile entry of the policy
        (audit relaxes none of its options)."""
        return self.rule is not None and self.rule.site


class ObservedBackend:
    """A region's compiler: counts its graphs, then hands them to the real backend.

    Attribute lookups go to the real backend, so Dynamo sees the same compiler it would by hand.
    """

    def __init__(
        self, on_graph: Callable[[RegionStats, Any], None], region: RegionStats, real: Any
    ) -> None:
        self.on_graph = on_graph
        self.stats = region
        self.real = real

    def __call__(self, gm: Any, example_inputs: Any, **kwargs: Any) -> Any:
        self.on_graph(self.stats, gm)
        return self.real(gm, example_inputs, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


def govern(
    region: RegionStats | None, settings: list[tuple[bool, RuleRef | None, str | None]]
) -> tuple[RuleRef | None, bool, str | None]:
    """(rule, allowed, where) for a break under ``region`` with the error_on_graph_break
    ``settings`` in force (outermost first): a fullgraph region forbids every break;
    otherwise the innermost setting decides, as the flag would. ``where`` is the function
    whose wrapper set the deciding value (the compile entry, for fullgraph)."""
    if region is not None and region.fullgraph:
        rules = region.plan.rules  # the program's own entry has one rule, its call site
        return rules.get("compile.fullgraph", rules.get("compile")), False, region.name
    if settings:
        value, rule, where = settings[-1]
        return rule, not value, where
    return None, True, None
