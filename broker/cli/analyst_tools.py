"""``queries``, ``query --as``, ``explain``, ``trace`` and ``replay``: the analyst's tools on
the configured store, with the same code the console and the REST API use."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from broker.cli.settings import settings_of


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else ""


@asynccontextmanager
async def _analyst(args: argparse.Namespace, ingest: bool = False) -> AsyncIterator[Any]:
    """The AnalystService on the configured store (with an ingest path for replays)."""
    from broker.admin.analyst import AnalystService
    from broker.dicom import worklist_matching
    from broker.store.analyst_queries import AnalystReader
    from broker.store.factory import open_store

    settings = settings_of(args)
    store = open_store(settings.database)
    reader = await store.admin_reader()
    writer = None
    handle = None
    if ingest:
        from broker.flows.hl7_in import Ingestor
        from broker.mapping.holder import MappingHolder

        writer = store.writer
        await asyncio.to_thread(writer.start)
        handle = Ingestor(writer, MappingHolder(settings.mappings.directory), settings.hl7,
                          settings.mllp).handle
    try:
        yield AnalystService(lambda: AnalystReader(reader.conn, reader.dialect),
                             store.worklist_reader,
                             worklist_matching.from_settings(settings.dicom), ingest=handle)
    finally:
        await reader.close()
        if writer is not None:
            await asyncio.to_thread(writer.stop)
        await asyncio.to_thread(store.close)


def _keys(pairs: list[str] | None) -> dict[str, str] | None:
    keys: dict[str, str] = {}
    for pair in pairs or []:
        keyword, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"-k {pair!r}: write Keyword=value")
        keys[keyword.strip()] = value.strip()
    return keys or None


def _print(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, ensure_ascii=False, default=str)
    print()


def _run(coro: Any) -> int:
    from broker.admin.service import BadRequest
    from broker.store.errors import StoreError

    try:
        result: int = asyncio.run(coro)
    except (BadRequest, LookupError, StoreError) as exc:
        print(f"mwl-broker: {exc}", file=sys.stderr)
        return 2
    return result


# -- queries --------------------------------------------------------------------------------
def cmd_queries(args: argparse.Namespace) -> int:
    async def main() -> int:
        async with _analyst(args) as analyst:
            data = await analyst.queries(args.station or "", args.since or "", "",
                                         args.outcome or "", str(args.limit))
        if args.json:
            _print(data)
            return 0
        for q in data["items"]:
            keys = ", ".join(f"{k}={v}" for k, v in q["keys"].items()) or "-"
            print(f"{q['id']:>7}  {_when(q['queried_at'])}  {q['calling_ae']:<16} "
                  f"{q['peer']:<21} {q['outcome']:<9} {q['status']} matches={q['matches']:<4}"
                  f" {q['ms']} ms  {keys}" + (f"\n         error: {q['error']}"
                                              if q["error"] else ""))
        if not data["items"]:
            print("no query in the query log matches")
        return 0
    return _run(main())


# -- query --as (preview) -------------------------------------------------------------------
def cmd_preview(args: argparse.Namespace) -> int:
    async def main() -> int:
        async with _analyst(args) as analyst:
            data = await analyst.preview(args.as_station, _keys(args.key), args.query_id)
        if args.json:
            _print(data)
            return 0
        source = data["source"]
        print(f"What {data['station']} sees now, for "
              + (f"its query #{source['id']} of {_when(source['queried_at'])}" if source
                 else "the keys given"))
        if data["refused"]:
            print(f"the SCP refuses this query: status {data['status']}: {data['error']}")
            return 1
        print("matching keys: " + (", ".join(f"{k}={v}" for k, v in data["keys"].items())
                                   or "none (everything)"))
        if data["unsupported"]:
            print("keys the broker does not match on: " + ", ".join(data["unsupported"]))
        for i in data["items"]:
            start = f"{i['ScheduledProcedureStepStartDate']} {i['ScheduledProcedureStepStartTime']}"
            print(f"  {start:<15}"
                  f" {i['PatientName']:<28} {i['PatientID']:<12} {i['AccessionNumber']:<14}"
                  f" {i['Modality']:<4} {i['ScheduledStationAETitle']:<12}"
                  f" {i['ScheduledProcedureStepID']:<10} {i['ScheduledProcedureStepStatus']}")
        print(f"{data['count']} item(s)" + (" (more not shown)" if data["truncated"] else ""))
        return 0
    return _run(main())


# -- explain --------------------------------------------------------------------------------
def cmd_explain(args: argparse.Namespace) -> int:
    async def main() -> int:
        async with _analyst(args) as analyst:
            data = await analyst.explain(args.key, args.station or "", _keys(args.k))
        if args.json:
            _print(data)
            return 0 if data["found"] else 1
        if not data["found"]:
            print(data["summary"])
            return 1
        for s in data["stations"]:
            print(f"Station {s['station']}:")
            if not s["steps"]:
                print(f"  {s['summary']}")
                continue
            source = s["source"]
            print("  its last query: " + (f"#{source['id']} of {_when(source['queried_at'])}"
                                          if source else "the keys given") + " ("
                  + (", ".join(f"{k}={v}" for k, v in s["keys"].items()) or "no key") + ")")
            for note in s["notes"]:
                print(f"  note: {note}")
            for v in s["steps"]:
                print(f"  step {v['sps_id']} ({v['status']}): {v['summary']}")
        return 0
    return _run(main())


# -- trace ----------------------------------------------------------------------------------
def cmd_trace(args: argparse.Namespace) -> int:
    async def main() -> int:
        async with _analyst(args) as analyst:
            found = await analyst.timeline(args.key)
        if args.json:
            _print(found)
            return 0 if found else 1
        if not found:
            print(f"no procedure has Study Instance UID or accession {args.key!r}")
            return 1
        for p in found:
            facts = p["procedure"]
            print(f"{facts['patient_name']} ({facts['patient_id']}) accession "
                  f"{facts['accession']} study {facts['study_uid']}")
            for e in p["events"]:
                detail = ", ".join(f"{k}: {v}" for k, v in e["detail"].items()
                                   if k in ("ack", "error", "warnings", "reason"))
                print(f"  {_when(e['at'])}  {e['kind']:<10} {e['summary']}"
                      + (f"  [{detail}]" if detail else ""))
        return 0
    return _run(main())


# -- replay ---------------------------------------------------------------------------------
def cmd_replay(args: argparse.Namespace) -> int:
    edited = None
    if args.file:
        source = sys.stdin if args.file == "-" else None
        edited = source.read() if source else Path(args.file).read_text(encoding="utf-8")

    async def main() -> int:
        async with _analyst(args, ingest=True) as analyst:
            result = await analyst.replay(args.id, args.reason, args.user, "cli", edited)
        if args.json:
            _print(result)
        else:
            print(f"replay of message {result['replay_of']} logged as message {result['id']}"
                  f"{' (edited)' if result['edited'] else ''}: {result['outcome']}")
            print(result["ack"].replace("\r", "\n").strip())
        return 0 if result["outcome"] == "AA" else 1
    return _run(main())


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    import getpass

    p = sub.add_parser("queries", parents=[common],
                       help="the query log: worklist queries modalities made")
    p.add_argument("--station", help="calling AE title")
    p.add_argument("--since", help="2h, 1d, 2026-12-03, 2026-12-03T08:00 or Unix seconds")
    p.add_argument("--outcome", choices=["done", "cancelled", "refused", "failed"])
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_queries)

    p = sub.add_parser("explain", parents=[common],
                       help="why an order's steps are or are not on a station's worklist")
    p.add_argument("key", help="accession number or Study Instance UID")
    p.add_argument("--station", help="calling AE title (default: the stations it is "
                   "scheduled on); its last recorded query is used")
    p.add_argument("-k", action="append", metavar="KEY=VALUE",
                   help="change a key of that query (repeatable)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser("trace", parents=[common],
                       help="an order's timeline: HL7 in and out, steps, queries, MPPS, "
                       "storage commitment, IAN")
    p.add_argument("key", help="accession number or Study Instance UID")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_trace)

    p = sub.add_parser("replay", parents=[common],
                       help="process a stored inbound message again (as it was, or edited)")
    p.add_argument("id", type=int, help="the message's number in the message log")
    p.add_argument("--reason", required=True, help="why (kept with the replay)")
    p.add_argument("--user", default=getpass.getuser(), help="who (default: your login)")
    p.add_argument("--file", help="the edited message (a file, or - for standard input)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_replay)
