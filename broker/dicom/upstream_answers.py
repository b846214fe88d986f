"""An upstream worklist's C-FIND answers read once: a poller asks the same query every few
seconds and most answers come back byte for byte as they were, so an answer whose encoded
elements equal one of the previous poll's takes that one's attributes instead of being
decoded and read again."""

from __future__ import annotations

import json
from typing import Any

from pydicom.dataset import Dataset

from broker.dicom.importer import to_attrs
from broker.model.orders import Attrs

#: encoded elements of an answer → its attributes as JSON (each use gets its own copy, as
#: the order built from them is changed on its way to the store)
Read = dict[tuple[Any, ...], str]


def fingerprint(ds: Dataset) -> tuple[Any, ...] | None:
    """The answer's elements as pynetdicom decoded them (still encoded: pydicom converts an
    element when it is first read), transfer syntax and character set included; None once
    an element has been read (then it is no longer the bytes as received)."""
    elements = tuple(ds.values())
    try:
        hash(elements)
    except TypeError:  # a converted DataElement is not hashable
        return None
    return elements


def attrs_of(ds: Dataset, previous: Read, current: Read) -> Attrs:
    """``to_attrs(ds)``, from ``previous`` when the same answer came last time; kept in
    ``current`` for the next poll."""
    key = fingerprint(ds)
    if key is None:
        return to_attrs(ds)
    text = previous.get(key)
    if text is None:
        attrs = to_attrs(ds)
        text = json.dumps(attrs, ensure_ascii=False, separators=(",", ":"))
    else:
        attrs = json.loads(text)
    current[key] = text
    return attrs
