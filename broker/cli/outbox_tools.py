"""``outbox``: list, retry or purge the messages waiting for other systems."""

from __future__ import annotations

import argparse

from broker.cli.settings import settings_of


def cmd_outbox(args: argparse.Namespace) -> int:
    import time as _time

    from broker.store.factory import open_store

    settings = settings_of(args)
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
