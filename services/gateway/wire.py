"""Just enough of the protobuf wire format to route a request without decoding it.

Why: the gateway forwards tensors it never looks at. Parsing a ModelInferRequest
in full copies every tensor (raw_input_contents alone is the whole payload), and
serializing it again for the backend copies it once more. Scanning only the
top-level tags reads a handful of varints and skips each field by its length.
Measured on the shared dev machine (CPython 3.11, protobuf upb), a request with
two [64, 1024] FP32 inputs as raw contents (512 KiB): full parse + set version +
re-serialize ~560 us; this scan ~15 us plus ~30 us for the one copy that
appending a version field makes. At 8 MiB: ~13.7 ms against ~0.7 ms.

The scan's cost is bounded by the number of top-level fields, not the bytes: a
length-delimited field is skipped by its length, and a request has at most
MAX_FIELDS of them (a name, a version, an id, and one per parameter, input,
output and raw contents). Without the cap, 32 MB of one-byte varint fields kept
the event loop busy for about 10 s.

Overriding model_version appends a field 2 to the serialized bytes: for a
singular field, the last value on the wire wins (protobuf encoding spec), so the
backend sees the resolved version and the rest of the bytes are passed as they
came. A version-carrying request (Model{Infer,Metadata,Ready,Config,Statistics}
Request) has the model name in field 1 and the version in field 2.

A client request that carries field 1 or 2 more than once is refused rather than
resolved "last wins": no protobuf encoder writes a singular field twice, so such
a request is hand-made (or two requests concatenated), and a second model name
after the tensors is what an allow-list bypass needs. Refusing keeps forwarding
zero-copy; the alternative, re-appending the decided name and version to every
request, would copy every payload, which this module exists to avoid.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.common.errors import InvalidArgument
from services.common.names import ECHO_LIMIT, MAX_NAME, model_name
from services.common.versions import MAX_SELECTOR, selector
from services.common.wirefmt import LEN, encode_varint, next_field

NAME, VERSION, ID = 1, 2, 3
# Top-level fields a client request may have; legitimate ones have a handful.
MAX_FIELDS = 4096
# UTF-8 takes at most 4 bytes a character: longer fields are refused before decoding.
_MAX_CHAR_BYTES = 4
_SINGLE = {NAME: "model name", VERSION: "model version"}


@dataclass(frozen=True)
class Head:
    """The routing fields of a request: model name, version selector and request id."""

    name: str = ""
    version: str = ""
    id: str = ""


class BadHead(InvalidArgument):
    """A well-formed request whose name or version is refused; `head` keeps its id, so a
    stream's per-request error can still say which request it answers."""

    def __init__(self, message: str, head: Head) -> None:
        super().__init__(message)
        self.head = head


Spans = dict[int, tuple[int, int]]


def _scan(
    data: bytes,
    max_fields: int | None,
    single: bool,
    start: int = 0,
    stop: int | None = None,
    collect: tuple[int, list[tuple[int, int]]] | None = None,
) -> Spans:
    """Where fields 1, 2 and 3 (length-delimited) lie, the last of each; `single`: refuse
    a second field 1 or 2; `max_fields`: refuse more top-level fields than that;
    `start`, `stop`: the message lies there in `data` (a nested one); `collect`: (a
    field number, a list) to append where each of that field's entries lies, tag
    included."""
    found: Spans = {}
    pos, end, count = start, len(data) if stop is None else stop, 0
    while pos < end:
        entry = pos
        count += 1
        if max_fields is not None and count > max_fields:
            raise InvalidArgument(
                f"malformed request: expected at most {max_fields} top-level fields, got "
                f"more ({pos} of {end} bytes read)"
            )
        key, start, pos = next_field(data, pos)
        number, kind = key >> 3, key & 7
        if pos < 0:
            raise InvalidArgument(f"malformed request: unsupported wire type {kind}")
        if kind != LEN:
            continue
        if pos > end:
            raise InvalidArgument("malformed request: a field runs past the end")
        if number in (NAME, VERSION, ID):
            if single and number in found and number in _SINGLE:
                raise InvalidArgument(
                    f"malformed request: the {_SINGLE[number]} (field {number}) appears "
                    "more than once, expected once"
                )
            found[number] = (start, pos)
        elif collect is not None and number == collect[0]:
            collect[1].append((entry, pos))
    if pos != end:
        raise InvalidArgument("malformed request: a field runs past the end")
    return found


def _text(data: bytes, spans: Spans, number: int) -> str:
    start, end = spans.get(number, (0, 0))
    try:
        return data[start:end].decode()
    except UnicodeDecodeError:
        raise InvalidArgument("malformed request: model name or version is not UTF-8") from None


def read_head(data: bytes) -> Head:
    """Fields 1, 2 and 3 (strings) of a serialized message, last value winning.

    For messages protobuf wrote (a backend's reply); a client's request goes through
    read_request.
    """
    spans = _scan(data, None, single=False)
    return Head(*(_text(data, spans, n) for n in (NAME, VERSION, ID)))


def _bounded(data: bytes, spans: Spans, number: int, what: str, limit: int) -> str:
    """Field `number` as text, refused before decoding when no `limit` characters fit it."""
    start, end = spans.get(number, (0, 0))
    if end - start > limit * _MAX_CHAR_BYTES:
        prefix = data[start : start + ECHO_LIMIT].decode(errors="replace")
        raise InvalidArgument(
            f"{what} {prefix!r}... is too long: expected at most {limit} characters, "
            f"got {end - start} bytes"
        )
    return _text(data, spans, number)


def read_request(data: bytes) -> Head:
    """A client's request head, checked: at most MAX_FIELDS top-level fields, one model
    name and one version, the name empty or a model name (services.common.names), the
    version a selector (services.common.versions). InvalidArgument otherwise.

    An empty name passes: ModelStatistics reads it as "every model", and elsewhere it
    names no model (NOT_FOUND), at no registry cost.
    """
    spans = _scan(data, MAX_FIELDS, single=True)
    id = _text(data, spans, ID)
    try:
        name = _bounded(data, spans, NAME, "model name", MAX_NAME)
        version = _bounded(data, spans, VERSION, "model version", MAX_SELECTOR)
        if name:
            model_name(name)
        selector(version, what="model version")
    except InvalidArgument as exc:
        raise BadHead(exc.message, Head(id=id)) from None
    return Head(name, version, id)


def only_field(data: bytes, number: int) -> bytes:
    """A client's message with only the entries of top-level field `number` (a
    length-delimited one, such as a map), to parse without copying the rest: an
    ExplainRequest's parameters without its tensors. At most MAX_FIELDS fields are read."""
    spans: list[tuple[int, int]] = []
    _scan(data, MAX_FIELDS, single=False, collect=(number, spans))
    return b"".join(data[start:end] for start, end in spans)


def string_field(number: int, value: str) -> bytes:
    """One length-delimited field, serialized."""
    raw = value.encode()
    return encode_varint(number << 3 | LEN) + encode_varint(len(raw)) + raw


def with_version(data: bytes, version: str) -> bytes:
    """The request with field 2 (model_version / version) set to `version`."""
    return data + string_field(VERSION, version)


# ModelStreamInferResponse: error_message (field 1), infer_response (field 2).
STREAM_ERROR, STREAM_RESPONSE = 1, 2


def stream_failed(data: bytes) -> bool:
    """Whether a serialized ModelStreamInferResponse carries an error_message."""
    return STREAM_ERROR in _scan(data, None, single=False)


def stream_head(data: bytes) -> Head:
    """The head of the ModelInferResponse inside a serialized ModelStreamInferResponse,
    read in place (an answer's outputs are not copied)."""
    spans = _scan(data, None, single=False)
    if STREAM_RESPONSE not in spans:
        return Head()
    inner = _scan(data, None, False, *spans[STREAM_RESPONSE])
    return Head(*(_text(data, inner, n) for n in (NAME, VERSION, ID)))


def wrap_stream_response(infer_response: bytes, extra: bytes = b"") -> bytes:
    """A ModelStreamInferResponse holding a serialized ModelInferResponse (field 2),
    with the serialized fields `extra` appended to it (one copy)."""
    size = encode_varint(len(infer_response) + len(extra))
    return b"".join((encode_varint(2 << 3 | LEN), size, infer_response, extra))
