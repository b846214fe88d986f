"""A small UPS-RS (DICOMweb Worklist Service) client over aiohttp for the tests: requests with
DICOM JSON bodies, and the WebSocket event channel with bounded waits."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from pydicom.dataset import Dataset

MEDIA = "application/dicom+json"
GLOBAL = "1.2.840.10008.5.1.4.34.5"
FILTERED = "1.2.840.10008.5.1.4.34.5.1"


@dataclass
class Answer:
    status: int
    headers: Any
    body: Any = None
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Report:
    """One event report of the WebSocket channel."""

    event_type: int
    uid: str
    state: str
    data: Dataset


def body(ds: Dataset) -> dict[str, Any]:
    return ds.to_json_dict()


def dataset(data: dict[str, Any]) -> Dataset:
    return Dataset.from_json(data)


class UpsRs:
    def __init__(self, port: int, token: str = "") -> None:
        self.base = f"http://127.0.0.1:{port}/dicomweb"
        self.ws_base = f"ws://127.0.0.1:{port}/dicomweb"
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30),
                                             headers=headers)

    async def close(self) -> None:
        await self.session.close()

    async def call(self, method: str, path: str, data: Any = None, expect: int | None = None,
                   params: Any = None, headers: dict[str, str] | None = None) -> Answer:
        kwargs: dict[str, Any] = {"params": params, "headers": dict(headers or {})}
        if data is not None:
            kwargs["data"] = json.dumps(data)
            kwargs["headers"].setdefault("Content-Type", MEDIA)
        async with self.session.request(method, self.base + path, **kwargs) as r:
            text = await r.text()
            parsed = json.loads(text) if text and r.content_type in (
                MEDIA, "application/json") else (text or None)
            answer = Answer(r.status, r.headers, parsed, r.headers.getall("Warning", []))
        if expect is not None:
            assert answer.status == expect, (method, path, answer.status, text)
        return answer

    async def search(self, params: Any = None, expect: int = 200) -> list[dict[str, Any]]:
        answer = await self.call("GET", "/workitems", params=params, expect=expect)
        return list(answer.body or [])

    async def uids(self, params: Any) -> list[str]:
        return sorted(dataset(d).SOPInstanceUID for d in await self.search(params))

    async def state(self, uid: str) -> str:
        answer = await self.call("GET", f"/workitems/{uid}", expect=200)
        return str(dataset(answer.body[0]).ProcedureStepState)

    async def change(self, uid: str, state: str, transaction: str = "",
                     expect: int = 200) -> Answer:
        ds = Dataset()
        ds.ProcedureStepState = state
        if transaction:
            ds.TransactionUID = transaction
        return await self.call("PUT", f"/workitems/{uid}/state", body(ds), expect)

    async def channel(self, ae_title: str) -> aiohttp.ClientWebSocketResponse:
        return await self.session.ws_connect(f"{self.ws_base}/ws/subscribers/{ae_title}")


async def next_report(ws: aiohttp.ClientWebSocketResponse, seconds: float = 15.0) -> Report:
    """The next event report (fails after ``seconds``)."""
    message = await asyncio.wait_for(ws.receive(), seconds)
    assert message.type == aiohttp.WSMsgType.TEXT, message
    ds = Dataset.from_json(json.loads(message.data))
    return Report(int(ds.EventTypeID), str(ds.AffectedSOPInstanceUID),
                  str(ds.get("ProcedureStepState", "")), ds)


async def reports(ws: aiohttp.ClientWebSocketResponse, count: int,
                  seconds: float = 15.0) -> list[Report]:
    return [await next_report(ws, seconds) for _ in range(count)]


async def silent(ws: aiohttp.ClientWebSocketResponse, seconds: float = 0.5) -> bool:
    """Whether nothing arrives within ``seconds`` (a bounded check that nothing was sent)."""
    try:
        message = await asyncio.wait_for(ws.receive(), seconds)
    except TimeoutError:
        return True
    raise AssertionError(f"unexpected message: {message}")
