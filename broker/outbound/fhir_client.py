"""Sends a queued FHIR resource (a Task or an ImagingStudy, as ``{"method", "path",
"resource"}``) to the FHIR server, in the outbox's worker thread, and maps the answer to
the outbox's outcome: 2xx delivered; 408, 429, 5xx and connection errors retried; any
other 4xx dead (the OperationOutcome's diagnostics as the reason). A 401 drops the cached
access token and the request is sent once more with a new one."""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from typing import Any

from broker.outbound.fhir_auth import Auth, AuthError
from broker.store.repo import OutboxRow

FHIR_JSON = "application/fhir+json"
RETRIED = (408, 429)


class FhirSender:
    def __init__(self, base_url: str, auth: Auth, timeout: float = 10.0,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.auth, self.timeout, self.ssl_context = auth, timeout, ssl_context

    def send_row(self, row: OutboxRow) -> tuple[str, str, str]:
        """(outcome, reason, detail) of sending one outbox row."""
        try:
            request = json.loads(row.payload)
            method, path = str(request["method"]), str(request["path"])
            body = json.dumps(request["resource"]).encode()
        except (ValueError, KeyError, TypeError) as exc:
            return "dead", f"not a FHIR request: {type(exc).__name__}: {exc}", ""
        try:
            status, text = self._exchange(method, path, body)
            if status == 401 and self.auth.invalidate():
                status, text = self._exchange(method, path, body)
        except AuthError as exc:
            return "retry", str(exc), ""
        except (OSError, TimeoutError) as exc:
            return "retry", (f"{type(exc).__name__}: {exc}" if str(exc)
                             else f"no answer within {self.timeout} s"), ""
        detail = f"HTTP {status}"
        if 200 <= status < 300:
            return "delivered", "", detail
        reason = f"FHIR server answered {status} to {method} {path}: {diagnostics(text)}"
        if status in RETRIED or status >= 500 or status < 400:
            return "retry", reason, detail
        return "dead", reason, detail

    def _exchange(self, method: str, path: str, body: bytes) -> tuple[int, str]:
        headers = {"Content-Type": FHIR_JSON, "Accept": FHIR_JSON}
        authorization = self.auth.header()
        if authorization:
            headers["Authorization"] = authorization
        request = urllib.request.Request(f"{self.base_url}/{path}", data=body,
                                         headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout,
                                        context=self.ssl_context) as answer:
                return int(answer.status), answer.read(65536).decode("utf-8", "replace")
        except urllib.error.HTTPError as exc:
            with exc:
                return int(exc.code), exc.read(65536).decode("utf-8", "replace")


def diagnostics(text: str) -> str:
    """The issues of an OperationOutcome answer (its diagnostics, else details.text), or
    the start of any other answer."""
    try:
        outcome: Any = json.loads(text)
    except ValueError:
        return text[:200].strip() or "(no body)"
    if not isinstance(outcome, dict) or outcome.get("resourceType") != "OperationOutcome":
        return text[:200].strip()
    found = []
    for issue in outcome.get("issue") or []:
        if isinstance(issue, dict):
            said = issue.get("diagnostics") or (issue.get("details") or {}).get("text") or ""
            found.append(f"{issue.get('severity', '')} {issue.get('code', '')}: {said}".strip())
    return "; ".join(found)[:500] or "(an OperationOutcome without issues)"
