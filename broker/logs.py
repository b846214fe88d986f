"""Structured logging: one event per line, ``key=value`` (default) or JSON."""

from __future__ import annotations

import atexit
import json
import logging
import queue
import re
import sys
import threading
import time
import traceback
import warnings
from typing import IO, Any

_RESERVED = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "fields"}
_PLAIN = re.compile(r"[A-Za-z0-9.\-_:/^,+@*]+")


def _kv(value: Any) -> str:
    text = value if type(value) is str else str(value)
    if _PLAIN.fullmatch(text):
        return text
    return json.dumps(text, ensure_ascii=False)


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    """The event's fields: those given to event(), or any ``extra`` of a plain log call."""
    fields = record.__dict__.get("fields")
    if isinstance(fields, dict):
        return fields
    return {k: v for k, v in record.__dict__.items() if k not in _RESERVED}


class KeyValueFormatter(logging.Formatter):
    _second = -1
    _stamp = ""

    def _seconds(self, created: float) -> str:
        second = int(created)
        if second != self._second:  # one strftime per second, not per line
            self._second, self._stamp = second, time.strftime("%Y-%m-%dT%H:%M:%S",
                                                              time.localtime(second))
        return self._stamp

    def format(self, record: logging.LogRecord) -> str:
        ts = self._seconds(record.created)
        parts = [f"ts={ts}.{int(record.msecs):03d}", f"level={record.levelname}",
                 f"logger={record.name}", f"event={_kv(record.getMessage())}"]
        parts += [f"{k}={_kv(v)}" for k, v in _fields(record).items()]
        if record.exc_info:
            parts.append(f"exc={_kv(self.formatException(record.exc_info))}")
        return " ".join(parts)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {"ts": record.created, "level": record.levelname,
                                "logger": record.name, "event": record.getMessage()}
        data.update(_fields(record))
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return json.dumps(data, ensure_ascii=False, default=str)


class BackgroundHandler(logging.Handler):
    """Hands each record to a logging thread that formats and writes it: a thread that logs
    (an association, the store writer) neither waits for the stream nor for another thread's
    write. Lines keep their order; ``close`` (also at exit) writes what is still queued."""

    def __init__(self, stream: IO[str]) -> None:
        super().__init__()
        self.stream = stream
        self._queue: queue.SimpleQueue[logging.LogRecord | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._drain, name="log-writer", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    def emit(self, record: logging.LogRecord) -> None:
        self._queue.put(record)

    def handle(self, record: logging.LogRecord) -> bool:  # no lock needed: the queue is safe
        if self.filter(record):
            self._queue.put(record)
        return True

    def _drain(self) -> None:
        while True:
            records = [self._queue.get()]
            while True:
                try:
                    records.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            lines: list[str] = []
            for record in records:
                if record is None:
                    self._write(lines)
                    return
                try:
                    lines.append(self.format(record))
                except Exception:
                    self.handleError(record)
            self._write(lines)

    def _write(self, lines: list[str]) -> None:
        if lines:
            try:
                self.stream.write("\n".join(lines) + "\n")
                self.stream.flush()
            except (OSError, ValueError):
                pass

    def close(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(5)
        super().close()


def setup(level: str = "INFO", fmt: str = "keyvalue") -> None:
    for old in logging.getLogger().handlers:
        if isinstance(old, BackgroundHandler):
            old.close()
    handler = BackgroundHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else KeyValueFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    # pydicom logs each invalid value through its logger and also raises a UserWarning; the
    # warnings module keeps every distinct warning text for ever (__warningregistry__), so
    # values from peers made the broker's memory grow without bound (found by fuzzing)
    warnings.filterwarnings("ignore", category=UserWarning, module=r"pydicom(\.|$)")


def event(logger: logging.Logger, name: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log one event with its fields (kept as one structured attribute, ``fields``)."""
    if logger.isEnabledFor(level):
        logger.log(level, name, extra={"fields": fields})


def exception_site(exc: BaseException) -> dict[str, str]:
    """Where an unexpected exception came from, for a log line: its type and its innermost
    frame (file:line in function). Not its text, which may quote values of a message."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f"{frames[-1].filename.rsplit('/', 1)[-1]}:{frames[-1].lineno} in " \
        f"{frames[-1].name}" if frames else "?"
    return {"error_type": type(exc).__name__, "at": where}


_QUOTED = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"")


def without_values(text: str) -> str:
    """``text`` with each quoted value ('…' or "…", as ``repr`` writes them) replaced by
    '…': a peer's error comment for the log, without the query or dataset values it quotes."""
    return _QUOTED.sub("'…'", text)
