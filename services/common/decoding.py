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

from services.common.errors import InvalidArgument
from services.common.ratelog import Throttled
from services.common.wirefmt import next_field

UNDECODABLE = "the request is not a valid protobuf message of the type this method takes"
GROUPS = "the request holds a protobuf group (wire type 3), which no maas message has"
# A request message's top-level fields, at most: as many as the gateway reads (its
# services.gateway.wire.MAX_FIELDS); a legitimate request has a few dozen at most.
MAX_FIELDS = 4096
TOO_MANY_FIELDS = f"the request has more than {MAX_FIELDS} top-level fields, expected at most that"


def top_level_groups(data: bytes) -> bool:
    """Whether a message that parsed holds a group among its top-level fields;
    InvalidArgument past MAX_FIELDS of them.

    proto3 has no groups, so one is a malformed or hostile request, and the gateway,
    which reads the wire itself, refuses them. Read here from the keys and lengths
    alone, in time bounded by the field count: protobuf's UnknownFieldSet makes a
    Python object per unknown field (16M one-byte fields took 10 s and 1.5 GB).
    """
    pos, end, count = 0, len(data), 0
    while pos < end:
        count += 1
        if count > MAX_FIELDS:
            raise InvalidArgument(TOO_MANY_FIELDS)
        _, _, pos = next_field(data, pos)
        if pos < 0:  # 3 starts a group; 4, 6 and 7 never parse
            return True
    return False


class Decoder:
    """Bytes to a request message; InvalidArgument with a fixed message if they are not one."""

    def __init__(self, deserialize: Callable[[bytes], Any], method: str, log: Throttled) -> None:
        self._deserialize = deserialize
        self._method = method
        self._log = log

    def __call__(self, data: bytes) -> Any:
        try:
            message = self._deserialize(data)
        except InvalidArgument:  # a deserializer's own refusal (too many fields) stands
            self._log.warning("%s: a request message was refused", self._method)
            raise
        except Exception:  # noqa: BLE001 - whatever the parser raises, the bytes are at fault
            self._log.warning("%s: a request message did not parse", self._method)
            raise InvalidArgument(UNDECODABLE) from None
        try:
            groups = top_level_groups(data)
        except InvalidArgument:
            self._log.warning("%s: a request message had too many fields", self._method)
            raise
        if groups:
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
