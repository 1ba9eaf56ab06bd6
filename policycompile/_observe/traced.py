"""What ``policycompile suggest`` learns from each graph: the files Dynamo traced and the
``nn.Module`` instances under each compile entry."""

from __future__ import annotations

from typing import Any

from .._torch import dynamo


class Traced:
    """What ``policycompile suggest`` learns from each graph: the source files Dynamo traced
    (``TracingContext.traced_code``) and, per compile entry, the ``nn.Module`` classes that
    ran in it and how many instances of each it holds.

    A graph shows only the instances traced into it: where a graph break makes a layer a
    frame of its own, every layer after the first reuses that frame's code and is never
    traced. So where the entry is a module's forward, the instances are counted in the
    entry's module itself (``named_modules``), for each class seen running in its graphs;
    an entry that is a plain function counts the instances its graphs traced.
    """

    def __init__(self) -> None:
        self.files: set[str] = set()
        #: region -> class -> {path: None} of its instances, in the entry's own module
        self.held: dict[str, dict[type, dict[str, None]]] = {}
        #: region -> classes seen running (in a graph, or as a compiled frame's ``self``)
        self.seen: dict[str, set[type]] = {}
        #: region -> class -> paths of the instances its graphs traced (entries without a
        #: module of their own)
        self.traced: dict[str, dict[type, set[str]]] = {}

    def add(self, region: str, entry_class: Any, gm: Any) -> None:
        """Learn from one graph of ``region``, whose entry is ``entry_class``'s forward
        (None for a function)."""
        import torch

        self.files.update(c.co_filename for c in dynamo.traced_code())
        seen = self.seen.setdefault(region, set())
        root = dynamo.frame_self()
        if isinstance(root, torch.nn.Module):
            seen.add(type(root))
            if entry_class is not None and type(root) is entry_class and region not in self.held:
                held: dict[type, dict[str, None]] = {}
                for path, module in root.named_modules(remove_duplicate=True):
                    held.setdefault(type(module), {})[path] = None
                self.held[region] = held
        traced = self.traced.setdefault(region, {})
        for path, cls in dynamo.module_stack(gm):
            seen.add(cls)
            traced.setdefault(cls, set()).add(path)

    def instances(self, region: str) -> dict[type, list[str]]:
        """Class -> the paths of its instances under ``region``, for the classes seen there."""
        seen = self.seen.get(region, set())
        held = self.held.get(region)
        if held is not None:
            return {cls: list(held[cls]) for cls in seen if cls in held}
        return {cls: sorted(paths) for cls, paths in self.traced.get(region, {}).items()}
