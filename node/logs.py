"""structlog configuration for the node process (entry points only call this).

One JSON object per line, on stdout or in a size-bounded rotating file
(``logging.handlers.RotatingFileHandler``); stable ``noun.verb`` event names; context
(node, shard, view, height) is bound by the code that owns it. Records of libraries
that use stdlib logging (py-libp2p) go through the same handler and renderer, so a
node's log stays one JSON object per line; py-libp2p's own messages become the one
event ``p2p.libp2p_warning`` (their text a field), rate-limited per logger and peer
(:class:`Libp2pBridge`).

Transaction trace (docs/LOGS.md): an event that names transactions (``txs``/``origins``
lists, ``tx``/``origin``) is written in full, by a thread, to the node's trace file
(``<home>/logs/trace.jsonl``, rotating too), which ``shardnet logs --trace`` reads; the
log line itself keeps a ``count`` and the first :data:`SAMPLE_HASHES` hashes
(``txs_sample``), so a block of 2,000 transactions is a short line.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import logging.handlers
import os
import queue
import re
import sys
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import structlog

from node import defaults

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
          "error": logging.ERROR}
# structlog method names -> numeric levels (for the level filter after the trace).
METHOD_LEVELS = {**LEVELS, "warn": logging.WARNING, "exception": logging.ERROR,
                 "critical": logging.CRITICAL, "fatal": logging.CRITICAL, "msg": logging.INFO}
# Chatty at INFO and below, and noisy while peers start: let only warnings through.
LIBRARY_LEVELS = {"libp2p": logging.WARNING, "multiaddr": logging.WARNING,
                  "aiohttp.access": logging.WARNING, "asyncio": logging.WARNING}

# Event fields that name transactions: lists (traced in full, sampled in the log line)
# and single hashes (traced, kept in the log line).
TRACE_LISTS = ("txs", "origins")
TRACE_SINGLE = ("tx", "origin")
SAMPLE_HASHES = 3
# Trace events waiting for the writer thread; past this, new ones are dropped (counted).
TRACE_QUEUE_EVENTS_MAX = 10_000

LIBP2P_EVENT = "p2p.libp2p_warning"
# A repeated py-libp2p message (same logger, same peer) is logged again at most this
# often, with the count suppressed meanwhile; the peer's ``p2p.connected`` ends it.
LIBP2P_REPEAT_S = 300.0
LIBP2P_KEYS_MAX = 1_024


def _quiet_libraries(level: int) -> logging.Filter:
    """py-libp2p sets explicit levels on its child loggers; filter by name instead."""

    class QuietLibraries(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            if isinstance(record.msg, dict):  # our own structlog events: filtered already
                return True
            top = record.name.split(".", 1)[0]
            floor = LIBRARY_LEVELS.get(record.name, LIBRARY_LEVELS.get(top, level))
            return record.levelno >= max(floor, level)

    return QuietLibraries()


_ADDRESS = re.compile(r"/ip4/(\d{1,3}(?:\.\d{1,3}){3})/tcp/(\d{1,5})"
                      r"|\b(\d{1,3}(?:\.\d{1,3}){3}):(\d{1,5})\b")
_PEER_ID = re.compile(r"\b((?:12D3KooW|Qm)[1-9A-HJ-NP-Za-km-z]{40,50})\b")
_SHAPE = re.compile(r"0x[0-9a-fA-F]+|\d+")


def peer_of(text: str) -> str | None:
    """The peer a py-libp2p message is about: ``ip:port`` or a peer id; None if neither."""
    if match := _ADDRESS.search(text):
        host, port = (match.group(1), match.group(2)) if match.group(1) else (
            match.group(3), match.group(4))
        return f"{host}:{port}"
    if match := _PEER_ID.search(text):
        return match.group(1)
    return None


@dataclass
class _Episode:
    since: float
    suppressed: int = 0


class Libp2pBridge(logging.Filter):
    """py-libp2p's records as one stable event, ``p2p.libp2p_warning`` (level warning:
    py-libp2p logs a routine failed dial as ERROR), with ``logger``, ``text``, ``peer``
    (``ip:port`` or peer id, when the text names one) and ``libp2p_level``.

    Rate limit: per (logger, peer) (or the text's shape when it names no peer), the first
    message is logged and the next ones are counted, not logged, for ``repeat_s``; after
    that one line again with ``suppressed``. When the node's p2p layer logs
    ``p2p.connected`` for that peer (by id or address) the episode ends: that line carries
    ``libp2p_suppressed`` (messages not logged since the last one) and the next failure
    is logged at once. A peer that is down is one warning and one recovery."""

    def __init__(self, repeat_s: float = LIBP2P_REPEAT_S, clock: Any = time.monotonic) -> None:
        super().__init__()
        self._repeat_s = repeat_s
        self._clock = clock
        self._lock = threading.Lock()  # the p2p thread and the loop both log
        self._episodes: OrderedDict[tuple[str, str], _Episode] = OrderedDict()

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, dict):
            if record.msg.get("event") == "p2p.connected":
                self._recovered(record.msg)
            return True
        if record.name.split(".", 1)[0] != "libp2p":
            return True
        text = record.getMessage()
        peer = peer_of(text)
        key = (record.name, peer or _SHAPE.sub("#", text)[:160])
        now = self._clock()
        with self._lock:
            episode = self._episodes.get(key)
            if episode is not None and now - episode.since < self._repeat_s:
                episode.suppressed += 1
                return False
            self._episodes[key] = _Episode(since=now)
            self._episodes.move_to_end(key)
            while len(self._episodes) > LIBP2P_KEYS_MAX:
                self._episodes.popitem(last=False)
        fields: dict[str, Any] = {"logger": record.name, "text": text[:500], "peer": peer,
                                  "libp2p_level": record.levelname.lower()}
        if episode is not None:
            fields["suppressed"] = episode.suppressed
        record.msg, record.args = LIBP2P_EVENT, None
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.shardnet_fields = fields
        return True

    def _recovered(self, event: dict[str, Any]) -> None:
        names = {str(event.get("peer"))}
        if (peer := peer_of(str(event.get("address", "")))) is not None:
            names.add(peer)
        with self._lock:
            ended = [key for key in self._episodes if key[1] in names]
            suppressed = sum(self._episodes.pop(key).suppressed for key in ended)
        if ended:
            event["libp2p_suppressed"] = suppressed


def _foreign_fields(_: Any, __: str, event_dict: Any) -> Any:
    """Fields a filter attached to a stdlib record (``shardnet_fields``)."""
    record = event_dict.get("_record")
    fields = getattr(record, "shardnet_fields", None)
    if fields:
        event_dict.update(fields)
    return event_dict


def _bind_context(context: dict[str, Any]) -> Any:
    def add(_: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
        for key, value in context.items():
            event_dict.setdefault(key, value)
        return event_dict

    return add


def _drop_below(level: int) -> Any:
    def drop(_: Any, method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
        if METHOD_LEVELS.get(method, logging.INFO) < level:
            raise structlog.DropEvent
        return event_dict

    return drop


class FollowingRotatingFileHandler(logging.handlers.RotatingFileHandler):
    """A RotatingFileHandler that, after a rollover, points this process's stdout and
    stderr at the new file when they were writing to the log file (a local testnet
    appends the node's output to it): a traceback or an exit message lands in the
    current file, not in a backup that will be deleted."""

    def __init__(self, filename: Path, bytes_max: int, backups: int) -> None:
        filename.parent.mkdir(parents=True, exist_ok=True)
        super().__init__(filename, maxBytes=bytes_max, backupCount=backups, encoding="utf-8")
        self._follow: list[int] = []
        for fd in (1, 2):
            try:
                if os.path.samestat(os.fstat(fd), os.stat(filename)):
                    self._follow.append(fd)
            except OSError:
                pass

    def doRollover(self) -> None:
        super().doRollover()
        if self.stream is not None:
            for fd in self._follow:
                with contextlib.suppress(OSError):
                    os.dup2(self.stream.fileno(), fd)


class _JsonLine(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(record.msg, separators=(",", ":"), default=str)


class _TraceQueueHandler(logging.handlers.QueueHandler):
    """Hands the event dict to the writer thread as is (no formatting on the loop) and
    drops, counting, when the writer is behind."""

    dropped = 0

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        return record

    def enqueue(self, record: logging.LogRecord) -> None:
        try:
            self.queue.put_nowait(record)
        except queue.Full:
            type(self).dropped += 1


class _TraceListener(logging.handlers.QueueListener):
    def enqueue_sentinel(self) -> None:
        # Waits for room (the thread is draining): a full queue must not lose the stop.
        with contextlib.suppress(queue.Full):
            self.queue.put(self._sentinel, timeout=5)  # type: ignore[attr-defined]


class TraceWriter:
    """The trace file's writer: events go through a bounded queue to a thread that
    writes them (one JSON line per event, hash lists in full) with a
    RotatingFileHandler."""

    def __init__(self, path: Path, bytes_max: int, backups: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._file = logging.handlers.RotatingFileHandler(
            path, maxBytes=bytes_max, backupCount=backups, encoding="utf-8")
        self._file.setFormatter(_JsonLine())
        self._queue: queue.Queue[logging.LogRecord] = queue.Queue(TRACE_QUEUE_EVENTS_MAX)
        self._handler = _TraceQueueHandler(self._queue)
        self._listener = _TraceListener(self._queue, self._file)
        self._listener.start()
        self._stopped = False

    def put(self, event: dict[str, Any]) -> None:
        self._handler.emit(logging.makeLogRecord({"msg": event}))

    def stop(self) -> None:
        """Write what is queued, then close the file."""
        if self._stopped:
            return
        self._stopped = True
        self._listener.stop()
        self._file.close()


def trace_dropped() -> int:
    """Trace events dropped because the writer thread was behind (process total)."""
    return _TraceQueueHandler.dropped


def _trace_and_sample(writer: TraceWriter | None) -> Any:
    """Write an event naming transactions to the trace file in full; keep in the log
    line a ``count`` and the first few hashes of each list (``txs_sample``)."""

    def trace(_: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
        lists = [key for key in TRACE_LISTS if isinstance(event_dict.get(key), list)]
        if not lists and not any(isinstance(event_dict.get(key), str) for key in TRACE_SINGLE):
            return event_dict
        if writer is not None:
            record = dict(event_dict)
            record.pop("exc_info", None)
            writer.put(record)
        for key in lists:
            items = event_dict.pop(key)
            event_dict.setdefault("count", len(items))
            event_dict[f"{key}_sample"] = items[:SAMPLE_HASHES]
        return event_dict

    return trace


_writer: TraceWriter | None = None


def _stop_writer() -> None:
    global _writer
    if _writer is not None:
        _writer.stop()
        _writer = None


atexit.register(_stop_writer)


def configure_logging(
    fmt: Literal["json", "console"] = "json", level: str = "info", stream: Any = None, *,
    file: Path | None = None, file_bytes_max: int = defaults.LOG_FILE_BYTES_MAX,
    file_backups: int = defaults.LOG_FILE_BACKUPS, trace_file: Path | None = None,
    trace_bytes_max: int = defaults.LOG_TRACE_FILE_BYTES_MAX,
    trace_backups: int = defaults.LOG_TRACE_FILE_BACKUPS,
    context: dict[str, Any] | None = None, libp2p_repeat_s: float = LIBP2P_REPEAT_S,
) -> None:
    """Log to ``stream`` (stdout) or, given ``file``, to that rotating file; write the
    transaction trace to ``trace_file`` when given. ``context`` (node, shard) is added to
    every line that does not carry it (py-libp2p's records)."""
    global _writer
    _stop_writer()
    threshold = LEVELS[level]
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
    if trace_file is not None:
        _writer = TraceWriter(trace_file, trace_bytes_max, trace_backups)
    handler: logging.Handler
    if file is not None:
        handler = FollowingRotatingFileHandler(file, file_bytes_max, file_backups)
    else:
        handler = logging.StreamHandler(stream or sys.stdout)
    handler.addFilter(_quiet_libraries(threshold))
    handler.addFilter(Libp2pBridge(libp2p_repeat_s))
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name, _foreign_fields,
                           _bind_context(context or {})],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    ))
    own = logging.getLogger("shardnet")
    structlog.configure(
        processors=[*shared, _trace_and_sample(_writer), _drop_below(threshold),
                    structlog.processors.format_exc_info,
                    structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        # Info events pass the wrapper even at level warning: the trace needs them.
        wrapper_class=structlog.make_filtering_bound_logger(min(threshold, logging.INFO)),
        logger_factory=lambda *_: own,
        cache_logger_on_first_use=True,
    )
    root = logging.getLogger()
    for old in root.handlers:
        old.close()
    root.handlers[:] = [handler]
    root.setLevel(threshold)
    own.setLevel(logging.DEBUG)
    own.propagate = True
    for name, library_level in LIBRARY_LEVELS.items():
        library = logging.getLogger(name)
        library.setLevel(max(library_level, threshold))
        # py-libp2p detaches its logger on import (propagate=False, no handler), which
        # sends its warnings to Python's last-resort stderr handler as plain text.
        library.handlers.clear()
        library.propagate = True
