"""What the CLI prints: a readable text, or with ``--json`` one JSON document on stdout per command.

The JSON is the typed result field by field (``clients.results``); the admin service's answers,
which the SDK hands back as protobuf messages, use protobuf's JSON mapping with the .proto field
names (so 64-bit counters such as ``rollout_id`` are strings there). A failure is
``{"error": {"code": ..., "message": ..., "request_id": ...}}`` on stdout, and the readable line
on stderr as without ``--json``.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Callable

from google.protobuf import json_format
from google.protobuf.message import Message


def jsonable(result: object) -> object:
    if isinstance(result, Message):
        return json_format.MessageToDict(
            result, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
        )
    if dataclasses.is_dataclass(result) and not isinstance(result, type):
        return dataclasses.asdict(result)
    return result


def show(as_json: bool, result: object, text: Callable[[], str]) -> None:
    print(json.dumps(jsonable(result), indent=1) if as_json else text())


def fail(as_json: bool, message: str, code: str = "", request_id: str = "") -> None:
    """Report a failure; the caller returns the exit status (1: refused or down, 2: a usage error)."""
    print(f"error: {code}: {message}" if code else f"error: {message}", file=sys.stderr)
    if as_json:
        print(json.dumps({"error": {"code": code, "message": message, "request_id": request_id}}, indent=1))
