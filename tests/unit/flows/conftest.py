"""A real SQLite store in tmp_path holding order(1) (one scheduled step), for the flows."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from broker.config import Hl7Settings, MllpSettings
from broker.flows.hl7_in import Ingestor
from broker.mapping.schema import load_mappings
from broker.mapping.specs import MappingSet
from broker.store.sqlite.writer import SqliteWriter as Writer
from tests.support.samples import order

SHIPPED: MappingSet = load_mappings(Path(__file__).resolve().parents[3] / "mappings")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Writer]:
    writer = Writer(tmp_path / "broker.sqlite", synchronous="NORMAL")
    writer.start()
    try:
        ingestor = Ingestor(writer, lambda: SHIPPED, Hl7Settings(), MllpSettings())
        outcome = asyncio.run(ingestor.handle(order(1).encode(), "127.0.0.1"))
        assert outcome.code == "AA", outcome.ack
        yield writer
    finally:
        writer.stop()
