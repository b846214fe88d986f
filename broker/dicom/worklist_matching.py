"""How the worklist SCP reads a query for a given calling AE — the station taken from the
caller, the statuses shown, the caps on matching values, the response character set — in
one place, so the SCP and the analyst's preview and explanation read a query alike."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from pydicom.dataset import Dataset

from broker.dicom.mwl import ParsedQuery, QueryLimits, parse_identifier

if TYPE_CHECKING:
    from broker.config import DicomSettings


@dataclass
class CallingAeOptions:
    """Per calling AE title: use it as the station key; the response character set."""

    station_key: bool = False
    charset: str = "ISO_IR 192"


@dataclass
class WorklistOptions:
    show_all_statuses: bool = False
    default: CallingAeOptions = field(default_factory=CallingAeOptions)
    callers: dict[str, CallingAeOptions] = field(default_factory=dict)

    def for_caller(self, ae_title: str) -> CallingAeOptions:
        return self.callers.get(ae_title.strip(), self.default)


def latin1_name(pn: str) -> str:
    """A PN for ISO_IR 100: the alphabetic group only, unencodable characters as '?'."""
    alphabetic = pn.split("=")[0]
    return alphabetic.encode("latin-1", errors="replace").decode("latin-1")


#: DICOM Specific Character Set → the Python codec its values are written in
CODECS = {"ISO_IR 192": "utf-8", "GB18030": "gb18030", "ISO_IR 100": "latin-1"}

#: queries kept parsed, by their encoded identifier (a modality asks the same query again and
#: again); identifiers longer than ``PARSED_MAX_BYTES`` are parsed each time
PARSED_KEPT = 256
PARSED_MAX_BYTES = 4096
#: encoded responses kept, by kept query and the stored values of the row they answer with
RESPONSES_KEPT = 2048


K = TypeVar("K")
V = TypeVar("V")


class Kept(Generic[K, V]):
    """At most ``size`` values, the oldest dropped first; read without a lock (one dict
    lookup), written under one."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._values: dict[K, V] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._values)

    def get(self, key: K) -> V | None:
        return self._values.get(key)

    def put(self, key: K, value: V) -> None:
        with self._lock:
            if key not in self._values and len(self._values) >= self.size:
                self._values.pop(next(iter(self._values)))
            self._values[key] = value


@dataclass
class WorklistMatching:
    """The SCP's reading of a query: ``parse`` gives what the SQL matches, ``encode_name``
    how person names are written for that caller."""

    options: WorklistOptions = field(default_factory=WorklistOptions)
    limits: QueryLimits = field(default_factory=QueryLimits)
    _parsed: Kept[tuple[bytes, str, str], ParsedQuery] = field(
        default_factory=lambda: Kept(PARSED_KEPT), init=False, repr=False, compare=False)
    #: (query serial, row fingerprint) → the response (the SCP's encoded identifier)
    responses: Kept[tuple[int, tuple[Any, ...]], Any] = field(
        default_factory=lambda: Kept(RESPONSES_KEPT), init=False, repr=False,
        compare=False)
    _serials: Iterator[int] = field(default_factory=lambda: itertools.count(1), init=False,
                                    repr=False, compare=False)

    def parse_encoded(self, encoded: bytes, transfer_syntax: str, calling_ae: str,
                      decode: Callable[[], Dataset]) -> ParsedQuery:
        """``parse`` of the identifier ``encoded`` in ``transfer_syntax`` (``decode`` gives
        its dataset): the same query from the same caller is parsed once. A parsed query is
        never changed after parsing, so threads share it; a refused one is not kept. A kept
        one has a ``serial`` of its own: its responses are kept under it."""
        key = (encoded, transfer_syntax, calling_ae)
        parsed = self._parsed.get(key)
        if parsed is not None:
            return parsed
        parsed = self.parse(decode(), calling_ae)
        if 0 < len(encoded) <= PARSED_MAX_BYTES:
            parsed.serial = next(self._serials)
            self._parsed.put(key, parsed)
        return parsed

    def parse(self, identifier: Dataset, calling_ae: str) -> ParsedQuery:
        """Matching and return keys of ``identifier`` as asked by ``calling_ae``
        (DimseFailure / QueryLimitError when the SCP refuses it)."""
        options = self.options.for_caller(calling_ae)
        parsed = parse_identifier(identifier,
                                  calling_ae.strip() if options.station_key else "",
                                  self.limits)
        if self.options.show_all_statuses:
            parsed.query.include_hidden = True
        return parsed

    def charset(self, calling_ae: str) -> str:
        return self.options.for_caller(calling_ae).charset

    def encode_name(self, calling_ae: str) -> Callable[[str], str] | None:
        return latin1_name if self.charset(calling_ae) == "ISO_IR 100" else None


def from_settings(d: DicomSettings) -> WorklistMatching:
    """The matching the ``dicom:`` settings describe."""
    options = WorklistOptions(
        show_all_statuses=d.show_all_statuses,
        default=CallingAeOptions(charset=d.charset),
        callers={c.ae_title: CallingAeOptions(c.station_key, c.charset)
                 for c in d.calling_aes})
    return WorklistMatching(options, QueryLimits(d.max_query_value_length,
                                                 d.max_query_wildcards, d.max_query_uids))
