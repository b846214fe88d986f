"""``mwl-broker ups``: a UPS SCU (like DCMTK's upsscu) against the broker or any UPS SCP —
find, get, claim, complete, cancel, subscribe, unsubscribe."""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from typing import Any

from broker.model.ups import FILTERED_SUBSCRIPTION, GLOBAL_SUBSCRIPTION, ActionType

#: what ``find`` asks for when no key is given
FIND_KEYS = ("SOPInstanceUID", "ProcedureStepState", "ProcedureStepLabel", "PatientName",
             "PatientID", "ScheduledProcedureStepStartDateTime",
             "ScheduledProcedureStepPriority")


class Scu:
    """One association to a UPS SCP with the Push, Pull and Watch contexts."""

    def __init__(self, args: argparse.Namespace) -> None:
        from pynetdicom import AE
        from pynetdicom.sop_class import (  # type: ignore[attr-defined]
            UnifiedProcedureStepPull,
            UnifiedProcedureStepPush,
            UnifiedProcedureStepWatch,
        )

        ae = AE(ae_title=args.aet)
        for context in (UnifiedProcedureStepPush, UnifiedProcedureStepPull,
                        UnifiedProcedureStepWatch):
            ae.add_requested_context(context)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = args.timeout
        self.push, self.pull = UnifiedProcedureStepPush, UnifiedProcedureStepPull
        self.assoc = ae.associate(args.host, args.port, ae_title=args.aec)
        if not self.assoc.is_established:
            raise SystemExit(f"mwl-broker ups: no association with {args.aec} at "
                             f"{args.host}:{args.port}")

    def close(self) -> None:
        self.assoc.release()

    def find(self, identifier: Any) -> tuple[int, list[Any]]:
        matches: list[Any] = []
        final = -1
        for status, found in self.assoc.send_c_find(identifier, self.pull):
            if status is None or "Status" not in status:
                return -1, matches
            final = int(status.Status)
            if final in (0xFF00, 0xFF01) and found is not None:
                matches.append(found)
        return final, matches

    def action(self, uid: str, action: ActionType, info: Any) -> tuple[int, str]:
        status, _ = self.assoc.send_n_action(info, int(action), self.push, uid)
        return _status(status)

    def get(self, uid: str) -> tuple[int, str, Any]:
        status, ds = self.assoc.send_n_get([], self.push, uid)
        code, comment = _status(status)
        return code, comment, ds

    def set(self, uid: str, ds: Any) -> tuple[int, str]:
        status, _ = self.assoc.send_n_set(ds, self.push, uid)
        return _status(status)


def _status(status: Any) -> tuple[int, str]:
    if status is None or "Status" not in status:
        return -1, "no answer"
    return int(status.Status), str(status.get("ErrorComment", "") or "")


def _dataset(**values: Any) -> Any:
    from pydicom.dataset import Dataset

    ds = Dataset()
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    return ds


def _report(what: str, code: int, comment: str) -> int:
    ok = code == 0 or 0xB000 <= code <= 0xBFFF
    print(f"{what}: status 0x{code:04X}" + (f" ({comment})" if comment else ""),
          file=sys.stdout if ok else sys.stderr)
    return 0 if ok else 1


def _identifier(args: argparse.Namespace) -> Any:
    from pydicom.datadict import dictionary_VR, keyword_dict
    from pydicom.dataset import Dataset

    from broker.dicom.client import keyword_of

    ds = Dataset()
    for keyword in FIND_KEYS:
        setattr(ds, keyword, None)
    for item in args.key or []:
        name, _, value = item.partition("=")
        keyword = keyword_of(name)
        if dictionary_VR(keyword_dict[keyword]) == "SQ":
            raise SystemExit(f"-k {name}: give a sequence's attribute (see --station)")
        setattr(ds, keyword, value or None)
    if args.state:
        ds.ProcedureStepState = args.state
    if args.station:
        code = Dataset()
        code.CodeValue = args.station
        ds.ScheduledStationNameCodeSequence = [code]
    if args.accession:
        request = Dataset()
        request.AccessionNumber = args.accession
        ds.ReferencedRequestSequence = [request]
    return ds


def cmd_ups(args: argparse.Namespace) -> int:
    from pydicom.uid import generate_uid

    scu = Scu(args)
    try:
        if args.action == "find":
            code, matches = scu.find(_identifier(args))
            if args.json:
                json.dump([m.to_json_dict() for m in matches], sys.stdout, indent=2)
                print()
            for m in matches if not args.json else []:
                print(f"{m.get('SOPInstanceUID', '')}  {m.get('ProcedureStepState', ''):<12}"
                      f" {m.get('ScheduledProcedureStepStartDateTime', '')}"
                      f"  {m.get('PatientName', '')}  {m.get('ProcedureStepLabel', '')}")
            return _report(f"{len(matches)} workitem(s)", code, "")
        uid = {"global": GLOBAL_SUBSCRIPTION, "filtered": FILTERED_SUBSCRIPTION}.get(
            args.uid, args.uid)
        if args.action == "get":
            code, comment, ds = scu.get(uid)
            if ds is not None:
                print(json.dumps(ds.to_json_dict(), indent=2) if args.json else ds)
            return _report("N-GET", code, comment)
        if args.action == "claim":
            transaction = args.transaction_uid or generate_uid()
            code, comment = scu.action(uid, ActionType.CHANGE_STATE, _dataset(
                ProcedureStepState="IN PROGRESS", TransactionUID=transaction))
            if code == 0:
                print(f"claimed; Transaction UID {transaction} (keep it to update, complete "
                      "or cancel)")
            return _report("claim", code, comment)
        if args.action in ("complete", "discontinue"):
            if not args.transaction_uid:
                raise SystemExit("mwl-broker ups: --transaction-uid of the claim is needed")
            now = datetime.datetime.now().strftime("%Y%m%d%H%M%S")
            station = _dataset(CodeValue=args.aet, CodingSchemeDesignator="99MWLBROKER",
                               CodeMeaning=args.aet)
            item = _dataset(PerformedProcedureStepStartDateTime=args.start or now,
                            PerformedProcedureStepEndDateTime=args.end or now,
                            PerformedStationNameCodeSequence=[station],
                            PerformedWorkitemCodeSequence=[], OutputInformationSequence=[])
            code, comment = scu.set(uid, _dataset(
                TransactionUID=args.transaction_uid,
                UnifiedProcedureStepPerformedProcedureSequence=[item]))
            if code != 0:
                return _report("N-SET", code, comment)
            state = "COMPLETED" if args.action == "complete" else "CANCELED"
            code, comment = scu.action(uid, ActionType.CHANGE_STATE, _dataset(
                ProcedureStepState=state, TransactionUID=args.transaction_uid))
            return _report(state, code, comment)
        if args.action == "cancel":
            code, comment = scu.action(uid, ActionType.REQUEST_CANCEL, _dataset(
                ReasonForCancellation=args.reason or "requested by mwl-broker ups"))
            return _report("cancellation request", code, comment)
        receiving = args.receiving_ae or args.aet
        if args.action == "subscribe":
            code, comment = scu.action(uid, ActionType.SUBSCRIBE, _dataset(
                ReceivingAE=receiving, DeletionLock="TRUE" if args.lock else "FALSE"))
            return _report(f"subscription of {receiving}", code, comment)
        if args.action == "suspend":
            code, comment = scu.action(uid, ActionType.SUSPEND_GLOBAL, _dataset(
                ReceivingAE=receiving))
            return _report(f"suspension of {receiving}'s global subscription", code, comment)
        code, comment = scu.action(uid, ActionType.UNSUBSCRIBE, _dataset(
            ReceivingAE=receiving))
        return _report(f"unsubscription of {receiving}", code, comment)
    finally:
        scu.close()


def add_parser(sub: Any) -> None:
    p = sub.add_parser("ups", help="a UPS SCU (like upsscu): find, get, claim, complete, "
                       "cancel, subscribe workitems")
    p.add_argument("action", choices=["find", "get", "claim", "complete", "discontinue",
                                      "cancel", "subscribe", "unsubscribe", "suspend"])
    p.add_argument("uid", nargs="?", default="global",
                   help="the workitem's SOP Instance UID (subscribe/unsubscribe/suspend: "
                   "'global' or 'filtered' for the global subscriptions)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("-p", "--port", type=int, default=11112)
    p.add_argument("--aec", default="MWLBROKER", help="called AE title")
    p.add_argument("--aet", default="MWLUPS", help="calling AE title")
    p.add_argument("-k", "--key", action="append", metavar="KEY=VALUE",
                   help="find: a matching or return key (repeatable)")
    p.add_argument("--state", help="find: SCHEDULED, IN PROGRESS, COMPLETED, CANCELED")
    p.add_argument("--station", help="find: the station AE title (station code value)")
    p.add_argument("--accession", help="find: the accession number")
    p.add_argument("--transaction-uid", help="claim: use this one; complete: the claim's")
    p.add_argument("--start", help="complete: performed start (YYYYMMDDHHMMSS; default now)")
    p.add_argument("--end", help="complete: performed end (default now)")
    p.add_argument("--reason", help="cancel: the reason for cancellation")
    p.add_argument("--receiving-ae", help="subscribe: the AE that gets the event reports "
                   "(default: --aet)")
    p.add_argument("--lock", action="store_true", help="subscribe with a deletion lock")
    p.add_argument("--json", action="store_true")
    p.add_argument("-t", "--timeout", type=float, default=30.0)
    p.set_defaults(func=cmd_ups)
