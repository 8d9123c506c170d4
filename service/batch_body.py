"""The body of a batch forecast call (``POST /v1/models/{model}/forecast``): its options
are checked for the whole call, its items one by one, so that a bad item fails alone
with an error in the response and the others are served."""

from __future__ import annotations

from typing import Any

from statecast.models import StatecastError
from statecast.service.calls import StreamCall
from statecast.service.errors import BatchTooLarge, RequestError
from statecast.service.schemas import BatchOptions, validated

#: Options of the whole call an item inherits unless it sets them itself.
INHERITED = ("horizon", "commit", "reset")


def batch_items(body: Any, max_items: int) -> list[Any]:
    """The items of a batch body whose options (``BatchOptions``) are valid: a body that is
    not ``{"items": [...]}``, bad options, no items or too many refuse the whole call."""
    if not isinstance(body, dict) or not isinstance(body.get("items"), list):
        raise RequestError('a batch body is {"items": [{"stream": ..., "window": ...}, ...]}')
    validated(BatchOptions, {key: value for key, value in body.items() if key != "items"})
    items = body["items"]
    if not items:
        raise RequestError("items must not be empty")
    if len(items) > max_items:
        raise BatchTooLarge(f"{len(items)} items; at most {max_items} per call",
                            limit=max_items)
    return items


def batch_calls(body: Any, max_items: int) -> list[tuple[Any, StreamCall | StatecastError]]:
    """``(stream, call)`` per item of a batch body, the call being the item's error where the
    item is not a valid forecast body of its own (no ``"stream"`` string, a stream named
    twice, a field the schema refuses): that item fails alone."""
    items = batch_items(body, max_items)
    seen: set[str] = set()
    calls: list[tuple[Any, StreamCall | StatecastError]] = []
    for item in items:
        stream = item.get("stream") if isinstance(item, dict) else None
        if not isinstance(stream, str):
            calls.append((stream, RequestError("each item needs a \"stream\" string")))
            continue
        if stream in seen:
            calls.append((stream, RequestError("each item needs a distinct stream id")))
            continue
        seen.add(stream)
        try:
            calls.append((stream, StreamCall.from_json(item_body(body, item))))
        except StatecastError as error:
            calls.append((stream, error))
    return calls


def item_body(body: dict[str, Any], item: dict[str, Any]) -> dict[str, Any]:
    """An item as a single-stream forecast body: the call's options, overridden by the
    item's own fields, without its ``stream``."""
    merged = {key: body[key] for key in INHERITED if key in body}
    merged.update({key: value for key, value in item.items() if key != "stream"})
    return merged


def item_error(stream: Any, error: StatecastError) -> dict[str, Any]:
    """An item's answer when it fails: ``{"stream", "error": {"code", "message", ...}}``,
    the error body of a single call."""
    details = error.details if isinstance(error, RequestError) else {}
    return {"stream": stream, "error": {"code": error.code, "message": str(error), **details}}
