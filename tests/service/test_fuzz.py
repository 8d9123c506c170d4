"""Schemathesis fuzzes every route from /openapi.json with its full check set (what
``schemathesis run --checks all`` runs: server errors, status codes, content types,
headers, response schemas, schema-valid requests accepted, schema-violating requests
refused, missing auth, undeclared methods with ``Allow``, ...) over its examples, coverage
and fuzzing phases; and a rejected request (4xx) changes no stream state.

The exceptions, each narrow and checked, never a check switched off for a route:

- The batch route (``POST /v1/models/{model}/forecast``) answers schema-violating items
  item by item: a request whose items break the schema is answered 200 with those items'
  errors (and the others served), not refused whole.
- Some refusals depend on what no schema can know, so a schema-valid request may get them:
  the called model (here the bundled ``sunspots``: one feature, horizon 12, no future
  covariates, one LSTM layer of 32 units, no calibration for intervals), relations between
  fields (a tensor's data holds as many values as its shape says;
  ``sequence_start``/``_end``/``_step`` need a ``sequence_id``) and the content of an
  uploaded model file. /v1 says which by its error
  code (:data:`SCHEMA_BLIND`); /v2 errors carry only a message, so the request itself is
  checked against those rules (:func:`v2_breaks_unstated_rule`).
- Admin routes answer 403 while no admin token is configured; this app has one, so they
  are fuzzed behind it (401 without it).
"""

import math
import tempfile
from pathlib import Path
from typing import Any

import hypothesis
import pytest
import schemathesis
from flask import Flask
from schemathesis.checks import CHECKS, load_all_checks
from schemathesis.config import SchemathesisConfig

from statecast.service.settings import Settings
from statecast.service.startup import serving_app

pytestmark = pytest.mark.slow

TOKEN = "fuzz-token"
EXAMPLES = 40
SEEDED = {"demo-1": [5.0, 11.0, 16.0], "demo-2": [1.0]}
BATCH = "/v1/models/{model}/forecast"
PUBLISH = "/v1/admin/models/{model}/versions"
#: /v1 codes of refusals that depend on the model or the server's limits, not the schema.
SCHEMA_BLIND = {"wrong_feature_count", "horizon_too_long", "unexpected_future",
                "missing_future", "window_too_long", "insufficient_history", "state_mismatch",
                "body_too_large", "import_failed", "level_unavailable"}
#: The bundled model's inputs, as :func:`v2_breaks_unstated_rule` checks them.
FEATURES, HORIZON = 1, 12


def _seeded_app(root: Path) -> Flask:
    """An app on a fresh registry and sqlite store, its streams SEEDED, built at import:
    schemathesis' pytest integration needs the schema when it collects the tests (its
    fixture-based loader does not run on this pytest)."""
    app = serving_app(Settings(registry=root / "registry", store=f"sqlite:{root / 'state.db'}",
                               admin_token=TOKEN, max_window=200, access_log=False),
                      warm=False)
    client = app.test_client()
    for stream, window in SEEDED.items():
        assert client.post(f"/v1/models/sunspots/streams/{stream}/forecast",
                           json={"window": window}).status_code == 200
    return app


def _schema(app: Flask) -> Any:
    """The app's /openapi.json with the run's settings: every phase but the stateful one
    (no links), positive and negative cases, the admin token on every call."""
    config = SchemathesisConfig.from_dict({
        "headers": {"Authorization": f"Bearer {TOKEN}"},
        "generation": {"mode": "all", "max-examples": EXAMPLES, "deterministic": True,
                       "database": "none"},
        "phases": {"examples": {"enabled": True}, "coverage": {"enabled": True},
                   "fuzzing": {"enabled": True}, "stateful": {"enabled": False}},
        "dictionaries": {name: {"values": values} for name, values in KNOWN.items()},
        "parameters": {f"path.{name}": {"dictionary": name, "probability": 0.8}
                       for name in KNOWN},
    })
    return schemathesis.openapi.from_wsgi("/openapi.json", app, config=config)


#: Path parameters drawn from these most of the time, so that calls reach existing models
#: and streams rather than answer 404 (the rest are generated from the schema).
KNOWN = {"model": ["sunspots"], "stream": [*SEEDED, "fresh-1"],
         "version": ["1", "production", "latest"], "alias": ["production", "staging"]}
_FOLDER = tempfile.TemporaryDirectory(prefix="statecast-fuzz-")
#: The admin routes get an app of their own: they may delete the model the others call.
APPS = {"serving": _seeded_app(Path(_FOLDER.name) / "serving"),
        "admin": _seeded_app(Path(_FOLDER.name) / "admin")}
serving_schema = _schema(APPS["serving"]).exclude(path_regex="^/v1/admin/")
admin_schema = _schema(APPS["admin"]).include(path_regex="^/v1/admin/")


@pytest.fixture(scope="module", autouse=True)
def _close_apps():
    yield
    for app in APPS.values():
        app.extensions["statecast"].close()


def snapshot(app) -> dict:
    store = app.extensions["statecast"].store
    return {(r.model, r.stream): (r.version, r.step, r.revision, r.state.tobytes(),
                                  r.tail.tobytes(), r.expired) for r in store.scan()}


def _values(data) -> list:
    found = []
    for value in data:
        found.extend(_values(value) if isinstance(value, list) else [value])
    return found


def v2_breaks_unstated_rule(body) -> bool:
    """Whether a schema-valid /v2 infer body breaks a rule the schema cannot state: the
    bundled model's inputs (one ``window`` of FEATURES values per step, no ``future``, a
    horizon of at most HORIZON, no calibration: no ``level``), a tensor's data against its
    shape, the sequence flags without a sequence, a sequence of more than one stream."""
    if not isinstance(body, dict):
        return True  # binary framing (Inference-Header-Content-Length) is not a schema
    inputs = body["inputs"]
    if [tensor["name"] for tensor in inputs] != ["window"]:
        return True
    tensor = inputs[0]
    if tensor["shape"][2] != FEATURES or tensor.get("data") is None or (
            (tensor.get("parameters") or {}).get("binary_data_size") is not None):
        return True
    if len(_values(tensor["data"])) != math.prod(tensor["shape"]):
        return True
    parameters = body.get("parameters") or {}
    sequence = parameters.get("sequence_id") not in (None, 0, "")
    flags = parameters.get("sequence_start") or parameters.get("sequence_end") or (
        parameters.get("sequence_step") is not None)
    return ((flags and not sequence) or (sequence and tensor["shape"][0] != 1)
            or (parameters.get("horizon") or 0) > HORIZON
            or parameters.get("level") is not None)


def refused_for_what_no_schema_says(case, response) -> bool:
    """A schema-valid request refused for the model, the server's limits or relations
    between fields (the module docstring's second exception)."""
    if case.meta is None or not case.meta.generation.mode.is_positive:
        return False
    if case.path == PUBLISH:
        return response.status_code == 422  # a model file's content, not a schema's
    if case.path.startswith("/v2/"):
        return response.status_code == 400 and v2_breaks_unstated_rule(case.body)
    if response.status_code not in (413, 422):
        return False
    error = response.json().get("error")
    return isinstance(error, dict) and error.get("code") in SCHEMA_BLIND


def answered_item_by_item(case, response) -> bool:
    """A batch whose schema-violating items got their errors in a 200 answer (the module
    docstring's first exception)."""
    if case.path != BATCH or case.method.upper() != "POST" or response.status_code != 200:
        return False
    return any("error" in item for item in response.json()["items"])


def _checks() -> list:
    """Every check of ``--checks all``, the two data checks with their exception."""
    load_all_checks()
    checks = list(CHECKS.get_all())
    by_name = {check.__name__: check for check in checks}
    positive, negative = by_name["positive_data_acceptance"], by_name["negative_data_rejection"]

    def positive_data_acceptance(ctx, response, case):
        if refused_for_what_no_schema_says(case, response):
            return None
        return positive(ctx, response, case)

    def negative_data_rejection(ctx, response, case):
        if answered_item_by_item(case, response):
            return None
        return negative(ctx, response, case)

    wrapped = {"positive_data_acceptance": positive_data_acceptance,
               "negative_data_rejection": negative_data_rejection}
    return [wrapped.get(check.__name__, check) for check in checks]


CHECKED = _checks()


def check_case(case, app) -> None:
    """Call, check that a 4xx left every stream as it was, run every check."""
    before = snapshot(app)
    response = case.call()
    if 400 <= response.status_code < 500:
        assert snapshot(app) == before, (case.method, case.formatted_path,
                                         response.text[:300])
    case.validate_response(response, checks=CHECKED)


SETTINGS = hypothesis.settings(deadline=None, derandomize=True, database=None,
                               suppress_health_check=list(hypothesis.HealthCheck))


@serving_schema.parametrize()
@SETTINGS
def test_serving_routes(case):
    check_case(case, APPS["serving"])


@admin_schema.parametrize()
@SETTINGS
def test_admin_routes(case):
    check_case(case, APPS["admin"])


def test_what_the_exceptions_let_through_is_answered_as_documented(tmp_path):
    """A schema-violating batch item fails alone, the model's feature count is a 422 with
    a code of SCHEMA_BLIND, a /v2 tensor whose data does not fit its shape a 400 (on an
    app of its own: the fuzzed one's registry is the admin routes' to change)."""
    app = serving_app(Settings(registry=tmp_path / "registry", store="memory",
                               access_log=False), warm=False)
    client = app.test_client()
    batch = client.post("/v1/models/sunspots/forecast", json={"items": [
        {"stream": "fuzz-ok", "window": [1.0]}, {"stream": "bad id*", "window": [1.0]}]})
    items = batch.get_json()["items"]
    assert batch.status_code == 200 and "forecast" in items[0]
    assert items[1]["error"]["code"] == "invalid_stream_id"
    wide = client.post("/v1/models/sunspots/streams/fuzz-wide/forecast",
                       json={"window": [[1.0, 2.0]]})
    assert wide.status_code == 422 and wide.get_json()["error"]["code"] in SCHEMA_BLIND
    body = {"inputs": [{"name": "window", "datatype": "FP32", "shape": [1, 2, 1],
                        "data": [1.0]}]}
    assert v2_breaks_unstated_rule(body)
    assert client.post("/v2/models/sunspots/infer", json=body).status_code == 400
    app.extensions["statecast"].close()
