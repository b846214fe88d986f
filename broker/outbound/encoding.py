"""The bytes of an outbound message: its text encoded in the character set its MSH-18 names."""

from __future__ import annotations

from broker.hl7.charset import codec_for


class EncodingError(ValueError):
    """A message whose MSH-18 is unknown, or whose text that character set cannot hold."""


def declared(text: str) -> str:
    """MSH-18 (first repetition) of a message's text; "" when absent."""
    header = text.split("\r", 1)[0]
    if not header.startswith("MSH") or len(header) < 8:
        return ""
    fields = header.split(header[3])
    if len(fields) < 18:
        return ""
    return fields[17].split(header[5])[0].strip()


def with_charset(text: str, charset: str) -> str:
    """``text`` with its MSH-18 set to ``charset`` (unchanged when ``charset`` is empty)."""
    header, sep, rest = text.partition("\r")
    if not charset or not header.startswith("MSH") or len(header) < 8:
        return text
    fields = header.split(header[3])
    fields += [""] * (18 - len(fields))
    fields[17] = charset
    return header[3].join(fields) + sep + rest


def encode(text: str) -> bytes:
    """``text`` in the character set its MSH-18 declares (ASCII when it declares none)."""
    charset = declared(text)
    codec = codec_for(charset)
    if codec is None:
        raise EncodingError(f"MSH-18 {charset!r} is not a character set the broker can encode")
    try:
        return text.encode(codec)
    except UnicodeEncodeError as exc:
        raise EncodingError(
            f"U+{ord(text[exc.start]):04X} at offset {exc.start} cannot be written in MSH-18 "
            f"{charset or 'ASCII'!r} ({codec}); declare a character set that holds it "
            "(outbound.destinations[].charset or the template's MSH-18)") from None
