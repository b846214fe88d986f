"""The ``mwl-broker`` command."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from broker import __version__
from broker.cli import analyst_tools, ups_tools
from broker.cli import care as care_commands
from broker.cli.dicom_tools import cmd_import_worklist, cmd_query, cmd_simulate
from broker.cli.hl7_tools import cmd_receive, cmd_send
from broker.cli.mapping_tools import cmd_check_mappings, cmd_map
from broker.cli.outbox_tools import cmd_outbox
from broker.cli.settings import settings_of
from broker.config import ConfigError


def cmd_serve(args: argparse.Namespace) -> int:
    from broker import logs
    from broker.app import Broker
    from broker.mapping.schema import MappingLoadError

    settings = settings_of(args)
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

    p = sub.add_parser("query", parents=[common],
                       help="query a worklist SCP (findscu-like) and print the items; with "
                       "--as AE: what that station sees now, from its last recorded query")
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
    p.add_argument("--as", dest="as_station", metavar="AE",
                   help="preview: run station AE's last recorded query (changed by -k) "
                   "through the broker's own matching, on the configured store")
    p.add_argument("--query-id", type=int, help="with --as: that recorded query instead")
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

    p = sub.add_parser("listen", aliases=["receive"],
                       help="listen for HL7 over MLLP (as the RIS would), print (and save) each "
                       "message and acknowledge it")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("-p", "--port", type=int, default=2576)
    p.add_argument("--answer", choices=["AA", "AE", "AR"], default="AA",
                   help="MSA-1 of the acknowledgements (AE/AR: see the broker's dead letters)")
    p.add_argument("-n", "--count", type=int, default=0, metavar="N",
                   help="exit after N messages (default: run until interrupted)")
    p.add_argument("--save", metavar="DIR",
                   help="also save each message, as received, in DIR (NNNNNN-CONTROLID.hl7)")
    p.set_defaults(func=cmd_receive)
    care_commands.register(sub, common)
    analyst_tools.add_parsers(sub, common)
    ups_tools.add_parser(sub)
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
