"""Protobuf's wire format at its lowest level: wire types and varints.

For the few places that read serialized messages by their tags instead of parsing
them (the gateway's routing scan, the REST reply's output split, the group check of
request decoding); each skips fields by their lengths, so its time is bounded by the
fields it reads, not by the bytes.
"""

from __future__ import annotations

from services.common.errors import InvalidArgument

VARINT, I64, LEN, I32 = 0, 1, 2, 5


def read_varint(data: bytes | memoryview, pos: int) -> tuple[int, int]:
    """The varint at `pos` and the position after it; InvalidArgument when the bytes end
    inside it or it runs past 64 bits."""
    result = shift = 0
    end = len(data)
    while True:
        if pos >= end or shift > 63:
            raise InvalidArgument("malformed request: truncated or overlong varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def encode_varint(value: int) -> bytes:
    """The base-128 varint encoding of a non-negative integer."""
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def next_field(data: bytes | memoryview, pos: int) -> tuple[int, int, int]:
    """The field whose key is at `pos`: its key, where its value starts, and where the
    next field starts (past the end of `data` for a length that runs over it; -1 for a
    group or a wire type no field has, whose end only a parser finds). InvalidArgument
    when a varint is cut short."""
    key, pos = read_varint(data, pos)
    kind = key & 7
    if kind == LEN:
        length, pos = read_varint(data, pos)
        return key, pos, pos + length
    if kind == VARINT:
        return key, pos, read_varint(data, pos)[1]
    if kind == I64:
        return key, pos, pos + 8
    if kind == I32:
        return key, pos, pos + 4
    return key, pos, -1
