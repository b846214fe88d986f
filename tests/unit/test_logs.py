"""The structured log lines and the background handler that writes them."""

from __future__ import annotations

import io
import logging

from broker.logs import BackgroundHandler, KeyValueFormatter, event


def test_background_handler_writes_every_line_in_order_on_close() -> None:
    stream = io.StringIO()
    handler = BackgroundHandler(stream)
    handler.setFormatter(KeyValueFormatter())
    logger = logging.getLogger("test.background")
    logger.propagate = False
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        for n in range(500):
            event(logger, "step", n=n, control_id=f"MSG{n}")
    finally:
        logger.removeHandler(handler)
        handler.close()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 500
    assert [line.split(" n=")[1].split()[0] for line in lines] == [str(n) for n in range(500)]
    assert all("control_id=MSG" in line for line in lines)


def test_values_with_spaces_or_quotes_are_quoted_and_empty_values_shown() -> None:
    record = logging.makeLogRecord({"name": "x", "levelname": "INFO", "msg": "ev",
                                    "fields": {"a": "two words", "b": "", "c": 'say "hi"',
                                               "d": "1.2.840^X"}})
    line = KeyValueFormatter().format(record)
    assert 'a="two words"' in line and 'b=""' in line
    assert 'c="say \\"hi\\""' in line and "d=1.2.840^X" in line
    assert line.startswith("ts=") and " level=INFO logger=x event=ev " in line
