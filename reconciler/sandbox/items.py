"""DynamoDB item reads answered at the speed DynamoDB answers them.

moto shapes every answer through a generic serializer that walks the operation's output
model value by value: about 0.4 ms for each lease item, so one Query of 500 leases holds
the sandbox's DynamoDB (one request at a time) for ~0.2 s, where DynamoDB takes a few
milliseconds. The answers to item reads are already in DynamoDB's JSON (attribute maps of
strings and numbers) when moto's backend returns them, so they are sent as they are. Any
answer holding something JSON cannot carry as it stands (binary attributes, timestamps)
goes through moto's serializer as before.
"""

from __future__ import annotations

import json
import threading
import uuid
from typing import Any

from moto.core.common_types import TYPE_RESPONSE
from moto.core.responses import ActionContext, ActionResult
from moto.dynamodb.responses import DynamoResult

ITEM_READS = frozenset({"Query", "GetItem", "BatchGetItem"})
_INSTALL_LOCK = threading.Lock()


def _answer(self: ActionResult, context: ActionContext) -> TYPE_RESPONSE:
    if context.operation_model.name in ITEM_READS:
        try:
            body = json.dumps(self.result, separators=(",", ":"))
        except (TypeError, ValueError):
            pass  # bytes or datetimes: moto's serializer knows their wire form
        else:
            headers: dict[str, Any] = {
                "Content-Type": "application/x-amz-json-1.0",
                "x-amzn-RequestId": str(uuid.uuid4()),
            }
            return 200, headers, body
    return _MOTO(self, context)


_MOTO = DynamoResult.execute_result


def install() -> None:
    with _INSTALL_LOCK:
        if DynamoResult.execute_result is not _answer:
            DynamoResult.execute_result = _answer  # type: ignore[method-assign]
