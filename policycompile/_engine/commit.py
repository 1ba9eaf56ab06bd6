"""Setting the wrappers of plans, all or nothing: each is built, set where its target is
stored, and returned as the journal's :class:`~.journal.Record` of what to put back."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from .._errors import PolicyTargetError
from .._observe.observer import Observer
from .journal import MISSING, Record
from .plan import Plan, wrapped_as
from .targets import still_inherited
from .wrappers import build


class Patched(list[Record]):
    """The records one call to ``patch_module`` made; ``deferred`` says it left re-exports
    for a later pass."""

    def __init__(self, records: list[Record] | None = None, *, deferred: bool = False) -> None:
        super().__init__(records or [])
        self.deferred = deferred


def commit(
    plans: Iterable[Plan],
    observer: Observer | None,
    *,
    audit: bool,
    warn: Callable[[str], object],
) -> Patched:
    """Build and set the wrapper of each of ``plans``, in order; the records of those set.

    ``plans`` may be decided as they are asked for (:func:`.modules.iter_plans`): what one
    definition makes is wrapped in one walk. A target whose owner already holds the policy's
    wrapper for its name (patched meanwhile, by another thread's import) is left alone; one
    whose owner refuses the wrapper is skipped with a warning, or raises when an exact rule
    names it. Whatever raises (that, or deciding a later plan), the wrappers set so far are
    taken back first.
    """
    done = Patched()
    try:
        for plan in plans:
            target = plan.target
            owner, attr = target.owner, target.attr
            original = vars(owner).get(attr, MISSING)
            if original is not target.raw and wrapped_as(original, target.name):
                continue
            record = Record(plan, owner, attr, original, build(plan, observer, audit=audit))
            try:
                record.apply()
            except PolicyTargetError as exc:
                if plan.exact is not None:
                    raise
                warn(f"skipped {exc.message}")
                continue
            done.append(record)
    except BaseException:
        for record in reversed(done):
            record.restore()
        raise
    return done


def settle_definitions(
    records: Iterable[Record], warn: Callable[[str], object], *, take_back: bool = True
) -> list[Record]:
    """Once a module ran, the ``records`` made at its definitions: those its own code replaced
    since are marked so (:attr:`Record.replaced_at_import`), and inherited members wrapped on
    a subclass whose base no longer holds the member wrapped (the module replaced it, or the
    bases) are taken back, for the pass to wrap what the class inherits then; those are
    returned. One that cannot be taken back (a metaclass refuses) keeps its wrapper, with a
    warning. ``take_back`` False only marks (undo, for a module whose import failed)."""
    out = []
    for record in records:
        if not record.still_ours():
            record.replaced_at_import = True
            continue
        if not take_back or record.plan.target.defined_in is None:
            continue
        try:
            if still_inherited(record.plan.target) or not record.restore():
                continue
        except Exception as exc:
            warn(
                f"{record.where}: kept the wrapper of what it inherited when the class was "
                f"made, though the base's changed since ({type(exc).__name__}: {exc})"
            )
            continue
        out.append(record)
    return out
