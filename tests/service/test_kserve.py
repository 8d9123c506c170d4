"""/v2 (Open Inference Protocol with Triton's extensions) through the Flask test client:
every endpoint and error path, and forecasts equal /v1's for the same history."""

import gzip
import json
import zlib

import numpy as np
import pytest

from statecast.service.settings import Settings
from statecast.service.startup import serving_app

V1 = "/v1/models/sunspots/streams/{}/forecast"
INFER = "/v2/models/sunspots/infer"
SERIES = [5.0, 11.0, 16.0, 23.0, 36.0, 58.0, 29.0, 20.0, 10.0, 8.0, 3.0, 0.0]


@pytest.fixture()
def client(tmp_path):
    app = serving_app(Settings(registry=tmp_path / "registry", store=f"sqlite:{tmp_path / 's.db'}",
                              max_streams=50, max_body_bytes=64 * 1024, access_log=False))
    yield app.test_client()
    app.extensions["statecast"].close()


def window(values, nested=True):
    data = [[[v] for v in values]] if nested else list(values)
    return {"name": "window", "datatype": "FP32", "shape": [1, len(values), 1], "data": data}


def infer(client, inputs, parameters=None, url=INFER, **extra):
    body = {"inputs": inputs, **extra}
    if parameters is not None:
        body["parameters"] = parameters
    return client.post(url, json=body)


def forecast_of(response):
    assert response.status_code == 200, response.get_data(as_text=True)
    out = response.get_json()["outputs"][0]
    assert out["name"] == "forecast" and out["datatype"] == "FP32"
    return np.asarray(out["data"], np.float32).reshape(out["shape"])


def v1_forecast(client, stream, values, **extra):
    response = client.post(V1.format(stream), json={"window": values, **extra})
    assert response.status_code == 200, response.get_json()
    return np.asarray(response.get_json()["forecast"], np.float32)


def test_health_server_and_model_metadata(client):
    assert client.get("/v2/health/live").status_code == 200
    assert client.get("/v2/health/ready").status_code == 200
    server = client.get("/v2").get_json()
    assert server["name"] == "statecast"
    assert {"sequence", "sequence(string_id)", "binary_tensor_data"} <= set(server["extensions"])
    for url in ("/v2/models/sunspots", "/v2/models/sunspots/versions/1",
                "/v2/models/sunspots/versions/production"):
        meta = client.get(url).get_json()
        assert meta["name"] == "sunspots" and meta["versions"] == ["1"]
        assert meta["inputs"] == [{"name": "window", "datatype": "FP32", "shape": [-1, -1, 1]}]
        assert meta["outputs"] == [{"name": "forecast", "datatype": "FP32",
                                    "shape": [-1, 12, 1]}]
    assert client.get("/v2/models/sunspots/ready").status_code == 200
    assert client.get("/v2/models/sunspots/versions/1/ready").status_code == 200
    for url in ("/v2/models/nope", "/v2/models/nope/ready", "/v2/models/sunspots/versions/9",
                "/v2/models/sunspots/versions/9/ready"):
        response = client.get(url)
        assert response.status_code == 404 and isinstance(response.get_json()["error"], str)


def test_stateless_calls_equal_v1_on_fresh_streams_and_store_nothing(client):
    three = [SERIES[:4], SERIES[2:6], SERIES[5:9]]
    body = {"name": "window", "datatype": "FP32", "shape": [3, 4, 1],
            "data": [v for values in three for v in values]}  # flat, row-major
    got = forecast_of(infer(client, [body], {"horizon": 6}, id="req-7"))
    assert got.shape == (3, 6, 1)
    for index, values in enumerate(three):
        np.testing.assert_array_equal(got[index], v1_forecast(client, f"fresh-{index}", values,
                                                              horizon=6))
    nested = forecast_of(infer(client, [window(SERIES[:4])]))
    np.testing.assert_array_equal(nested[0, :6], got[0])
    response = infer(client, [window(SERIES[:4], nested=False)], id="abc")
    assert response.get_json()["id"] == "abc" and "parameters" not in response.get_json()
    assert client.get("/v1/models/sunspots/streams/0").status_code == 404


@pytest.mark.parametrize("sequence", [42, "plant-7"])
def test_a_sequence_is_a_stream_that_matches_v1(client, sequence):
    chunks = [SERIES[:5], SERIES[5:9], SERIES[9:]]
    start = forecast_of(infer(client, [window(chunks[0])],
                              {"sequence_id": sequence, "sequence_start": True}))
    middle = infer(client, [window(chunks[1])], {"sequence_id": sequence})
    assert middle.get_json()["parameters"] == {"sequence_id": sequence}
    # The same history on /v1, under another stream id: the same forecasts, bit for bit.
    np.testing.assert_array_equal(start[0], v1_forecast(client, "twin", chunks[0]))
    np.testing.assert_array_equal(forecast_of(middle)[0], v1_forecast(client, "twin", chunks[1]))
    described = client.get(f"/v1/models/sunspots/streams/{sequence}").get_json()
    assert described["step"] == 9
    # A retry with sequence_step consumes nothing twice and answers the same.
    retry = forecast_of(infer(client, [window(chunks[1])],
                              {"sequence_id": sequence, "sequence_step": 5}))
    np.testing.assert_array_equal(retry, forecast_of(middle))
    assert client.get(f"/v1/models/sunspots/streams/{sequence}").get_json()["step"] == 9
    last = forecast_of(infer(client, [window(chunks[2])],
                             {"sequence_id": sequence, "sequence_end": True}))
    np.testing.assert_array_equal(last[0], v1_forecast(client, "twin", chunks[2]))
    assert client.get(f"/v1/models/sunspots/streams/{sequence}").status_code == 404
    gone = infer(client, [window(chunks[2])], {"sequence_id": sequence})
    assert gone.status_code == 404 and "sequence_start" in gone.get_json()["error"]


def test_sequence_start_starts_a_stream_over(client):
    infer(client, [window(SERIES[:6])], {"sequence_id": 5, "sequence_start": True})
    again = forecast_of(infer(client, [window(SERIES[:3])],
                              {"sequence_id": 5, "sequence_start": True}))
    np.testing.assert_array_equal(again[0], v1_forecast(client, "fresh", SERIES[:3]))
    assert client.get("/v1/models/sunspots/streams/5").get_json()["step"] == 3


def binary_request(values, header_extra=None, announce=None):
    data = np.asarray(values, "<f4").tobytes()
    header = {"inputs": [{"name": "window", "datatype": "FP32", "shape": [1, len(values), 1],
                          "parameters": {"binary_data_size": announce or len(data)}}],
              "outputs": [{"name": "forecast", "parameters": {"binary_data": True}}],
              **(header_extra or {})}
    head = json.dumps(header).encode()
    return head + data, {"Inference-Header-Content-Length": str(len(head)),
                         "Content-Type": "application/octet-stream"}


def test_binary_inputs_and_outputs(client):
    body, headers = binary_request(SERIES[:6])
    response = client.post(INFER, data=body, headers=headers)
    assert response.status_code == 200
    assert response.content_type == "application/octet-stream"
    size = int(response.headers["Inference-Header-Content-Length"])
    raw = response.get_data()
    answer = json.loads(raw[:size])
    out = answer["outputs"][0]
    assert out["parameters"] == {"binary_data_size": 48} and "data" not in out
    got = np.frombuffer(raw[size:], "<f4").reshape(out["shape"])
    np.testing.assert_array_equal(got[0], v1_forecast(client, "b", SERIES[:6]))
    as_json = infer(client, [window(SERIES[:6])], {"binary_data_output": False})
    np.testing.assert_array_equal(forecast_of(as_json), got)
    everything = infer(client, [window(SERIES[:6])], {"binary_data_output": True})
    assert everything.content_type == "application/octet-stream"


@pytest.mark.parametrize("encoding,compress", [("gzip", gzip.compress),
                                               ("deflate", zlib.compress)])
def test_compressed_request_bodies(client, encoding, compress):
    plain = json.dumps({"inputs": [window(SERIES[:4])]}).encode()
    response = client.post(INFER, data=compress(plain), headers={
        "Content-Encoding": encoding, "Content-Type": "application/json"})
    np.testing.assert_array_equal(forecast_of(response)[0], v1_forecast(client, "z", SERIES[:4]))


def test_a_version_can_be_chosen(client):
    url = "/v2/models/sunspots/versions/1/infer"
    got = infer(client, [window(SERIES[:4])], url=url)
    assert got.get_json()["model_version"] == "1"
    default = infer(client, [window(SERIES[:4])])
    np.testing.assert_array_equal(forecast_of(got), forecast_of(default))
    assert infer(client, [window(SERIES[:4])], url="/v2/models/sunspots/versions/7/infer"
                 ).status_code == 404


@pytest.mark.parametrize("change,status,words", [
    (lambda b: b["inputs"][0].update(datatype="FP64"), 400, "FP32"),
    (lambda b: b["inputs"][0].update(shape=[1, 3]), 400, "shape"),
    (lambda b: b["inputs"][0].update(shape=[1, 5, 1]), 400, "needs 5"),
    (lambda b: b["inputs"][0].update(shape=[1, 4, 2], data=[1.0] * 8), 400, "the model takes 1"),
    (lambda b: b["inputs"][0].update(data=[[["1"], [2.0], [3.0], [4.0]]]), 400, "valid number"),
    (lambda b: b["inputs"][0].update(data=[[[1.0], [2.0], [3.0], [1e39]]]), 400, "finite"),
    (lambda b: b["inputs"][0].update(name="x"), 400, "'window' or 'future'"),
    (lambda b: b["inputs"].append(dict(b["inputs"][0])), 400, "once each"),
    (lambda b: b.update(inputs=[]), 400, "inputs"),
    (lambda b: b.update(outputs=[{"name": "other"}]), 400, "'forecast'"),
    (lambda b: b.update(parameters={"horizon": 0}), 400, "horizon"),
    (lambda b: b.update(parameters={"horizon": 13}), 400, "exceeds"),
    (lambda b: b.update(parameters={"sequence_id": -3}), 400, "greater than or equal to 0"),
    (lambda b: b.update(parameters={"sequence_id": "bad id!", "sequence_start": True}), 400,
     "should match pattern"),
    (lambda b: b.update(parameters={"sequence_id": 3, "sequence_start": "yes"}), 400,
     "valid boolean"),
    (lambda b: b.update(parameters={"sequence_end": True}), 400, "need a sequence_id"),
    (lambda b: b["inputs"][0].update(shape=[2, 2, 1]) or b.update(
        parameters={"sequence_id": 3, "sequence_start": True}), 400, "batch size 1"),
    (lambda b: b.update(parameters={"sequence_id": 99}), 404, "unknown sequence"),
])
def test_error_paths(client, change, status, words):
    body = {"inputs": [window(SERIES[:4])]}
    change(body)
    response = client.post(INFER, json=body)
    assert response.status_code == status, response.get_json()
    assert words in response.get_json()["error"]
    assert set(response.get_json()) == {"error"}


def test_framing_and_encoding_errors(client):
    body, headers = binary_request(SERIES[:4], announce=12)
    assert client.post(INFER, data=body, headers=headers).status_code == 400
    body, headers = binary_request(SERIES[:4])
    nan = body[:-4] + np.float32("nan").tobytes()
    response = client.post(INFER, data=nan, headers=headers)
    assert response.status_code == 400 and "finite" in response.get_json()["error"]
    headers["Inference-Header-Content-Length"] = "99999"
    assert client.post(INFER, data=body, headers=headers).status_code == 400
    assert client.post(INFER, data=b"not gzip", headers={"Content-Encoding": "gzip"}
                       ).status_code == 400
    assert client.post(INFER, data=b"{}", headers={"Content-Encoding": "br"}).status_code == 415
    bomb = gzip.compress(b" " * (1 << 20))
    response = client.post(INFER, data=bomb, headers={"Content-Encoding": "gzip"})
    assert response.status_code == 413 and "error" in response.get_json()
    assert client.post(INFER, data=b"{", content_type="application/json").status_code == 400


def test_capacity_is_503_with_retry_after(tmp_path):
    app = serving_app(Settings(registry=tmp_path / "registry", store="memory", max_streams=1,
                              access_log=False))
    client = app.test_client()
    try:
        assert infer(client, [window(SERIES[:2])], {"sequence_id": 1, "sequence_start": True}
                     ).status_code == 200
        full = infer(client, [window(SERIES[:2])], {"sequence_id": 2, "sequence_start": True})
        assert full.status_code == 503 and full.headers["Retry-After"]
        assert "error" in full.get_json()
    finally:
        app.extensions["statecast"].close()
