"""structlog configuration for the node process (entry points only call this).

One JSON object per line on stdout; stable ``noun.verb`` event names; context
(node, shard, view, height) is bound by the code that owns it. Records of
libraries that use stdlib logging (py-libp2p) go through the same renderer, so
a node's log stays one JSON object per line.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, Literal

import structlog

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
          "error": logging.ERROR}
# Chatty at INFO and below, and noisy while peers start: let only warnings through.
LIBRARY_LEVELS = {"libp2p": logging.WARNING, "multiaddr": logging.WARNING,
                  "aiohttp.access": logging.WARNING, "asyncio": logging.WARNING}


def _quiet_libraries(level: int) -> logging.Filter:
    """py-libp2p sets explicit levels on its child loggers; filter by name instead."""

    class QuietLibraries(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            top = record.name.split(".", 1)[0]
            floor = LIBRARY_LEVELS.get(record.name, LIBRARY_LEVELS.get(top, level))
            return record.levelno >= max(floor, level)

    return QuietLibraries()


def configure_logging(
    fmt: Literal["json", "console"] = "json", level: str = "info", stream: Any = None
) -> None:
    out = stream or sys.stdout
    renderer: Any
    if fmt == "console":
        renderer = structlog.dev.ConsoleRenderer(colors=False)
    else:
        renderer = structlog.processors.JSONRenderer(sort_keys=False)
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
    ]
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(out)
    handler.addFilter(_quiet_libraries(LEVELS[level]))
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    ))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(LEVELS[level])
    for name, library_level in LIBRARY_LEVELS.items():
        library = logging.getLogger(name)
        library.setLevel(max(library_level, LEVELS[level]))
        # py-libp2p detaches its logger on import (propagate=False, no handler), which
        # sends its warnings to Python's last-resort stderr handler as plain text.
        library.handlers.clear()
        library.propagate = True
