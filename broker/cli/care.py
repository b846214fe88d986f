"""The care commands of ``mwl-broker``: ``purge``, ``backup`` and ``doctor``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from broker.cli.settings import settings_of


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add the commands to the ``mwl-broker`` sub-command parser."""
    p = sub.add_parser("purge", parents=[common],
                       help="delete finished steps, old MPPS, old log and delivered outbox rows "
                       "(ages from the retention settings)")
    p.add_argument("--dry-run", action="store_true", help="only count what would be deleted")
    p.set_defaults(func=cmd_purge)

    p = sub.add_parser("backup", parents=[common],
                       help="copy the database to FILE while the broker runs (SQLite online "
                       "backup), then verify the copy")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--force", action="store_true", help="overwrite FILE if it exists")
    p.set_defaults(func=cmd_backup)

    p = sub.add_parser("doctor", parents=[common],
                       help="check settings, mappings, database, disk, ports and destinations")
    p.set_defaults(func=cmd_doctor)


def cmd_purge(args: argparse.Namespace) -> int:
    from broker.store.errors import StoreError
    from broker.store.factory import open_store

    settings = settings_of(args)
    db = settings.database
    if not db.url and not Path(db.path).exists():
        print(f"mwl-broker purge: database {db.path} does not exist (check database.path)",
              file=sys.stderr)
        return 2
    store = open_store(db)
    writer = store.writer
    purger = store.purger(settings.retention)
    ages = {rule.name: getattr(settings.retention, f"{rule.name}_days")
            for rule, _ in purger.cutoffs()}
    if not ages:
        print("nothing to purge: every retention age is 0 (keep for ever)")
        return 0
    if args.dry_run:
        print("# older than: " + ", ".join(f"{name} {days:g} days" for name, days in ages.items()))
        expired = purger.expired()
        for table, count in expired.items():
            print(f"{table:<20} {count} would be deleted")
        print(f"# {sum(expired.values())} row(s) would be deleted from {store.description}")
        return 0
    writer.start()
    try:
        removed = purger.purge()
    except StoreError as exc:
        print(f"mwl-broker purge: {exc}", file=sys.stderr)
        return 1
    finally:
        writer.stop()
    for table, count in removed.items():
        print(f"{table:<20} {count} deleted")
    print(f"# {sum(removed.values())} row(s) deleted from {store.description}")
    return 0


def cmd_backup(args: argparse.Namespace) -> int:
    from broker.store.sqlite.backup import BackupError, backup

    db = settings_of(args).database
    if db.url:
        print("mwl-broker backup: the database is PostgreSQL (database.url): back it up with"
              " pg_dump or the site's PostgreSQL backup (docs/high-availability.md)",
              file=sys.stderr)
        return 2
    try:
        result = backup(db.path, args.file, force=args.force,
                        busy_timeout_ms=db.busy_timeout_ms)
    except (BackupError, OSError) as exc:
        print(f"mwl-broker backup: {exc}", file=sys.stderr)
        return 1
    print(f"{db.path} copied to {result.path}: {result.size} bytes, schema version "
          f"{result.schema_version}, integrity_check ok")
    for table, count in result.counts.items():
        print(f"  {table:<24} {count} row(s)")
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from broker.cli.doctor import diagnose, report

    return report(diagnose(lambda: settings_of(args)))
