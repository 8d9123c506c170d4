"""The stock Triton HTTP client (``tritonclient[http]``) against a running statecast server
(gunicorn, two workers): it must work unchanged, and its forecasts equal /v1's."""

import numpy as np
import pytest

from tests.service.test_server import Server, call, free_port

pytestmark = pytest.mark.slow
httpclient = pytest.importorskip("tritonclient.http")
utils = pytest.importorskip("tritonclient.utils")

SERIES = np.array([5, 11, 16, 23, 36, 58, 29, 20, 10, 8, 3, 0], np.float32)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    running = Server(tmp_path_factory.mktemp("triton"), free_port())
    running.start()
    yield running
    running.stop()


@pytest.fixture()
def client(server):
    with httpclient.InferenceServerClient(url=f"127.0.0.1:{server.port}") as triton:
        yield triton


def window(values, binary=True):
    values = np.asarray(values, np.float32)
    batch = values.reshape(-1, values.shape[-1], 1) if values.ndim > 1 else values.reshape(
        1, -1, 1)
    tensor = httpclient.InferInput("window", list(batch.shape), "FP32")
    tensor.set_data_from_numpy(batch, binary_data=binary)
    return tensor


def v1(server, stream, values, **extra):
    status, body = call(server.port, stream, {"window": [float(v) for v in values], **extra})
    assert status == 200, body
    return np.asarray(body["forecast"], np.float32)


def test_health_and_metadata(client):
    assert client.is_server_live() and client.is_server_ready()
    assert "sequence(string_id)" in client.get_server_metadata()["extensions"]
    meta = client.get_model_metadata("sunspots")
    assert meta["inputs"][0]["name"] == "window" and meta["outputs"][0]["shape"] == [-1, 12, 1]
    assert client.is_model_ready("sunspots") and client.is_model_ready("sunspots", "1")
    assert not client.is_model_ready("no-such-model")


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_stateless_batches(client, server, binary):
    rows = np.stack([SERIES[:4], SERIES[4:8], SERIES[8:12]])
    outputs = [httpclient.InferRequestedOutput("forecast", binary_data=binary)]
    result = client.infer("sunspots", [window(rows, binary)], outputs=outputs,
                          parameters={"horizon": 6})
    got = result.as_numpy("forecast")
    assert got.shape == (3, 6, 1)
    for index, values in enumerate(rows):
        np.testing.assert_array_equal(got[index], v1(server, f"fresh-{binary}-{index}", values,
                                                     horizon=6))


@pytest.mark.parametrize("sequence", [1001, "seq-a"], ids=["integer id", "string id"])
def test_sequences_start_continue_end_like_v1(client, server, sequence):
    chunks = [SERIES[:5], SERIES[5:9], SERIES[9:]]
    twin = f"twin-{sequence}"
    for index, chunk in enumerate(chunks):
        result = client.infer("sunspots", [window(chunk, binary=index != 1)],
                              sequence_id=sequence, sequence_start=index == 0,
                              sequence_end=index == len(chunks) - 1,
                              request_compression_algorithm="gzip" if index == 2 else None)
        np.testing.assert_array_equal(result.as_numpy("forecast")[0], v1(server, twin, chunk))
        assert result.get_response()["parameters"]["sequence_id"] == sequence
    with pytest.raises(utils.InferenceServerException) as ended:
        client.infer("sunspots", [window(SERIES[:2])], sequence_id=sequence)
    assert ended.value.status() == "404"


def test_a_version_is_chosen(client):
    result = client.infer("sunspots", [window(SERIES[:6])], model_version="1")
    assert result.get_response()["model_version"] == "1"
    with pytest.raises(utils.InferenceServerException) as missing:
        client.infer("sunspots", [window(SERIES[:6])], model_version="9")
    assert missing.value.status() == "404"
