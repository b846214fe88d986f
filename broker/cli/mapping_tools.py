"""``check-mappings`` and ``map``: validate the mapping folder, dry-run messages through it."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from broker.cli.dry_run_json import MAP_PEER, events_json
from broker.cli.hl7_tools import split_messages
from broker.cli.settings import settings_of


def cmd_check_mappings(args: argparse.Namespace) -> int:
    from broker.mapping.schema import MappingLoadError, describe, load_mappings

    directory = args.directory or settings_of(args).mappings.directory
    try:
        mappings = load_mappings(directory)
    except MappingLoadError as exc:
        for line in exc.errors:
            print(line)
        print(f"{len(exc.errors)} error(s) in {directory}", file=sys.stderr)
        return 1
    summary = describe(mappings)
    print(f"OK: {len(summary['files'])} file(s), messages: {', '.join(summary['messages'])}")
    return 0




def cmd_map(args: argparse.Namespace) -> int:
    """Each message through the ingest path ``serve`` runs, on a store that rolls back; a
    JSON file (a FHIR Bundle or resource) through the FHIR intake path the same way."""
    from broker.flows.hl7_in import Ingestor
    from broker.mapping.schema import MappingLoadError, load_mappings
    from broker.store.factory import open_store

    settings = settings_of(args)
    try:
        mappings = load_mappings(args.mappings or settings.mappings.directory)
    except MappingLoadError as exc:
        print("\n".join(exc.errors), file=sys.stderr)
        return 2
    raw = Path(args.file).read_bytes() if args.file != "-" else sys.stdin.buffer.read()
    if args.file.endswith(".json") or raw.lstrip()[:1] == b"{":
        from broker.cli.fhir_tools import map_fhir

        return map_fhir(raw, settings, mappings)
    ingestor = Ingestor(open_store(settings.database).dry_run(), lambda: mappings,
                        settings.hl7, settings.mllp)
    results: list[dict[str, Any]] = []
    status = 0
    for message_bytes in split_messages(raw):
        outcome = asyncio.run(ingestor.handle(message_bytes, MAP_PEER))
        ack = outcome.ack.decode(outcome.charset or "ascii", errors="replace")
        if outcome.code != "AA":
            status = 1
        out = events_json(outcome.events)
        results.append({"control_id": outcome.control_id, "type": outcome.message_type,
                        "charset": outcome.charset, "outcome": outcome.code,
                        "duplicate": outcome.duplicate, "events": out,
                        **({"warnings": [w.describe() for w in outcome.warnings]}
                           if outcome.warnings else {}),
                        "ack": ack.split("\r")})
    json.dump(results if len(results) != 1 else results[0], sys.stdout, indent=2,
              ensure_ascii=False)
    print()
    return status
