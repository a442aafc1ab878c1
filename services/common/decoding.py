"""Decoding request messages in maas's own code, not in grpc core.

Why: grpc core deserializes a request before any interceptor sees the call, so a
message that does not parse ended it with UNKNOWN and a Python class name in the
details, wrote an ERROR traceback per call, and was missing from the call metrics.
The error interceptor gives grpc no deserializer and decodes with these instead:
an undecodable message is INVALID_ARGUMENT with a fixed message, counted like any
call, and logged at most once per interval.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Callable
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.unknown_fields import UnknownFieldSet

from services.common.errors import InvalidArgument
from services.common.ratelog import Throttled

UNDECODABLE = "the request is not a valid protobuf message of the type this method takes"
GROUPS = "the request holds a protobuf group (wire type 3), which no maas message has"
_GROUP = 3  # a group's end (wire type 4) without its start does not parse at all


def has_groups(message: Message) -> bool:
    """Whether `message` or a message inside it kept an unknown group field.

    proto3 has no groups, so one is a malformed or hostile request; the gateway,
    which reads the wire itself, refuses them too.
    """
    unknown = UnknownFieldSet(message)
    if any(unknown[i].wire_type == _GROUP for i in range(len(unknown))):
        return True
    for name, kind in _message_fields(message.DESCRIPTOR):
        if kind is _SINGLE:
            if message.HasField(name) and has_groups(getattr(message, name)):
                return True
            continue
        items = getattr(message, name)
        if any(has_groups(item) for item in (items.values() if kind is _MAP else items)):
            return True
    return False


_SINGLE, _REPEATED, _MAP = "single", "repeated", "map"
_FIELDS: dict[str, tuple[tuple[str, str], ...]] = {}


def _message_fields(descriptor: Any) -> tuple[tuple[str, str], ...]:
    """The fields of a message type that hold messages, and how; worked out once per
    type, since the request path runs `has_groups` on every message."""
    fields = _FIELDS.get(descriptor.full_name)
    if fields is None:
        found = []
        for field in descriptor.fields:
            entry = field.message_type
            if field.type != FieldDescriptor.TYPE_MESSAGE or entry is None:
                continue
            if entry.GetOptions().map_entry:
                value = entry.fields_by_name["value"]
                if value.type == FieldDescriptor.TYPE_MESSAGE:
                    found.append((field.name, _MAP))
            else:
                found.append((field.name, _REPEATED if field.is_repeated else _SINGLE))
        fields = _FIELDS[descriptor.full_name] = tuple(found)
    return fields


class Decoder:
    """Bytes to a request message; InvalidArgument with a fixed message if they are not one."""

    def __init__(self, deserialize: Callable[[bytes], Any], method: str, log: Throttled) -> None:
        self._deserialize = deserialize
        self._method = method
        self._log = log

    def __call__(self, data: bytes) -> Any:
        try:
            message = self._deserialize(data)
        except Exception:  # noqa: BLE001 - whatever the parser raises, the bytes are at fault
            self._log.warning("%s: a request message did not parse", self._method)
            raise InvalidArgument(UNDECODABLE) from None
        if isinstance(message, Message) and has_groups(message):
            self._log.warning("%s: a request message held a protobuf group", self._method)
            raise InvalidArgument(GROUPS)
        return message


class DecodedStream:
    """A stream of request messages, decoded one by one as they are read.

    An undecodable message raises InvalidArgument from `__anext__`, and the stream
    can be read on after it: a servicer that answers each message on its own
    (ModelStreamInfer) answers that one with an error; one that simply iterates
    ends the call with INVALID_ARGUMENT.
    """

    def __init__(self, requests: AsyncIterable[bytes], decode: Decoder) -> None:
        self._requests = requests
        self._iterator: AsyncIterator[bytes] | None = None
        self._decode = decode

    def __aiter__(self) -> DecodedStream:
        return self

    async def __anext__(self) -> Any:
        if self._iterator is None:
            # Only once read: grpc's receiver starts a coroutine when iterated, which
            # must not be left unawaited by a call that never reads (one refused first).
            self._iterator = aiter(self._requests)
        return self._decode(await anext(self._iterator))
