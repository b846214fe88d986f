"""Original-mode acknowledgements (MSA-1 AA / AE / AR) with ERR segments."""

from __future__ import annotations

import hashlib
import itertools
import os
import re
import time
from dataclasses import dataclass

from broker.hl7.escape import DEFAULT_DELIMITERS, Delimiters, escape
from broker.hl7.message import Message

#: HL7 table 0357, message error condition codes.
ERROR_CODES: dict[int, str] = {
    0: "Message accepted",
    100: "Segment sequence error",
    101: "Required field missing",
    102: "Data type error",
    103: "Table value not found",
    200: "Unsupported message type",
    201: "Unsupported event code",
    202: "Unsupported processing id",
    203: "Unsupported version id",
    204: "Unknown key identifier",
    205: "Duplicate key identifier",
    206: "Application record locked",
    207: "Application internal error",
}


@dataclass(frozen=True, slots=True)
class Hl7Error:
    """What was wrong, where (e.g. 'ORC-1' or 'PID-3.1'), its table 0357 code and its
    table 0516 severity (E error, W warning: the message was accepted as changed)."""

    code: int
    text: str
    location: str = ""
    severity: str = "E"

    def describe(self) -> str:
        where = f" at {self.location}" if self.location else ""
        warning = "Warning: " if self.severity == "W" else ""
        return f"{warning}{ERROR_CODES.get(self.code, 'Error')}{where}: {self.text}"


class Hl7Reject(Exception):
    """Raised to answer a message with AE or AR and the given errors."""

    def __init__(self, ack_code: str, *errors: Hl7Error) -> None:
        super().__init__("; ".join(e.describe() for e in errors))
        self.ack_code = ack_code
        self.errors = errors


_counter = itertools.count(1)
_prefix = f"{os.getpid() % 100000:05d}"


def use_node(node: str) -> None:
    """Make this process's control IDs distinct from those of the other brokers sharing its
    database: five characters derived from the node name and the process."""
    global _prefix
    digest = hashlib.blake2b(f"{node}/{os.getpid()}".encode(), digest_size=8).digest()
    number = int.from_bytes(digest, "big")
    alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    _prefix = "".join(alphabet[(number // 36 ** i) % 36] for i in range(5))


def new_control_id() -> str:
    """A control ID (MSH-10) for a message the broker sends: time, process, counter."""
    return f"B{time.strftime('%y%m%d%H%M%S')}{_prefix}{next(_counter):06d}"


def _location_parts(location: str) -> tuple[str, str, str, str]:
    """'PID-3.1' → ('PID', '1', '3', '1')."""
    if not location:
        return "", "", "", ""
    location = re.sub(r"\{[^}]*\}|\[[^\]]*\]", "", location)
    seg, _, rest = location.partition("-")
    fld, _, comp = rest.partition(".")
    fld = fld.split("[")[0]
    return seg[:3], "1", fld, comp.split(".")[0]


def build_ack(
    code: str,
    inbound: Message | None,
    *,
    errors: tuple[Hl7Error, ...] = (),
    application: str = "MWLBROKER",
    facility: str = "",
    control_id: str | None = None,
    timestamp: str | None = None,
) -> str:
    """The ACK text (segments joined by CR, no MLLP framing)."""
    d = inbound.delimiters if inbound else DEFAULT_DELIMITERS
    enc = f"{d.component}{d.repetition}{d.escape}{d.subcomponent}"
    fs = d.field
    if inbound is not None:
        msh = inbound.msh
        sending_app, sending_fac = msh.get(5) or application, msh.get(6) or facility
        receiving_app, receiving_fac = msh.get(3), msh.get(4)
        trigger = inbound.trigger_event
        version = msh.get(12) or "2.5.1"
        processing = msh.get(11) or "P"
        charset = msh.get(18).strip()
        inbound_id = msh.get(10)
    else:
        sending_app, sending_fac = application, facility
        receiving_app = receiving_fac = trigger = charset = inbound_id = ""
        version, processing = "2.5.1", "P"
    vnum = version.split(d.component)[0]
    msg_type = f"ACK{d.component}{trigger}{d.component}ACK" if vnum >= "2.4" and trigger else (
        f"ACK{d.component}{trigger}" if trigger else "ACK")
    ts = timestamp or time.strftime("%Y%m%d%H%M%S")
    msh_fields = ["MSH", enc, sending_app, sending_fac, receiving_app, receiving_fac, ts, "",
                  msg_type, control_id or new_control_id(), processing, version]
    if charset:
        msh_fields += ["", "", "", "", "", charset]
    text_message = escape("; ".join(e.describe() for e in errors)[:80], d) if errors else ""
    segments = [fs.join(msh_fields), fs.join(["MSA", code, inbound_id, text_message])]
    for err in errors:
        segments.append(_err_segment(err, d))
    return "\r".join(segments) + "\r"


def _err_segment(err: Hl7Error, d: Delimiters) -> str:
    c, s = d.component, d.subcomponent
    seg, seq, fld, comp = _location_parts(err.location)
    name = ERROR_CODES.get(err.code, "Error")
    eld = c.join([seg, seq, fld, f"{err.code}{s}{escape(name, d)}{s}HL70357"]) if seg else ""
    erl = c.join([seg, seq, fld, "", comp]).rstrip(c) if seg else ""
    cwe = c.join([str(err.code), escape(name, d), "HL70357"])
    return d.field.join(["ERR", eld, erl, cwe, err.severity, "", "", "",
                         escape(err.describe(), d)])


def ack_code_of(ack_text: str) -> tuple[str, str]:
    """(MSA-1, MSA-2) of an acknowledgement's text; ('', '') if it has no MSA."""
    for line in ack_text.replace("\n", "\r").split("\r"):
        if line.startswith("MSA") and len(line) > 4:
            parts = line.split(line[3])
            return (parts[1] if len(parts) > 1 else "", parts[2] if len(parts) > 2 else "")
    return "", ""
