"""The identifier of a Modality Worklist C-FIND response: pre-encoded for the association's
transfer syntax, and kept for the next time the same query (a modality polls with the same
one) meets the same stored row."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from pydicom.dataset import Dataset

from broker.dicom.encoder import encode
from broker.dicom.mwl import ParsedQuery, response_nodes, to_pydicom
from broker.dicom.pynetdicom_patches.encoded import PreEncoded
from broker.dicom.worklist_matching import Kept
from broker.store.worklist_query import WorklistRow


def find_response(kept: Kept[tuple[int, tuple[Any, ...]], Any], row: WorklistRow,
                  parsed: ParsedQuery, encode_name: Callable[[str], str] | None,
                  charset: str, implicit: bool | None) -> Dataset:
    """The response to ``parsed`` with ``row``: pre-encoded when ``implicit`` is not None
    (implicit or explicit VR little endian), a pydicom Dataset else. A pre-encoded one is
    kept under the query's serial and the row's fingerprint (its stored values) when the
    query is a kept one; a changed row has another fingerprint, so it is encoded anew."""
    key = (parsed.serial, row.fingerprint)
    if implicit is not None and parsed.serial:
        answer: Dataset | None = kept.get(key)
        if answer is not None:
            return answer
    nodes = response_nodes(row, parsed.keys, encode_name)
    if implicit is None:
        return to_pydicom(nodes, charset)
    answer = PreEncoded(encode(nodes, charset, implicit), implicit,
                        partial(to_pydicom, nodes, charset))
    if parsed.serial and row.fingerprint:
        kept.put(key, answer)
    return answer
