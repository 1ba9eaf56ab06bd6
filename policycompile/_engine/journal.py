"""The journal of patches: each attribute the policy replaced and each alias it rebound,
with what to put back, restored only where it still holds our wrapper."""

from __future__ import annotations

import types
from dataclasses import dataclass
from typing import Any

from .._errors import PolicyTargetError
from .plan import Plan
from .targets import describe

MISSING: Any = object()


@dataclass(eq=False, slots=True)
class Record:
    """One attribute we replaced, and what to put back."""

    plan: Plan
    owner: Any
    attr: str
    original: Any  # the value in owner.__dict__ before, or MISSING when inherited
    new: Any
    #: made at a definition, and the module's own code bound something else there before it
    #: finished (a second ``def``, a decorator above, ``f = copy(f)``): undo has nothing
    #: to put back there, and that is no news
    replaced_at_import: bool = False

    @property
    def module(self) -> str:
        return self.plan.target.module

    @property
    def where(self) -> str:
        return self.plan.target.display

    def apply(self) -> None:
        """Set the wrapper.

        :raises PolicyTargetError: the owner refused (a metaclass or module type with its own
            ``__setattr__``, a read-only module), located at the exact rule if one names it.
        """
        try:
            setattr(self.owner, self.attr, self.new)
        except Exception as exc:
            exact = self.plan.exact
            raise PolicyTargetError(
                f"target {self.plan.target.display!r} cannot be patched: setting it on "
                f"{describe(self.owner)} raised {type(exc).__name__}: {exc}",
                exact.position if exact is not None else None,
                rule=exact.pattern.text if exact is not None else None,
            ) from None

    def still_ours(self) -> bool:
        return vars(self.owner).get(self.attr, MISSING) is self.new

    def restore(self, original: Any = MISSING) -> bool:
        """Put the original (or ``original``, when given) back if the attribute still holds
        our wrapper; True too if it holds that already (another entry put it back)."""
        if original is MISSING:
            original = self.original
        if not self.still_ours():
            return vars(self.owner).get(self.attr, MISSING) is original
        if original is MISSING:
            delattr(self.owner, self.attr)
        else:
            setattr(self.owner, self.attr, original)
        return True


@dataclass(eq=False)
class AliasRecord:
    """A global of another module that held an original function, rebound to its wrapper."""

    module: types.ModuleType
    name: str
    original: Any
    new: Any

    @property
    def where(self) -> str:
        return f"{self.module.__name__}.{self.name}"

    def restore(self) -> bool:
        """As :meth:`Record.restore`."""
        held = vars(self.module).get(self.name, MISSING)
        if held is not self.new:
            return held is self.original
        setattr(self.module, self.name, self.original)
        return True


class HookRecord(AliasRecord):
    """A function of torch wrapped by policycompile itself, not by a rule (the process
    group's ``init_process_group`` and ``destroy_process_group``, watched for the ranks)."""


@dataclass(eq=False, slots=True)
class SlotRecord:
    """An item of a module-level container (a dict's value, a list's or set's element) that
    held an original function, pointed at its wrapper: ``where`` says which, as
    ``mod.TASKS['work']``."""

    where: str
    container: Any
    key: Any  # the dict key or list index; for a set, None
    original: Any
    new: Any

    def apply(self) -> None:
        if isinstance(self.container, set):
            self.container.discard(self.original)
            self.container.add(self.new)
        else:
            self.container[self.key] = self.new

    def restore(self) -> bool:
        """As :meth:`Record.restore`; what the slot holds is read through the built-in type's
        own methods, as it was found (a subclass's ``__getitem__`` may compute another item,
        or insert one: a ``defaultdict``)."""
        container = self.container
        if isinstance(container, set):
            if not set.__contains__(container, self.new):
                return set.__contains__(container, self.original)
            container.discard(self.new)
            container.add(self.original)
            return True
        if isinstance(container, dict):
            held = dict.get(container, self.key, MISSING)
        else:
            try:
                held = list.__getitem__(container, self.key)
            except (IndexError, TypeError):
                return False
        if held is not self.new:
            return held is self.original
        container[self.key] = self.original
        return True
