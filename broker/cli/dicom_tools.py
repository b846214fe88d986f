"""``import-worklist``, ``query``, ``simulate``: worklist files in, a worklist SCU, a modality."""

from __future__ import annotations

import argparse
import json
import sys
from functools import partial
from pathlib import Path
from typing import Any

from broker.cli.settings import settings_of


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

    settings = settings_of(args)
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


def _apply_in(uow: Any, order: Any) -> None:
    from broker.workflow.orders import apply

    apply(uow.orders, order)


def cmd_query(args: argparse.Namespace) -> int:
    import datetime

    if args.as_station:
        from broker.cli.analyst_tools import cmd_preview
        return cmd_preview(args)

    from broker.dicom import pynetdicom_patches
    from broker.dicom.client import QueryFailed, WorklistClient, build_query, query_keys

    pynetdicom_patches.apply(fast_path=True)
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


TABLE_COLUMNS = (("Patient", "PatientName", 24), ("ID", "PatientID", 12),
                 ("Accession", "AccessionNumber", 12), ("Mod", "Modality", 4),
                 ("Station", "ScheduledStationAETitle", 12),
                 ("Date", "ScheduledProcedureStepStartDate", 8),
                 ("Time", "ScheduledProcedureStepStartTime", 6),
                 ("SPS ID", "ScheduledProcedureStepID", 12),
                 ("Status", "ScheduledProcedureStepStatus", 10),
                 ("Description", "ScheduledProcedureStepDescription", 24))


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


def cmd_simulate(args: argparse.Namespace) -> int:
    from broker.cli.simulator import Endpoint, Plan, SimulationError, run
    from broker.dicom import pynetdicom_patches

    pynetdicom_patches.apply(fast_path=True)
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
