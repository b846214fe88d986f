"""The HTTP side of UPS-RS answers (PS3.18 chapter 11): the HTTP status of each DIMSE status,
the ``Warning: 299`` header, JSON error bodies (what was wrong and the DIMSE status, never a
stack trace), DICOM JSON bodies, and the reading of request bodies, UIDs and AE titles."""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from broker.admin.api import read_body
from broker.dicom.dicom_json import MEDIA_TYPE, BadPayload
from broker.dicom.qido import BadParameter
from broker.dicom.status import DimseFailure
from broker.logs import event
from broker.model.uid import is_uid
from broker.store.errors import StoreError
from broker.workflow import ups as rules
from broker.workflow.ups import UpsError

log = logging.getLogger("broker.ups")
#: the agent named in Warning headers (RFC 7234 warn-agent)
AGENT = "mwl-broker"
ACCEPTED_TYPES = frozenset({MEDIA_TYPE, "application/json"})
#: DIMSE failure status → HTTP status (PS3.18 Tables 11.4.3-1 … 11.12.3-1); other
#: failures are 400, warnings are the transaction's success status with a Warning
HTTP_OF = {
    rules.NO_LONGER_UPDATABLE: 400, rules.WRONG_TRANSACTION_UID: 400,
    rules.ALREADY_IN_PROGRESS: 409, rules.ONLY_SCHEDULED_BY_CREATE: 400,
    rules.FINAL_STATE_NOT_MET: 409, rules.NO_SUCH_WORKITEM: 404,
    rules.UNKNOWN_RECEIVING_AE: 403, rules.NOT_SCHEDULED_AT_CREATE: 400,
    rules.NOT_IN_PROGRESS: 409, rules.ALREADY_COMPLETED: 409,
    rules.PERFORMER_CHOOSES_NOT_TO_CANCEL: 409, rules.ACTION_NOT_APPROPRIATE: 409,
    rules.DUPLICATE_INSTANCE: 409, rules.MISSING_ATTRIBUTE: 400, rules.INVALID_VALUE: 400,
    rules.NOT_AUTHORIZED: 403, rules.PERFORMER_NOT_CONTACTED: 409, 0x0121: 400,
}
#: the Warning texts PS3.18 gives for the warning statuses
WARNING_TEXT = {
    rules.ALREADY_CANCELED: "The UPS is already in the requested state of CANCELED.",
    rules.ALREADY_COMPLETED_WARNING: "The UPS is already in the requested state of "
    "COMPLETED.",
    rules.DELETION_LOCK_NOT_GRANTED: "Deletion Lock not granted.",
    rules.CREATED_WITH_MODIFICATIONS: "The UPS was created with modifications.",
}
#: media ranges of an Accept header that a DICOM JSON answer satisfies
ANSWERABLE = frozenset({MEDIA_TYPE, "application/json", "application/*", "*/*"})
#: a request handler (a function of the request, or a method: self and the request)
Handler = Callable[..., Awaitable[web.StreamResponse]]


class BadRequest(ValueError):
    """A request UPS-RS cannot read (400); the text says what to correct."""


def warning(text: str) -> str:
    """A ``Warning`` header value: ``299 mwl-broker: "text"`` (one line, ASCII)."""
    clean = " ".join(text.split())[:400].encode("ascii", "replace").decode()
    return f'299 {AGENT}: "{clean.replace(chr(92), "/").replace(chr(34), chr(39))}"'


def failure(status: int, comment: str, http: int | None = None) -> web.Response:
    """A refused request: a JSON body naming what was wrong and the DIMSE status (if any),
    and the same text in a Warning header."""
    code = http or HTTP_OF.get(status, 400)
    body: dict[str, Any] = {"error": comment}
    if status:
        body["dimse_status"] = f"0x{status:04X}"
    return web.json_response(body, status=code, headers={"Warning": warning(comment)})


def dicom_json(data: Any, status: int = 200, headers: dict[str, str] | None = None
               ) -> web.Response:
    """A DICOM JSON body (``application/dicom+json``)."""
    return web.Response(text=json.dumps(data, ensure_ascii=False), status=status,
                        content_type=MEDIA_TYPE, charset="utf-8", headers=headers)


def done(status: int, warning_status: int = 0, comment: str = "",
         headers: dict[str, str] | None = None, data: Any = None) -> web.Response:
    """A transaction's success, with the Warning of a warning status."""
    out = dict(headers or {})
    if warning_status:
        text = WARNING_TEXT.get(warning_status, comment or f"status 0x{warning_status:04X}")
        if warning_status == rules.CREATED_WITH_MODIFICATIONS and comment:
            text = f"{text[:-1]}: {comment}"
        out["Warning"] = warning(text)
    if data is not None:
        return dicom_json(data, status, out)
    return web.Response(status=status, headers=out)


def answers(what: str) -> Callable[[Handler], Handler]:
    """Turn a handler's refusals into UPS-RS answers: UpsError and DimseFailure by their
    status, unreadable input 400, an unavailable store 503, anything else 500 (logged)."""
    def wrap(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def run(*args: Any) -> web.StreamResponse:
            try:
                return await handler(*args)
            except UpsError as exc:
                event(log, "ups_rs_refused", logging.WARNING, request=what,
                      status=f"0x{exc.status:04X}", error=exc.comment)
                return failure(exc.status, exc.comment)
            except DimseFailure as exc:
                event(log, "ups_rs_refused", logging.WARNING, request=what,
                      status=f"0x{exc.status:04X}")
                return failure(exc.status, exc.comment, 400)
            except (BadRequest, BadPayload, BadParameter) as exc:
                return failure(0, str(exc), 400)
            except StoreError as exc:
                event(log, "ups_rs_failed", logging.ERROR, request=what, error=str(exc))
                return failure(0x0110, f"the store is unavailable: {exc}", 503)
            except web.HTTPException:
                raise
            except Exception as exc:  # never a stack trace to the client
                event(log, "ups_rs_failed", logging.ERROR, request=what,
                      error=type(exc).__name__)
                return failure(0x0110, f"the request failed: {type(exc).__name__}", 500)
        return run
    return wrap


def check_accept(request: web.Request) -> None:
    """406 unless the Accept header (if any) takes DICOM JSON: the broker answers no
    application/dicom+xml or multipart (PS3.18 8.7.3)."""
    accept = request.headers.get("Accept", "").strip()
    if not accept:
        return
    for part in accept.split(","):
        media, *params = (p.strip().lower() for p in part.split(";"))
        weight = next((p[2:] for p in params if p.startswith("q=")), "1")
        try:
            taken = float(weight) > 0
        except ValueError:
            taken = False
        if media in ANSWERABLE and taken:
            return
    raise web.HTTPNotAcceptable(
        text=json.dumps({"error": f"Accept {accept[:100]!r}: the Worklist Service answers "
                         f"{MEDIA_TYPE} only"}), content_type="application/json")


async def body_json(request: web.Request, required: bool = True) -> Any:
    """The request's DICOM JSON body (None when there is none and none is required)."""
    if not request.can_read_body:
        if required:
            raise BadRequest(f"the body must be a DICOM JSON dataset ({MEDIA_TYPE})")
        return None
    if request.content_type not in ACCEPTED_TYPES:
        raise web.HTTPUnsupportedMediaType(
            text=json.dumps({"error": f"Content-Type {request.content_type!r}: send "
                             f"{MEDIA_TYPE}"}), content_type="application/json")
    raw = await read_body(request, request.read())
    if not raw.strip():
        if required:
            raise BadRequest("the body is empty: send a DICOM JSON dataset")
        return None
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadRequest(f"the body is not JSON (UTF-8): {exc}") from None


def parse_uid(text: str, what: str = "workitem UID") -> str:
    text = text.strip()
    if not is_uid(text):
        raise BadRequest(f"{what} {text[:70]!r} is not a UID (digits and dots, at most 64)")
    return text


def parse_ae(text: str) -> str:
    """An AE title (PS3.5 AE: 1 to 16 characters, no backslash or control characters)."""
    title = text.strip()
    if not title or len(title) > 16 or not title.isascii() or not title.isprintable() \
            or "\\" in title:
        raise BadRequest(f"AE title {text[:20]!r} is not an AE title (1 to 16 characters, "
                         "no backslash)")
    return title


def flag(text: str, name: str) -> bool:
    value = text.strip().lower()
    if value not in ("", "true", "false"):
        raise BadRequest(f"{name} {text[:10]!r} must be true or false")
    return value == "true"


def bare_uid(request: web.Request, *names: str) -> str:
    """A UID given as ``?{uid}`` (PS3.18's bare query parameter) or as ``?name=uid``."""
    for name in names:
        if request.query.get(name):
            return parse_uid(request.query[name], name)
    for key, value in request.query.items():
        if not value and is_uid(key.strip()):
            return key.strip()
    return ""
