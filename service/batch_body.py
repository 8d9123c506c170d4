"""The body of a batch forecast call (``POST /v1/models/{model}/forecast``): its options
are checked for the whole call, its items one by one, so that a bad item fails alone
with an error in the response and the others are served."""

from __future__ import annotations

from typing import Any

from statecast.models import StatecastError
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


def item_streams(items: list[Any]) -> tuple[list[int], dict[int, dict[str, Any]]]:
    """The indexes of the items that name a distinct stream, and the errors of the others
    (no ``"stream"`` string, or a stream named twice)."""
    seen: set[str] = set()
    valid: list[int] = []
    errors: dict[int, dict[str, Any]] = {}
    for index, item in enumerate(items):
        stream = item.get("stream") if isinstance(item, dict) else None
        if not isinstance(stream, str):
            errors[index] = item_error(stream, RequestError(
                "each item needs a \"stream\" string"))
            continue
        if stream in seen:
            errors[index] = item_error(stream, RequestError(
                "each item needs a distinct stream id"))
            continue
        seen.add(stream)
        valid.append(index)
    return valid, errors


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
