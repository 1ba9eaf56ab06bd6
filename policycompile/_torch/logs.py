"""Dynamo's words: the loggers it reports graph breaks and recompile limits on, and the
formats of its messages and errors, parsed in one place (docs/torch.md)."""

from __future__ import annotations

import re
from dataclasses import dataclass

#: a frame of the user stack Dynamo prints with a graph break
_FRAME = re.compile(r'^\s*File "(?P<file>[^"]+)", line (?P<line>\d+), in (?P<name>\S+)', re.M)
#: the site, on the first line of a graph-break record
_WHERE = re.compile(r"in user code at (?P<file>.+):(?P<line>\d+)")
#: the functions Dynamo makes to resume after a break, named after the one they continue
RESUME = re.compile(r"^torch_dynamo_resume_in_(?P<name>.+)_at_\d+$")
#: reasons of records that repeat, on a caller, a break already recorded inside
CONSEQUENCES = ("Failed to handle graph break gracefully",)
#: the fail reason of a frame that hit recompile_limit (not a graph break)
LIMIT_FAILURE = "Dynamo recompile limit exceeded"
#: how the recompile-limit warning names the function: "'name' (file:line)"
LIMITED_FUNCTION = re.compile(r"^'(?P<name>.+)' \((?P<file>.+):(?P<line>\d+)\)$")


@dataclass(frozen=True)
class Frame:
    """One frame of a traced stack."""

    file: str
    line: int
    name: str


#: torch.compiler.set_stance("fail_on_recompile")'s error (torch/_dynamo/eval_frame.py)
STANCE_ERROR = re.compile(
    r"Detected recompile when torch\.compile stance is 'fail_on_recompile'\. "
    r"filename: '(?P<file>[^']*)', function name: '(?P<name>[^']*)', line number: (?P<line>\d+)"
)


def parse_graph_break(message: str) -> tuple[Frame | None, str, list[Frame]]:
    """Site, short reason and user stack of a graph-break log message."""
    where = _WHERE.search(message.split("\n", 1)[0])
    site = Frame(where["file"], int(where["line"]), "") if where else None
    reason = ""
    if "Graph Break Reason:" in message:
        text = message.split("Graph Break Reason:", 1)[1]
        text = text.split("User code traceback:", 1)[0]
        lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
        lines = [ln for ln in lines if not ln.startswith("Encountered graph break when")]
        reason = lines[0] if lines else ""
    stack = []
    if "User code traceback:" in message:
        tb = message.split("User code traceback:", 1)[1]
        stack = [Frame(m["file"], int(m["line"]), m["name"]) for m in _FRAME.finditer(tb)]
    return site, reason, stack


def short_reason(exc: BaseException) -> str:
    """The first line of a Dynamo error that says what the break was."""
    return short_reason_text(str(exc)) if str(exc).strip() else type(exc).__name__


def short_reason_text(text: str) -> str:
    """The first line of a Dynamo error text that says what the break was."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    lines = [ln for ln in lines if not ln.startswith("Encountered graph break when")]
    return lines[0] if lines else "graph break"


#: The logger that warns "torch._dynamo hit config.recompile_limit", naming the function as
#: its third argument: "'name' (file:line)".
RECOMPILE_LIMIT_LOGGER = "torch._dynamo.convert_frame"


RECOMPILE_LIMIT_MESSAGE = "torch._dynamo hit config."


#: The loggers Dynamo reports graph breaks on (artifact loggers).
GRAPH_BREAK_LOGGERS = (
    "torch._dynamo.symbolic_convert.__graph_breaks",
    "torch._dynamo.convert_frame.__graph_breaks",
    "torch._dynamo.exc.__graph_breaks",
)
