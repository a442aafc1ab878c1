"""v2 protobuf replies as Triton's JSON.

Triton writes statistics and metadata with every field and 64-bit integers as
JSON numbers, but a model config as protobuf's JSON mapping (int64 as strings);
both are reproduced here, so tritonclient.http reads what it reads from Triton.
"""

from __future__ import annotations

import base64
from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

_Type = FieldDescriptor


def config_json(config: Message) -> dict[str, Any]:
    """A ModelConfig as Triton's GET .../config answers it."""
    return json_format.MessageToDict(config, preserving_proto_field_name=True)


def message_json(message: Message) -> dict[str, Any]:
    """Every field of `message` (defaults too), integers as numbers."""
    out: dict[str, Any] = {}
    for field in message.DESCRIPTOR.fields:
        oneof = field.containing_oneof
        if oneof is not None and message.WhichOneof(oneof.name) != field.name:
            continue
        value = getattr(message, field.name)
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            value_field = field.message_type.fields_by_name["value"]
            out[field.name] = {str(k): _scalar(value_field, v) for k, v in value.items()}
        elif _is_repeated(field):
            out[field.name] = [_scalar(field, v) for v in value]
        elif field.message_type is not None and not message.HasField(field.name):
            continue
        else:
            out[field.name] = _scalar(field, value)
    return out


def _is_repeated(field: Any) -> bool:
    return bool(field.is_repeated)


def _scalar(field: Any, value: Any) -> Any:
    if field.type == _Type.TYPE_MESSAGE:
        return message_json(value)
    if field.type == _Type.TYPE_ENUM:
        return field.enum_type.values_by_number[value].name
    if field.type == _Type.TYPE_BYTES:
        return base64.b64encode(value).decode()
    return value
