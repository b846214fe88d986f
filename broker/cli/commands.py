"""The ``mwl-broker`` command."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

from broker import __version__
from broker.cli import care as care_commands
from broker.config import ConfigError, Settings
from broker.config.loading import apply_overrides, load_settings


def _settings(args: argparse.Namespace) -> Settings:
    path = args.config or os.environ.get("MWL_BROKER_CONFIG")
    settings = load_settings(path)
    return apply_overrides(settings, args.option or [])


def cmd_serve(args: argparse.Namespace) -> int:
    from broker import logs
    from broker.app import Broker
    from broker.mapping.schema import MappingLoadError

    settings = _settings(args)
    logs.setup(settings.logging.level, settings.logging.format)
    try:
        broker = Broker(settings)
    except MappingLoadError as exc:
        print("mwl-broker: the mappings are invalid, not starting:", file=sys.stderr)
        for line in exc.errors:
            print(f"  {line}", file=sys.stderr)
        return 2
    run_loop(broker.run())
    return 0


def run_loop(main: Any) -> None:
    """Run on uvloop when it is installed (a faster event loop), else on asyncio's own."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
        return
    uvloop.run(main)


def split_messages(data: bytes) -> list[bytes]:
    """Messages of a file: MLLP frames, or text with one message per MSH line.

    Line ends (LF, CR LF) become the segment separator CR; otherwise the bytes are sent as
    they are in the file.
    """
    if b"\x0b" in data:
        parts = [p.split(b"\x1c")[0] for p in data.split(b"\x0b")[1:]]
    else:
        text = data.replace(b"\r\n", b"\r").replace(b"\n", b"\r")
        starts = [i for i in range(len(text)) if text.startswith(b"MSH", i)
                  and (i == 0 or text[i - 1 : i] == b"\r")]
        parts = [text[a:b] for a, b in zip(starts, [*starts[1:], len(text)], strict=True)]
    out = []
    for part in parts:
        part = part.replace(b"\r\n", b"\r").replace(b"\n", b"\r")
        while part.endswith(b"\r\r"):
            part = part[:-1]
        if part.strip():
            out.append(part)
    return out


def _inputs(target: str) -> Iterator[tuple[str, bytes]]:
    if target == "-":
        yield "<stdin>", sys.stdin.buffer.read()
        return
    path = Path(target)
    files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    for file in files:
        yield str(file), file.read_bytes()


def cmd_send(args: argparse.Namespace) -> int:
    from broker.config import TlsSettings
    from broker.hl7.ack import ack_code_of
    from broker.hl7.mllp import MllpClient, MllpError
    from broker.net.tls import client_context

    tls = TlsSettings(enabled=bool(args.tls or args.tls_ca or args.tls_cert or args.tls_key),
                      ca_file=args.tls_ca or "", cert_file=args.tls_cert or "",
                      key_file=args.tls_key or "")
    ssl_context = client_context(tls, "send --tls")

    async def run() -> int:
        failures = 0
        client = MllpClient(args.host, args.port, timeout=args.timeout, ssl_context=ssl_context)
        try:
            for target in args.files:
                for name, data in _inputs(target):
                    for message in split_messages(data):
                        try:
                            answer = await client.send(message)
                        except (MllpError, OSError, TimeoutError) as exc:
                            print(f"{name}: no acknowledgement: {exc}", file=sys.stderr)
                            return 3
                        code, control = ack_code_of(answer.decode("latin-1"))
                        text = answer.decode("utf-8", errors="replace").replace("\r", "\n")
                        print(f"# {name}: {code} (MSA-2 {control})")
                        if not args.quiet:
                            print(text.rstrip("\n"))
                        if code not in ("AA", "CA"):
                            failures += 1
        finally:
            await client.close()
        return 1 if failures else 0

    return asyncio.run(run())


def cmd_check_mappings(args: argparse.Namespace) -> int:
    from broker.mapping.schema import MappingLoadError, describe, load_mappings

    directory = args.directory or _settings(args).mappings.directory
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


#: the address a ``map`` dry run's messages come from (what hl7.allowed_senders is checked
#: against)
MAP_PEER = "127.0.0.1:0"


def cmd_map(args: argparse.Namespace) -> int:
    """Each message through the ingest path ``serve`` runs, on a store that rolls back."""
    from broker.dicom.dataset import to_json
    from broker.flows.hl7_in import Ingestor
    from broker.mapping.schema import MappingLoadError, load_mappings
    from broker.model.orders import OrderChange, PatientIdChange, PatientMerge, PatientUpdate
    from broker.store.dry_run import DryRunWriter

    settings = _settings(args)
    try:
        mappings = load_mappings(args.mappings or settings.mappings.directory)
    except MappingLoadError as exc:
        print("\n".join(exc.errors), file=sys.stderr)
        return 2
    raw = Path(args.file).read_bytes() if args.file != "-" else sys.stdin.buffer.read()
    db = settings.database
    ingestor = Ingestor(DryRunWriter(db.path, db.busy_timeout_ms), lambda: mappings,
                        settings.hl7, settings.mllp)
    results: list[dict[str, Any]] = []
    status = 0
    for message_bytes in split_messages(raw):
        outcome = asyncio.run(ingestor.handle(message_bytes, MAP_PEER))
        ack = outcome.ack.decode(outcome.charset or "ascii", errors="replace")
        if outcome.code != "AA":
            status = 1
        out: list[dict[str, Any]] = []
        for ev in outcome.events:
            if isinstance(ev, OrderChange):
                patient = ev.patient
                out.append({
                    "event": "order", "control": ev.control, "action": ev.action.value,
                    "status": ev.status.value,
                    "patient": _patient_json(patient) if patient else None,
                    "procedure": to_json(ev.procedure.attrs),
                    "steps": [to_json(s.attrs) for s in ev.procedure.steps],
                })
            elif isinstance(ev, PatientUpdate):
                out.append({"event": "patient_update", "patient": _patient_json(ev.patient)})
            elif isinstance(ev, PatientMerge):
                out.append({"event": "patient_merge", "patient": _patient_json(ev.surviving),
                            "prior": {"PatientID": ev.prior.patient_id,
                                      "IssuerOfPatientID": ev.prior.issuer}})
            elif isinstance(ev, PatientIdChange):
                out.append({"event": "patient_id_change", "patient": _patient_json(ev.patient),
                            "old": {"PatientID": ev.old.patient_id,
                                    "IssuerOfPatientID": ev.old.issuer}})
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


def cmd_import_worklist(args: argparse.Namespace) -> int:
    from broker.dicom.importer import (
        Imported,
        ImportError_,
        group_by_study,
        read_worklist_file,
        worklist_files,
    )
    from broker.model.orders import DomainError
    from broker.store.errors import StoreError
    from broker.store.factory import open_store

    settings = _settings(args)
    db = settings.database
    items: list[Imported] = []
    failed = 0
    for path in worklist_files(Path(args.directory)):
        try:
            items.append(read_worklist_file(path))
        except (ImportError_, ValueError) as exc:
            failed += 1
            print(f"skipped {exc}", file=sys.stderr)
    writer = open_store(db).writer
    writer.start()
    imported = 0
    try:
        for paths, order in group_by_study(items):
            try:
                writer.run_sync(partial(_apply_in, order=order))
            except (StoreError, DomainError) as exc:
                failed += len(paths)
                print(f"skipped {', '.join(map(str, paths))}: {exc}", file=sys.stderr)
                continue
            imported += len(paths)
            if args.verbose:
                print("imported " + ", ".join(map(str, paths)))
    finally:
        writer.stop()
    print(f"{imported} worklist item(s) imported into {db.path}, {failed} skipped")
    return 1 if failed and not imported else 0


TABLE_COLUMNS = (("Patient", "PatientName", 24), ("ID", "PatientID", 12),
                 ("Accession", "AccessionNumber", 12), ("Mod", "Modality", 4),
                 ("Station", "ScheduledStationAETitle", 12),
                 ("Date", "ScheduledProcedureStepStartDate", 8),
                 ("Time", "ScheduledProcedureStepStartTime", 6),
                 ("SPS ID", "ScheduledProcedureStepID", 12),
                 ("Status", "ScheduledProcedureStepStatus", 10),
                 ("Description", "ScheduledProcedureStepDescription", 24))


def cmd_simulate(args: argparse.Namespace) -> int:
    from broker.cli.simulator import Endpoint, Plan, SimulationError, run

    try:
        worklist = Endpoint.parse(args.worklist, "MWLBROKER")
        mpps = Endpoint.parse(args.mpps, "MWLBROKER") if args.mpps else worklist
        archive = Endpoint.parse(args.store, "ARCHIVE") if args.store else None
    except ValueError as exc:
        print(f"mwl-broker simulate: {exc}", file=sys.stderr)
        return 2
    plan = Plan(args.station, worklist, mpps, archive, modality=args.modality,
                accession=args.accession, series=args.series, images=args.images,
                not_stored=args.not_stored, discontinue=args.discontinue, timeout=args.timeout)
    if args.ian is not None:
        try:
            plan.ian_to = Endpoint.parse(args.ian, "MWLBROKER") if args.ian else mpps
        except ValueError as exc:
            print(f"mwl-broker simulate: {exc}", file=sys.stderr)
            return 2
    try:
        result = run(plan)
    except SimulationError as exc:
        print(f"mwl-broker simulate: {exc}", file=sys.stderr)
        return 3
    print(f"done: MPPS {result.mpps_uid} {result.status}, study {result.study_uid}")
    return 0


def cmd_query(args: argparse.Namespace) -> int:
    import datetime

    from broker.dicom.client import QueryFailed, WorklistClient, build_query, query_keys

    date = args.date
    if date == "today":
        date = datetime.date.today().strftime("%Y%m%d")
    try:
        keys = query_keys(args.key or [], station=args.station or "", date=date or "",
                          modality=args.modality or "")
    except ValueError as exc:
        print(f"mwl-broker query: {exc}", file=sys.stderr)
        return 2
    try:
        with WorklistClient(args.host, args.port, called=args.aec, calling=args.aet,
                            timeout=args.timeout) as client:
            result = client.find(build_query(keys))
    except (QueryFailed, OSError) as exc:
        print(f"mwl-broker query: {exc}", file=sys.stderr)
        return 3
    if args.json:
        json.dump([ds.to_json_dict() for ds in result.matches], sys.stdout, indent=2,
                  ensure_ascii=False)
        print()
    else:
        _print_table(result.matches)
    status = f"0x{result.status:04X}" if result.status >= 0 else "none"
    note = f" ({result.comment})" if result.comment else ""
    warn = f", {result.warnings} with warning FF01" if result.warnings else ""
    print(f"# {len(result.matches)} match(es){warn}; final status {status}{note}",
          file=sys.stderr)
    return 0 if result.status == 0 else 1


def _print_table(matches: list[Any]) -> None:
    from pydicom.multival import MultiValue

    print("  ".join(label.ljust(width) for label, _, width in TABLE_COLUMNS))
    for ds in matches:
        sps = ds.ScheduledProcedureStepSequence[0] if ds.get(
            "ScheduledProcedureStepSequence") else ds
        cells = []
        for _, name, width in TABLE_COLUMNS:
            source = sps if name in sps else ds
            value = source.get(name, "")
            if isinstance(value, MultiValue | list):
                value = "\\".join(str(v) for v in value)
            cells.append(str(value if value is not None else "")[:width].ljust(width))
        print("  ".join(cells))


def cmd_outbox(args: argparse.Namespace) -> int:
    import time as _time

    from broker.store.factory import open_store

    settings = _settings(args)
    store = open_store(settings.database)
    if args.action == "list":
        rows = store.outbox_entries(args.state or "", args.limit)
        for r in rows:
            when = _time.strftime("%Y-%m-%d %H:%M:%S", _time.localtime(r.next_attempt_at))
            print(f"{r.id:>6}  {r.state:<9} {r.destination:<8} {r.message_type:<8} "
                  f"{r.control_id:<26} attempts={r.attempts} next={when} order={r.order_key}"
                  + (f"\n        last error: {r.last_error}" if r.last_error else ""))
        return 0
    writer = store.writer
    writer.start()
    try:
        if args.action == "retry":
            count = writer.run_sync(lambda uow: uow.outbox.requeue(args.id))
            print(f"{count} message(s) queued again (a running broker sends them within "
                  f"{settings.outbound.poll} s)")
        else:
            cutoff = _time.time() - args.older_than_days * 86400
            count = writer.run_sync(lambda uow: uow.outbox.purge(args.state or "delivered",
                                                                 cutoff))
            print(f"{count} message(s) purged")
    finally:
        writer.stop()
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    from broker.cli.site_init import InitError, init_site

    try:
        written = init_site(args.directory, force=args.force)
    except InitError as exc:
        print(f"mwl-broker init: {exc}", file=sys.stderr)
        return 1
    for path in [written.settings, *written.files]:
        print(f"wrote {path}")
    print(f"next: mwl-broker check-mappings -c {written.settings}\n"
          f"      mwl-broker serve -c {written.settings}")
    return 0


def cmd_receive(args: argparse.Namespace) -> int:
    from broker.cli.receiver import Receiver

    receiver = Receiver(args.host, args.port, answer=args.answer, count=args.count)
    try:
        asyncio.run(receiver.run())
    except OSError as exc:
        print(f"mwl-broker receive: cannot listen on {args.host}:{args.port}: {exc}",
              file=sys.stderr)
        return 2
    return 0


def _apply_in(uow: Any, order: Any) -> None:
    from broker.workflow.orders import apply

    apply(uow.orders, order)


def _patient_json(patient: Any) -> dict[str, Any]:
    from broker.dicom.dataset import to_json

    attrs = {"PatientID": patient.key.patient_id, **patient.attrs}
    if patient.key.issuer:
        attrs["IssuerOfPatientID"] = patient.key.issuer
    return to_json(attrs)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mwl-broker", description=__doc__)
    parser.add_argument("--version", action="version", version=f"mwl-broker {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-c", "--config", help="settings file (default: embedded defaults; "
                        "or $MWL_BROKER_CONFIG)")
    common.add_argument("-o", "--option", action="append", metavar="SECTION.KEY=VALUE",
                        help="override one setting, e.g. -o mllp.port=2576 (repeatable)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", parents=[common], help="run the broker")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("send", help="send HL7 files over MLLP and print each acknowledgement")
    p.add_argument("files", nargs="+", metavar="FILE|DIR|-")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("-p", "--port", type=int, default=2575)
    p.add_argument("-t", "--timeout", type=float, default=30.0)
    p.add_argument("-q", "--quiet", action="store_true", help="print only the outcome lines")
    p.add_argument("--tls", action="store_true",
                   help="connect with TLS (implied by the --tls-* options)")
    p.add_argument("--tls-ca", metavar="PEM", help="CA certificates that sign the broker's "
                   "certificate (default: the system's)")
    p.add_argument("--tls-cert", metavar="PEM", help="client certificate (with --tls-key)")
    p.add_argument("--tls-key", metavar="PEM", help="private key of --tls-cert")
    p.set_defaults(func=cmd_send)

    p = sub.add_parser("check-mappings", parents=[common],
                       help="validate the mapping files (exit 1 with file:line errors)")
    p.add_argument("directory", nargs="?")
    p.set_defaults(func=cmd_check_mappings)

    p = sub.add_parser("import-worklist", parents=[common],
                       help="load DICOM worklist files (*.wl, wlmscpfs/Orthanc folders)")
    p.add_argument("directory")
    p.add_argument("-v", "--verbose", action="store_true")
    p.set_defaults(func=cmd_import_worklist)

    p = sub.add_parser("query", help="query a worklist SCP (findscu-like) and print the items")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("-p", "--port", type=int, default=11112)
    p.add_argument("--aec", default="MWLBROKER", help="called AE title")
    p.add_argument("--aet", default="MWLQUERY", help="calling AE title")
    p.add_argument("-k", "--key", action="append", metavar="KEY=VALUE",
                   help="a matching or return key: keyword or (gggg,eeee); repeatable")
    p.add_argument("--station", help="Scheduled Station AE Title")
    p.add_argument("--date", help="SPS start date: YYYYMMDD, a range A-B, or 'today'")
    p.add_argument("--modality")
    p.add_argument("--json", action="store_true", help="print DICOM JSON instead of a table")
    p.add_argument("-t", "--timeout", type=float, default=30.0)
    p.set_defaults(func=cmd_query)

    p = sub.add_parser("simulate", help="play a modality against worklist/MPPS/storage endpoints")
    what = p.add_subparsers(dest="what", required=True)
    m = what.add_parser("modality", help="query the worklist, MPPS IN PROGRESS, store images, "
                        "MPPS COMPLETED")
    m.add_argument("--station", required=True, help="the modality's AE title (station key)")
    m.add_argument("--worklist", default="MWLBROKER@127.0.0.1:11112",
                   help="worklist SCP as [AE@]HOST:PORT")
    m.add_argument("--mpps", help="MPPS SCP as [AE@]HOST:PORT (default: the worklist SCP)")
    m.add_argument("--store", help="archive (storage SCP) as [AE@]HOST:PORT; no images are "
                   "sent without it")
    m.add_argument("--modality", default="", help="only steps of this modality")
    m.add_argument("--accession", default="", help="only the step of this accession number")
    m.add_argument("--series", type=int, default=1)
    m.add_argument("--images", type=int, default=3, help="images per series")
    m.add_argument("--not-stored", type=int, default=0, metavar="N",
                   help="list N images in the MPPS without storing them (a failure case)")
    m.add_argument("--discontinue", action="store_true", help="end with DISCONTINUED")
    m.add_argument("--ian", nargs="?", const="", metavar="[AE@]HOST:PORT",
                   help="after storing, send an Instance Availability Notification of the "
                   "images (as the archive would) to this SCP; default: the MPPS SCP")
    m.add_argument("-t", "--timeout", type=float, default=30.0)
    m.set_defaults(func=cmd_simulate)

    p = sub.add_parser("outbox", parents=[common],
                       help="list, retry or purge the messages waiting for other systems")
    p.add_argument("action", choices=["list", "retry", "purge"])
    p.add_argument("id", nargs="?", type=int, help="retry: one message (default: every dead "
                   "letter)")
    p.add_argument("--state", choices=["pending", "delivered", "dead"],
                   help="list: only this state; purge: this state (default delivered)")
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--older-than-days", type=float, default=30.0)
    p.set_defaults(func=cmd_outbox)

    p = sub.add_parser("map", parents=[common],
                       help="dry run: show what a message would produce, as DICOM JSON")
    p.add_argument("file", metavar="FILE.hl7|-")
    p.add_argument("--mappings", help="mapping folder (default: the configured one)")
    p.set_defaults(func=cmd_map)

    p = sub.add_parser("init", help="write an editable copy of the shipped settings, mappings "
                       "and samples for a site into DIRECTORY")
    p.add_argument("directory")
    p.add_argument("--force", action="store_true", help="overwrite files that exist")
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("receive", help="listen for HL7 over MLLP (as the RIS would), print each "
                       "message and acknowledge it")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("-p", "--port", type=int, default=2576)
    p.add_argument("--answer", choices=["AA", "AE", "AR"], default="AA",
                   help="MSA-1 of the acknowledgements (AE/AR: see the broker's dead letters)")
    p.add_argument("-n", "--count", type=int, default=0, metavar="N",
                   help="exit after N messages (default: run until interrupted)")
    p.set_defaults(func=cmd_receive)
    care_commands.register(sub, common)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"mwl-broker: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
