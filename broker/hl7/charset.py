"""MSH-18 character sets: reading the declared set from raw bytes and decoding safely."""

from __future__ import annotations

import codecs
from collections.abc import Mapping
from dataclasses import dataclass

#: HL7 table 0211 names (and the aliases real senders write) → Python codec.
STANDARD_CHARSETS: dict[str, str] = {
    "": "ascii",
    "ASCII": "ascii",
    "8859/1": "iso8859_1",
    "8859/2": "iso8859_2",
    "8859/3": "iso8859_3",
    "8859/4": "iso8859_4",
    "8859/5": "iso8859_5",
    "8859/6": "iso8859_6",
    "8859/7": "iso8859_7",
    "8859/8": "iso8859_8",
    "8859/9": "iso8859_9",
    "8859/15": "iso8859_15",
    "UNICODE UTF-8": "utf_8",
    "UNICODE": "utf_8",
    "UTF-8": "utf_8",
    "UTF8": "utf_8",
    "GB 18030-2000": "gb18030",
    "GB18030": "gb18030",
    "GBK": "gb18030",
    "ISO IR87": "iso2022_jp",
    "ISO IR159": "iso2022_jp_2",
    "ISO IR14": "shift_jis",
    "KS X 1001": "euc_kr",
    "BIG-5": "big5",
}

SINGLE_BYTE_CODECS = frozenset(f"iso8859_{n}" for n in range(1, 16)) | {"ascii"}


class CharsetError(ValueError):
    """The bytes of a message cannot be read in any character set allowed for it."""


@dataclass(frozen=True, slots=True)
class Decoded:
    text: str
    declared: str
    codec: str
    note: str = ""


def normalise_name(name: str) -> str:
    return " ".join(name.strip().upper().split())


def codec_for(declared: str, aliases: Mapping[str, str] | None = None) -> str | None:
    """The Python codec for an MSH-18 value, or None if it is not known."""
    key = normalise_name(declared)
    if aliases:
        for alias, codec in aliases.items():
            if normalise_name(alias) == key:
                return canonical_codec(codec)
    standard = STANDARD_CHARSETS.get(key)
    return canonical_codec(standard) if standard else None


def canonical_codec(codec: str) -> str:
    """The codec's canonical name; raises LookupError for an unknown one."""
    return codecs.lookup(codec).name.replace("-", "_")


def peek_msh(raw: bytes) -> list[str]:
    """The MSH fields read from raw bytes before decoding (index n is MSH-n+1); [] if no MSH."""
    start = raw.find(b"MSH")
    if start < 0 or start > 16:
        return []
    end = len(raw)
    for sep in (b"\r", b"\n"):
        pos = raw.find(sep, start)
        if 0 <= pos < end:
            end = pos
    header = raw[start:end].decode("latin-1")
    return header.split(header[3]) if len(header) > 4 else []


def msh_value(fields: list[str], n: int) -> str:
    """MSH-n (first repetition, first component) from peek_msh's fields."""
    if n < 2 or len(fields) < n:
        return ""
    enc = fields[1]
    value = fields[n - 1].split(enc[1:2] or "~")[0]
    return value.split(enc[:1] or "^")[0].strip()


def declared_charset(raw: bytes, fields: list[str] | None = None) -> str:
    """MSH-18 (first repetition) read from the raw bytes (or their peek_msh fields)."""
    if fields is None:
        fields = peek_msh(raw)
    if len(fields) < 18:
        return ""
    return fields[17].split(fields[1][1:2] or "~")[0].strip()


def decode(
    raw: bytes,
    *,
    aliases: Mapping[str, str] | None = None,
    override: str | None = None,
    sniff_utf8: bool = True,
    fallbacks: tuple[str, ...] = (),
    msh: list[str] | None = None,
) -> Decoded:
    """Decode a message following MSH-18, a per-sender override and the fallbacks.

    Order: the sender's override codec if configured; else the declared set. When the declared
    set is single-byte but the bytes are valid UTF-8 with multi-byte sequences (a common lie),
    UTF-8 is used if ``sniff_utf8``. When the bytes are invalid in the chosen set, each fallback
    is tried in turn; if none reads them, CharsetError says where the first bad byte is.
    ``msh`` is the header from peek_msh when the caller already has it.
    """
    declared = declared_charset(raw, msh)
    if override:
        codec = canonical_codec(override)
        return Decoded(_strict(raw, codec, declared, "sender override"), declared, codec,
                       f"sender override {codec}")
    codec_or_none = codec_for(declared, aliases)
    if codec_or_none is None:
        raise CharsetError(f"MSH-18 character set {declared!r} is not supported")
    codec = codec_or_none
    if sniff_utf8 and codec in SINGLE_BYTE_CODECS and not raw.isascii():
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            pass
        else:
            return Decoded(text, declared, "utf_8", f"MSH-18 {declared!r} but bytes are UTF-8")
    try:
        return Decoded(raw.decode(codec), declared, codec)
    except UnicodeDecodeError as first_error:
        for fallback in fallbacks:
            try:
                fb = canonical_codec(fallback)
                return Decoded(raw.decode(fb), declared, fb,
                               f"bytes invalid for {codec}; decoded with fallback {fb}")
            except (UnicodeDecodeError, LookupError):
                continue
        raise CharsetError(
            f"MSH-18 declares {declared or 'ASCII'!r} ({codec}) but byte "
            f"0x{raw[first_error.start]:02X} at offset {first_error.start} is not valid in it"
        ) from first_error


def _strict(raw: bytes, codec: str, declared: str, what: str) -> str:
    try:
        return raw.decode(codec)
    except UnicodeDecodeError as exc:
        raise CharsetError(
            f"{what} {codec} cannot read byte 0x{raw[exc.start]:02X} at offset {exc.start}"
            f" (MSH-18 {declared!r})"
        ) from exc
