"""The HTTP contract around the routes: 405 with ``Allow`` (RFC 9110) and a JSON body on
every route, and non-finite JSON numbers (``NaN``, ``Infinity``) refused where they are:
the one batch item that holds them, or the whole single-stream call."""

import re

import pytest

from statecast.service.app import create_app
from statecast.service.settings import Settings
from statecast.service.startup import serving_app

BATCH = "/v1/models/sunspots/forecast"
SAMPLE = {"model": "sunspots", "stream": "s-1", "version": "1", "alias": "production"}


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    app = serving_app(Settings(registry=tmp_path_factory.mktemp("contract") / "registry",
                               store="memory", admin_token="t0ken", access_log=False),
                      warm=False)
    yield app.test_client()
    app.extensions["statecast"].close()


def _rules():
    app = create_app(Settings(registry="unused-registry", store="memory"))
    try:
        rules: dict[str, set[str]] = {}
        for rule in app.url_map.iter_rules():
            if rule.endpoint != "static":
                rules.setdefault(rule.rule, set()).update(rule.methods)
        return sorted(rules.items())
    finally:
        app.extensions["statecast"].close()


@pytest.mark.parametrize("rule,methods", _rules(), ids=lambda value: str(value))
def test_every_route_answers_405_with_allow_and_a_json_body(client, rule, methods):
    path = re.sub(r"<(\w+)>", lambda match: SAMPLE[match.group(1)], rule)
    for method in sorted({"GET", "POST", "PUT", "DELETE", "PATCH"} - methods):
        response = client.open(path, method=method)
        assert response.status_code == 405, (method, path)
        allowed = {value.strip() for value in response.headers["Allow"].split(",")}
        assert allowed == methods, (method, path)
        error = response.get_json()["error"]
        if path.startswith("/v2"):
            assert isinstance(error, str)
        else:
            assert error["code"] == "method_not_allowed"


def post_raw(client, url, text):
    return client.post(url, data=text, content_type="application/json")


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
def test_a_batch_item_with_a_non_finite_value_fails_alone(client, token):
    suffix = token.replace("-", "minus")
    streams = [f"{name}-{suffix}" for name in ("ok", "nan", "nan-horizon", "ok-2")]
    response = post_raw(client, BATCH, '{"items": ['
                        f'{{"stream": "{streams[0]}", "window": [1.0, 2.0]}},'
                        f'{{"stream": "{streams[1]}", "window": [1.0, {token}]}},'
                        f'{{"stream": "{streams[2]}", "window": [1.0], "horizon": {token}}},'
                        f'{{"stream": "{streams[3]}", "window": [3.0]}}]}}')
    assert response.status_code == 200
    items = response.get_json()["items"]
    assert [item["stream"] for item in items] == streams
    assert items[0]["step"] == 2 and items[3]["step"] == 1
    for refused in items[1:3]:
        assert refused["error"]["code"] == "non_finite_value", refused
    store = client.application.extensions["statecast"].store
    assert store.get("sunspots", streams[1]) is None
    assert store.get("sunspots", streams[2]) is None


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
def test_a_non_finite_value_refuses_a_single_stream_call(client, token):
    for body in (f'{{"window": [1.0, {token}]}}', f'{{"window": [[1.0], [{token}]]}}',
                 f'{{"window": [1.0], "horizon": {token}}}'):
        response = post_raw(client, "/v1/models/sunspots/streams/single/forecast", body)
        assert response.status_code == 422, body
        assert response.get_json()["error"]["code"] == "non_finite_value", body
    assert client.application.extensions["statecast"].store.get("sunspots", "single") is None


def test_non_finite_batch_options_refuse_the_whole_call(client):
    response = post_raw(client, BATCH,
                        '{"horizon": NaN, "items": [{"stream": "x", "window": [1.0]}]}')
    assert response.status_code == 422
    assert response.get_json()["error"]["code"] == "non_finite_value"


@pytest.mark.parametrize("model", ["sunspots@9", "sunspots@nope", "nope"])
def test_an_unknown_model_version_or_alias_fails_the_whole_batch(client, model):
    response = post_raw(client, f"/v1/models/{model}/forecast",
                        '{"items": [{"stream": "x", "window": [NaN]},'
                        ' {"stream": "y", "window": [1.0]}]}')
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "model_not_found"


def test_text_that_is_not_json_is_still_malformed(client):
    for text in ('{"window": [nan]}', '{"window": [1.0]', "[" * 100_000):
        response = post_raw(client, "/v1/models/sunspots/streams/s/forecast", text)
        assert response.status_code == 400
        assert response.get_json()["error"]["code"] == "malformed_json"
