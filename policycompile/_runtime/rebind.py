"""Finding what holds an original function where the policy can point it at the wrapper: the
globals of other modules (``from mod import fn``) and, one level deep, the module-level
containers of every module (``TASKS = {"work": work}``, ``HANDLERS = [fn]``), for modules
imported before ``apply`` (docs/apply.md, "What a rule reaches"); and, at undo, putting the
originals back."""

from __future__ import annotations

import sys
import threading
import types
import warnings
from typing import Any

from .._engine.containers import in_containers, items
from .._engine.journal import MISSING, AliasRecord, Record, SlotRecord
from .._engine.modules import is_reexport
from .._engine.targets import Kind
from .._errors import PolicyWarning
from .references import unreached

_METHODS = (staticmethod, classmethod)


def made_by(value: Any, wrappers: dict[int, Record]) -> Record | None:
    """The record whose wrapper ``value`` is: the wrapper itself, or the function in a
    static or class method wrapper (``A.s`` reads it out of ``A.__dict__['s']``)."""
    record = wrappers.get(id(value))
    if record is None:
        return None
    new = record.new
    if new is value or (type(new) in _METHODS and new.__func__ is value):
        return record
    return None


def unwrapped(value: Any, wrappers: dict[int, Record]) -> Any:
    """The original under ``value``, one of our wrappers, through wrappers of wrappers."""
    seen: set[int] = set()  # a wrapper is never its own original; guard all the same
    while (record := made_by(value, wrappers)) is not None and id(value) not in seen:
        seen.add(id(value))
        if record.new is not value:  # the function of a static or class method: its own
            value = record.plan.target.func
        else:  # an inherited member's attribute was absent: what the wrapper stood for is
            # the base's member it wrapped
            value = record.plan.target.raw if record.original is MISSING else record.original
    return value


def wrapper_ids(record: Record) -> list[tuple[int, Any]]:
    """``(id, object)`` of each thing a reference to ``record``'s wrapper may hold: the
    wrapper, and the function in it when it is a static or class method."""
    new = record.new
    return (
        [(id(new), new), (id(new.__func__), new.__func__)]
        if type(new) in _METHODS
        else [(id(new), new)]
    )


def sweep(modules: list[types.ModuleType], wrappers: dict[int, Record]) -> list[str]:
    """Put originals back into globals that still hold one of our function wrappers (taken
    since apply: ``from mod import fn``); what refused is returned, a line each."""
    problems: list[str] = []
    for module in modules:
        for name, value in items(module):
            if made_by(value, wrappers) is None:
                continue
            restored = unwrapped(value, wrappers)
            if restored is MISSING:
                continue
            try:
                setattr(module, name, restored)
            except Exception as exc:  # whatever its __setattr__ raises: say so
                problems.append(
                    f"{vars(module).get('__name__')}.{name} still holds the policy's wrapper: "
                    f"putting the original back raised {type(exc).__name__}: {exc}"
                )
    return problems


def loaded_modules() -> list[types.ModuleType]:
    """The modules imported so far (entries of ``sys.modules`` that are modules)."""
    return [m for m in list(sys.modules.values()) if isinstance(m, types.ModuleType)]


class Rebinding:
    """The part of :class:`~.handle.PolicyHandle` that points other references at the
    wrappers (and back, at undo): aliases in other modules' globals, items of module-level
    containers."""

    _lock: threading.RLock
    _journal: list[Record | AliasRecord | SlotRecord]
    _wrappers: dict[int, Record]  # id(wrapper) -> the record that made it
    _wrapper_ids: dict[int, Any]  # id(wrapper) -> wrapper: looked up for every held item
    #: the container slots journaled, with what they held (:attr:`~.containers.Held.slot`):
    #: a dict that several modules import (``from .rope import ROPE_FUNCTIONS``) is one place
    _slots: set[tuple[int, Any, int]]
    hold: set[str]
    active: bool
    unreached: list[str]

    @property
    def records(self) -> tuple[Record, ...]:
        raise NotImplementedError

    def warn(self, text: str) -> None:
        raise NotImplementedError

    def rebind_aliases(
        self, modules: list[types.ModuleType], records: list[Record] | None = None
    ) -> None:
        """Point globals of ``modules`` that hold an original function at its wrapper
        (``from pkg.mod import fn`` before the module was patched).

        Patched names themselves are never rebound, nor is ``__main__`` at apply time: its
        module-level code may be running a loop over the very names we would rebind.

        :param records: the patches whose originals to look for; all by default.
        """
        recs = self.records if records is None else tuple(records)
        originals: dict[int, Record] = {}
        # the defining name's wrapper, not a re-export's, when both wrap one original
        for r in sorted(recs, key=lambda r: is_reexport(r.plan.target)):
            if r.plan.target.kind is Kind.FUNCTION and r.original is not MISSING:
                originals.setdefault(id(r.original), r)
        if not originals:
            return
        patched: set[tuple[int, str]] | None = None  # made when first needed: it is long
        refused: list[tuple[str, Record, Exception]] = []
        for module in modules:
            module_name = vars(module).get("__name__")
            if module_name == "__main__" or module_name in self.hold:
                continue
            for name, value in items(module):
                record = originals.get(id(value))
                if record is None or value is not record.original:
                    continue
                if patched is None:
                    with self._lock:
                        patched = {
                            (id(e.owner), e.attr) for e in self._journal if isinstance(e, Record)
                        }
                if (id(module), name) in patched:
                    continue
                with self._lock:
                    if not self.active:
                        return
                    try:
                        setattr(module, name, record.new)
                    except Exception as exc:  # whatever a module type's __setattr__ raises
                        refused.append((f"{module_name}.{name}", record, exc))
                        continue
                    self._journal.append(AliasRecord(module, name, value, record.new))
        self._rebind_containers(modules, originals, refused)
        if refused:
            shown = [
                f"{where} (of {record.plan.target.display}: {type(error).__name__}: {error})"
                for where, record, error in refused[:5]
            ]
            more = f"; and {len(refused) - 5} more" if len(refused) > 5 else ""
            self.warn(
                f"{len(refused)} alias(es) hold an original and refused to be rebound, so calls "
                f"through them are not under the policy: {'; '.join(shown)}{more}"
            )

    def _rebind_containers(
        self,
        modules: list[types.ModuleType],
        originals: dict[int, Record],
        refused: list[tuple[str, Record, Exception]],
    ) -> None:
        """Items of module-level containers that hold an original (``TASKS = {"work": work}``
        in a module imported before apply) point at the wrapper, as a decorator written at
        the definition would have had them; what cannot change in place is said."""
        found = in_containers(modules, {k: r.original for k, r in originals.items()})
        for held in found:
            record = originals[id(held.value)]
            if not held.rebindable:
                text = f"{held.where} holds the original of {record.plan.target.display}"
                with self._lock:
                    if text not in self.unreached:
                        self.unreached.append(text)
                continue
            slot = SlotRecord(held.where, held.container, held.key, held.value, record.new)
            with self._lock:
                if not self.active:
                    return
                try:
                    slot.apply()
                except Exception as exc:  # whatever a container subclass raises
                    refused.append((held.where, record, exc))
                    continue
                self._journal.append(slot)
                self._slots.add(held.slot)

    def unreached_references(self) -> list[str]:
        """References to patched module-level functions that rebinding could not reach
        (containers, closures), e.g. ``HANDLERS = [fn]`` taken before apply. A full heap
        scan: computed on demand (reports, ``plan``), never during apply."""
        records = self.records
        originals = [
            r.original
            for r in records
            if r.plan.target.kind is Kind.FUNCTION and r.original is not MISSING
        ]
        if not originals:
            return []
        with self._lock:
            journal, made = (
                list(self._journal),
                list({id(r): r for r in self._wrappers.values()}.values()),
            )
        return unreached(originals, journal, made, loaded_modules())

    def adopt_containers(self, modules: list[types.ModuleType]) -> None:
        """Items of the module-level containers of ``modules``, imported under the policy,
        that hold one of its wrappers (``TASKS = {"work": work}`` after ``work`` was wrapped
        where it was defined): journaled, so that undo puts the original back there too.
        Asked at undo, not at each import (where it cost a tenth of the policy's share of
        an import): what the containers hold then is what there is to put back."""
        wrappers = self._wrappers  # only looked up (a copy per import costs more than all)
        for held in in_containers(modules, self._wrapper_ids):
            original = unwrapped(held.value, wrappers)
            if held.rebindable and original is not MISSING:
                slot = SlotRecord(held.where, held.container, held.key, original, held.value)
                with self._lock:
                    if held.slot not in self._slots:
                        self._slots.add(held.slot)
                        self._journal.append(slot)

    def _restore(self, entry: Record | AliasRecord | SlotRecord, again: bool) -> None:
        """Restore ``entry``, or say why not (unless ``again``: an undo interrupted there); an
        entry that raises is said and left, so that the rest is restored all the same."""
        try:
            if self._put_back(entry) or again:
                return
        except Exception as exc:  # whatever a container subclass or a __setattr__ raises
            text = f"{entry.where}: putting the original back raised {type(exc).__name__}: {exc}"
            warnings.warn(f"{text}; left as it is", PolicyWarning, stacklevel=3)
            return
        if isinstance(entry, Record) and entry.replaced_at_import:
            return  # the module's own code replaced it as it ran: as the program made it
        text = f"{entry.where} no longer holds the policy's wrapper (replaced since); left as it is"
        warnings.warn(text, PolicyWarning, stacklevel=3)

    def _put_back(self, entry: Record | AliasRecord | SlotRecord) -> bool:
        """Restore ``entry`` (False: it no longer holds our wrapper). An attribute whose
        original is another of our wrappers (a class attribute set to another target's
        wrapper as the module ran: an ``Enum``'s ``_generate_next_value_``) gets that one's
        original, as if no policy had applied, in the static or class method it was in."""
        if not isinstance(entry, Record):
            return entry.restore()
        original, wrappers = entry.original, self._wrappers
        if made_by(original, wrappers) is not None:
            return entry.restore(unwrapped(original, wrappers))
        kind = type(original)
        if kind in _METHODS and made_by(original.__func__, wrappers) is not None:
            return entry.restore(kind(unwrapped(original.__func__, wrappers)))
        return entry.restore()

    def _sweep(self) -> None:
        """Put originals back into globals that still hold one of our function wrappers."""
        wrappers = self._wrappers
        if not wrappers:
            return
        for problem in sweep(loaded_modules(), wrappers):
            warnings.warn(problem, PolicyWarning, stacklevel=3)
        self._wrappers = {}
        self._wrapper_ids = {}
        self._slots = set()
