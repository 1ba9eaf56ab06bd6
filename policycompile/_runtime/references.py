"""References to patched functions that rebinding cannot reach (containers, closures): a full
heap scan, on demand only (reports, ``plan``), never during ``apply``."""

from __future__ import annotations

import contextlib
import gc
import types
from collections.abc import Iterable
from typing import Any

from .._engine.journal import Record


def _wrapper_parts(obj: Any, ours: set[int], depth: int = 0) -> None:
    """Collect the ids of the cells and dicts that make up a wrapper (ours or torch's)."""
    if depth > 6 or obj is None:
        return
    func = obj.__func__ if isinstance(obj, staticmethod | classmethod) else obj
    if hasattr(func, "__dict__"):
        ours.add(id(vars(func)))
    for cell in getattr(func, "__closure__", None) or ():
        ours.add(id(cell))
        with contextlib.suppress(ValueError):  # an empty cell
            _wrapper_parts(cell.cell_contents, ours, depth + 1)
    for attr in ("__wrapped__", "_torchdynamo_orig_callable"):
        inner = getattr(func, attr, None) if hasattr(func, "__dict__") else None
        if inner is not None and inner is not func:
            _wrapper_parts(inner, ours, depth + 1)


def _holders(obj: Any) -> tuple[int, ...]:
    """The ids of what holds the fields of one of our records: the object itself (slots),
    and its ``__dict__`` if it has one."""
    own = getattr(obj, "__dict__", None)
    return (id(obj),) if own is None else (id(obj), id(own))


def unreached(
    originals: list[Any],
    journal: list[Any],
    made: list[Record],
    modules: Iterable[types.ModuleType],
) -> list[str]:
    """References to original functions that no rebinding reaches: containers, closures.

    Everything that belongs to the journal and to the wrappers themselves (``made``: the
    record of each wrapper made, journaled or not any more) is excluded, as are the globals
    of ``modules`` (rebound) and frames (running code).
    """
    records = [e for e in journal if isinstance(e, Record)]
    ours: set[int] = {id(journal), id(originals)}
    for entry in (*journal, *made):
        ours.update(_holders(entry))
    for record in records:
        ours.update((*_holders(record.plan), *_holders(record.plan.target)))
        _wrapper_parts(record.new, ours)
    module_dicts = {id(vars(m)) for m in modules}
    names = {id(r.original): r.plan.target.display for r in records}
    found: list[str] = []
    for ref in gc.get_referrers(*originals):
        if id(ref) in ours or id(ref) in module_dicts or isinstance(ref, types.FrameType):
            continue
        if isinstance(ref, types.CellType):
            held, kind = [ref.cell_contents], "a closure variable"
        elif isinstance(ref, dict):
            held, kind = list(ref.values()), "a dict"
        elif isinstance(ref, list | tuple | set | frozenset):
            held, kind = list(ref), f"a {type(ref).__name__}"
        else:
            held, kind = [], f"a {type(ref).__name__}"
        targets = sorted({names[id(h)] for h in held if id(h) in names}) or ["an original"]
        found.extend(f"{t} is still held by {kind}" for t in targets)
    return found
