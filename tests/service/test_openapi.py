"""/openapi.json: complete (every route the app serves), and generated from the models
that validate requests."""

import re

from statecast.service.app import create_app
from statecast.service.schemas import ForecastRequestBody
from statecast.service.settings import Settings


def test_every_route_is_documented_with_its_methods(tmp_path):
    app = create_app(Settings(registry=tmp_path / "registry", store="memory"), warm=False)
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
    app = create_app(Settings(registry=tmp_path / "registry", store="memory"), warm=False)
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
