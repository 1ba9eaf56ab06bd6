"""Taps on Dynamo's loggers: graph-break records whatever the loggers' levels, and the
warning that a frame hit ``recompile_limit``."""

from __future__ import annotations

import logging
from collections.abc import Callable

from .._torch import logs


class LogTap:
    """Receives the records of one Dynamo artifact logger whatever its level.

    Dynamo only formats a graph-break record when its logger is enabled for DEBUG, and
    ``torch._logging.set_logs`` resets levels. The tap answers ``isEnabledFor`` itself and
    re-attaches its handler on every use, so user code cannot switch it off; records reach
    torch's own handlers only when the logger's real level asks for them (``TORCH_LOGS``).
    """

    def __init__(self, name: str, on_message: Callable[[str], None]) -> None:
        self.logger = logging.getLogger(name)
        self.on_message = on_message
        self.handler = _TapHandler(self)
        self._installed = False

    def install(self) -> None:
        logger = self.logger
        tap = self

        def is_enabled_for(level: int) -> bool:
            tap.heal()
            return True

        self._saved_propagate = logger.propagate
        logger.isEnabledFor = is_enabled_for  # type: ignore[method-assign]
        self._installed = True
        self.heal()

    def heal(self) -> None:
        if self.handler not in self.logger.handlers:
            self.logger.addHandler(self.handler)
        self.logger.propagate = False

    def user_wants(self, record: logging.LogRecord) -> bool:
        return logging.Logger.isEnabledFor(self.logger, record.levelno)

    def forward(self, record: logging.LogRecord) -> None:
        """Deliver ``record`` as propagation would have (for users who asked for it)."""
        for handler in self.logger.handlers:
            if handler is not self.handler and record.levelno >= handler.level:
                handler.handle(record)
        parent = self.logger.parent
        while parent is not None:
            for handler in parent.handlers:
                if record.levelno >= handler.level:
                    handler.handle(record)
            if not parent.propagate:
                break
            parent = parent.parent

    def uninstall(self) -> None:
        if not self._installed:
            return
        self._installed = False
        self.logger.__dict__.pop("isEnabledFor", None)
        self.logger.removeHandler(self.handler)
        self.logger.propagate = self._saved_propagate


class LimitHandler(logging.Handler):
    """Hears Dynamo's warning that a frame hit recompile_limit (nothing else of that logger)."""

    def __init__(self, on_function: Callable[[str], None]) -> None:
        super().__init__(logging.WARNING)
        self.on_function = on_function

    def emit(self, record: logging.LogRecord) -> None:
        args = record.args
        if (
            isinstance(record.msg, str)
            and record.msg.startswith(logs.RECOMPILE_LIMIT_MESSAGE)
            and isinstance(args, tuple)
            and len(args) > 2
        ):
            self.on_function(str(args[2]))


class _TapHandler(logging.Handler):
    def __init__(self, tap: LogTap) -> None:
        super().__init__(logging.DEBUG)
        self.tap = tap

    def emit(self, record: logging.LogRecord) -> None:
        # on_message records what it fails to read itself (Observer.fail): nothing to catch
        self.tap.on_message(record.getMessage())
        if self.tap.user_wants(record):
            self.tap.forward(record)
