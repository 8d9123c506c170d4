"""The ``before_request`` hook that checks every request's path parameters against its
route's pydantic model (:mod:`service.paths`), before the view reads them."""

from __future__ import annotations

from flask import request

from statecast.service.paths import check_path
from statecast.service.routes import operation_for
from statecast.service.runtime import runtime


def check_path_parameters() -> None:
    """Refuse a request whose path parameters its route's model does not accept (422
    ``invalid_name`` or ``invalid_stream_id``; 400 on ``/v2``)."""
    rule = request.url_rule
    if rule is None or not request.view_args:
        return
    operation = operation_for(rule.rule, request.method)
    if operation is not None:
        check_path(operation.path, operation.reference, request.view_args,
                   runtime().settings.max_stream_id_length)
