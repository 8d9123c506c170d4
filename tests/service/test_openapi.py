"""/openapi.json: complete (every route the app serves), generated from the models that
validate requests (bodies and path parameters), and in agreement with the server: a
request the document accepts the server accepts, and the other way round (for what a
schema can say: the model called and the server's limits are not in it)."""

import re
from urllib.parse import quote

import pytest
from jsonschema import Draft202012Validator

from statecast.service.app import create_app
from statecast.service.paths import path_model
from statecast.service.schemas import ForecastRequestBody
from statecast.service.settings import Settings
from statecast.service.startup import serving_app


def test_every_route_is_documented_with_its_methods(tmp_path):
    app = create_app(Settings(registry=tmp_path / "registry", store="memory"))
    try:
        document = app.test_client().get("/openapi.json").get_json()
        served = set()
        for rule in app.url_map.iter_rules():
            if rule.endpoint == "static":
                continue
            path = re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", r"{\1}", rule.rule)
            for method in rule.methods - {"HEAD", "OPTIONS"}:
                served.add((path, method.lower()))
        documented = {(path, method) for path, item in document["paths"].items()
                      for method in item}
        assert served == documented
        assert document["openapi"].startswith("3.1")
    finally:
        app.extensions["statecast"].close()


def test_request_schemas_are_the_validating_models(tmp_path):
    app = create_app(Settings(registry=tmp_path / "registry", store="memory"))
    try:
        document = app.test_client().get("/openapi.json").get_json()
    finally:
        app.extensions["statecast"].close()
    operation = document["paths"]["/v1/models/{model}/streams/{stream}/forecast"]["post"]
    ref = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    published = document["components"]["schemas"][ref.rsplit("/", 1)[1]]
    expected = ForecastRequestBody.model_json_schema(mode="validation")
    assert published["properties"] == expected["properties"]
    assert published["required"] == ["window"]
    assert published["additionalProperties"] is False


# -- the document and the server agree ----------------------------------------------------


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A started app and its document."""
    app = serving_app(Settings(registry=tmp_path_factory.mktemp("agree") / "registry",
                               store="memory", access_log=False), warm=False)
    client = app.test_client()
    yield client, client.get("/openapi.json").get_json()
    app.extensions["statecast"].close()


def body_schema(document, path, method="post"):
    """A validator of the operation's JSON body (its $refs point into the components,
    carried along)."""
    ref = document["paths"][path][method]["requestBody"]["content"]["application/json"][
        "schema"]["$ref"]
    return Draft202012Validator({"$ref": ref, "components": document["components"]})


def path_schema(document, path, name, method="get"):
    parameters = document["paths"][path][method]["parameters"]
    return Draft202012Validator(next(p for p in parameters if p["name"] == name)["schema"])


FORECAST = "/v1/models/{model}/streams/{stream}/forecast"


@pytest.mark.parametrize("body,accepted", [
    ({"window": [1.0]}, True),
    ({"window": [[1.0], [2.0]]}, True),
    ({"window": []}, False),
    ({"window": [[]]}, False),
    ({"window": [[1.0], []]}, False),
    ({"window": [1.0], "horizon": 3.0}, True),
    ({"window": [1.0], "horizon": 3.5}, False),
    ({"window": [1.0], "start": 0.0}, True),
    ({"window": [1.0], "start": True}, False),
    ({"window": [1.0], "horizon": "3"}, False),
    ({"window": [1e39]}, False),
    ({"window": [-3.4e38, 3.4e38]}, True),
    ({"window": [1.0], "colour": 1}, False),
])
def test_a_forecast_body_is_accepted_by_the_document_exactly_when_by_the_server(
        served, body, accepted):
    client, document = served
    assert body_schema(document, FORECAST).is_valid(body) is accepted
    stream = f"agree-{abs(hash(str(body)))}"
    response = client.post(f"/v1/models/sunspots/streams/{stream}/forecast", json=body)
    assert (response.status_code == 200) is accepted, response.get_json()


def test_an_integral_float_horizon_counts_as_its_integer(served):
    client, document = served
    body = {"window": [1.0], "horizon": 320.0}
    assert body_schema(document, FORECAST).is_valid(body)
    response = client.post("/v1/models/sunspots/streams/h/forecast", json=body)
    # Refused for the model (a direct horizon of 12), not for being written as a float.
    assert response.get_json()["error"]["code"] == "horizon_too_long"
    three = client.post("/v1/models/sunspots/streams/h/forecast",
                        json={"window": [1.0], "horizon": 3.0}).get_json()
    assert len(three["forecast"]) == 3


@pytest.mark.parametrize("path,name,value,accepted", [
    ("/v2/models/{model}/versions/{version}", "model", "sunspots", True),
    ("/v2/models/{model}/versions/{version}", "model", "sunspots@1", False),
    ("/v2/models/{model}", "model", "sunspots@1", True),
    ("/v2/models/{model}", "model", "sunspots@1@2", False),
    ("/v1/models/{model}", "model", "sunspots@production", True),
    ("/v1/models/{model}", "model", "-sunspots", False),
    ("/v1/models/{model}/streams/{stream}", "stream", "demo:1.a_b-c", True),
    ("/v1/models/{model}/streams/{stream}", "stream", "a" * 257, False),
    ("/v1/models/{model}/streams/{stream}", "stream", "bad id", False),
])
def test_path_parameters_are_accepted_by_the_document_exactly_when_by_the_server(
        served, path, name, value, accepted):
    client, document = served
    assert path_schema(document, path, name).is_valid(value) is accepted
    values = {"model": "sunspots", "stream": "demo-1", "version": "1", name: value}
    url = re.sub(r"{(\w+)}", lambda match: quote(values[match.group(1)], safe="@"), path)
    response = client.get(url)
    refused = response.status_code in (400, 422)
    assert refused is not accepted, (url, response.status_code, response.get_json())


def test_path_parameter_schemas_are_the_validating_models(served):
    _, document = served
    parameters = document["paths"]["/v2/models/{model}/versions/{version}"]["get"][
        "parameters"]
    model = path_model("/v2/models/{model}/versions/{version}", False, 256)
    expected = model.model_json_schema()["properties"]
    for parameter in parameters:
        published = expected[parameter["name"]]
        assert parameter["schema"]["pattern"] == published["pattern"]
        assert parameter["description"] == published["description"]
