"""Path parameters of the HTTP API as pydantic models: the server validates every route's
path parameters with them (:func:`check_path_parameters`, a ``before_request`` hook of
every blueprint) and ``/openapi.json`` publishes their JSON schemas (:mod:`service.openapi`),
so what the document accepts the server accepts.

The patterns are the ones :mod:`models.names` and :mod:`service.requests` enforce: a name
(model, version, alias) never contains ``@``; a model reference is a name, optionally
``@version`` or ``@alias``; a stream id is letters, digits and ``. _ : -`` up to the
server's ``max_stream_id_length``. Which routes take a reference and which a plain name is
said by each route (:attr:`service.routes.Operation.reference`): routes that name a version
in a path segment of their own, and the admin routes, take a plain name.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import Annotated, Any

from flask import request
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, create_model

from statecast.models.errors import InvalidName
from statecast.models.names import NAME_PATTERN, check_name, split_reference
from statecast.service.errors import InvalidStreamId
from statecast.service.requests import check_stream_id
from statecast.service.routes import operation_for
from statecast.service.runtime import runtime
from statecast.service.schemas import STREAM_ID

_NAME = NAME_PATTERN.pattern
ModelName = Annotated[str, StringConstraints(pattern=f"^{_NAME}$"), Field(
    description="A model name", examples=["sunspots"])]
ModelReference = Annotated[str, StringConstraints(pattern=f"^{_NAME}(@{_NAME})?$"), Field(
    description="A model name, optionally @version or @alias", examples=["sunspots"])]
Version = Annotated[str, StringConstraints(pattern=f"^{_NAME}$"), Field(
    description="A version, or an alias of one", examples=["1"])]
Alias = Annotated[str, StringConstraints(pattern=f"^{_NAME}$"), Field(
    description="An alias name", examples=["production"])]


class _Path(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


def _stream_id(max_length: int) -> Any:
    return Annotated[str, StringConstraints(pattern=f"^{STREAM_ID.pattern}$", min_length=1,
                                            max_length=max_length),
                     Field(description="A stream id", examples=["demo-1"])]


def parameter_names(path: str) -> list[str]:
    """``/v1/models/{model}/streams/{stream}`` -> ``["model", "stream"]``."""
    return re.findall(r"{(\w+)}", path)


@functools.cache
def path_model(path: str, reference: bool, max_stream_id: int) -> type[BaseModel]:
    """The model of ``path``'s parameters (OpenAPI form, ``{name}``): ``model`` a reference
    when ``reference``, else a plain name; stream ids at most ``max_stream_id`` long."""
    types: dict[str, Any] = {"model": ModelReference if reference else ModelName,
                             "stream": _stream_id(max_stream_id), "version": Version,
                             "alias": Alias}
    fields: dict[str, Any] = {name: (types[name], ...) for name in parameter_names(path)}
    return create_model("PathParameters", __base__=_Path, **fields)


def check_path(path: str, reference: bool, values: Mapping[str, str],
               max_stream_id: int) -> None:
    """Refuse path parameters ``path_model`` does not accept: ``invalid_stream_id`` for a
    stream id, ``invalid_name`` for anything else (with the name checkers' messages)."""
    try:
        path_model(path, reference, max_stream_id).model_validate(dict(values))
    except ValidationError as error:
        field = str(error.errors()[0]["loc"][0])
        value = values.get(field, "")
        if field == "stream":
            check_stream_id(value, max_stream_id)
            raise InvalidStreamId(f"invalid stream id {value[:64]!r}",
                                  limit=max_stream_id) from None
        if field == "model" and reference:
            split_reference(value)
        elif field == "model" and "@" in value:
            raise InvalidName(f"invalid model name {value!r}: here the version is a path "
                              "segment of its own, the name has no @") from None
        check_name(value, "model name" if field == "model" else field)
        raise InvalidName(f"invalid {field} {value!r}") from None


@functools.lru_cache(maxsize=65536)
def _accepted(rule: str, method: str, values: tuple[tuple[str, str], ...],
              max_stream_id: int) -> bool:
    """Check once per distinct route and parameters (a stream's calls repeat them; the
    pydantic validation costs ~30 us of a ~400 us call): True when accepted, an error
    (not cached) otherwise."""
    operation = operation_for(rule, method)
    if operation is not None:
        check_path(operation.path, operation.reference, dict(values), max_stream_id)
    return True


def check_path_parameters() -> None:
    """Refuse a request whose path parameters its route's model does not accept (422
    ``invalid_name`` or ``invalid_stream_id``; 400 on ``/v2``)."""
    rule = request.url_rule
    if rule is None or not request.view_args:
        return
    _accepted(rule.rule, request.method, tuple(request.view_args.items()),
              runtime().settings.max_stream_id_length)
