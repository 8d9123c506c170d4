"""``statecast models`` and ``statecast streams`` against a real registry and sqlite store."""

import json

import numpy as np

from statecast.models import Registry
from statecast.service.bundled import seed_registry
from statecast.service.calls import StreamCall
from statecast.service.cli import main
from statecast.service.forecasting import ForecastService
from statecast.service.model_cache import ModelCache
from statecast.service.stores import SqliteStore


def setup(tmp_path):
    registry = Registry(tmp_path / "registry")
    seed_registry(registry)
    store_url = f"sqlite:{tmp_path / 'state.db'}"
    service = ForecastService(ModelCache(registry), SqliteStore(tmp_path / "state.db"), 100)
    for name in ("a", "b"):
        service.forecast("sunspots", name, StreamCall(np.array([1.0, 2.0])))
    model = registry.load("sunspots")
    registry.publish("sunspots", model.spec, model.tensors)
    service.forecast("sunspots@2", "c", StreamCall([3.0]))
    return str(tmp_path / "registry"), store_url


def test_models_commands(tmp_path, capsys):
    registry, store = setup(tmp_path)
    assert main(["models", "list", "--registry", registry]) == 0
    assert "sunspots\tversions 1, 2\tlatest=2, production=1" in capsys.readouterr().out
    assert main(["models", "show", "sunspots@2", "--registry", registry]) == 0
    assert json.loads(capsys.readouterr().out)["spec"]["horizon"] == 12
    assert main(["models", "alias", "sunspots", "production", "2", "--registry",
                 registry]) == 0
    assert main(["models", "delete", "sunspots", "1", "--registry", registry, "--store",
                 store]) == 2
    assert "2 stream(s) are bound to sunspots@1" in capsys.readouterr().err
    assert main(["models", "delete", "sunspots", "1", "--registry", registry, "--store",
                 store, "--force"]) == 0
    assert "deleted sunspots@1" in capsys.readouterr().out
    assert Registry(registry).versions("sunspots") == ["2"]


def test_streams_commands(tmp_path, capsys):
    _, store = setup(tmp_path)
    assert main(["streams", "list", "--store", store, "--model", "sunspots", "--version",
                 "1"]) == 0
    listed = capsys.readouterr().out.strip().splitlines()
    assert [line.split("\t")[1] for line in listed] == ["a", "b"]
    assert main(["streams", "show", "sunspots", "c", "--store", store]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["version"], shown["step"], shown["retained_observations"]) == ("2", 1, 1)
    assert main(["streams", "delete", "sunspots", "a", "--store", store]) == 0
    assert main(["streams", "delete", "sunspots", "a", "--store", store]) == 2
    assert "no stream 'a'" in capsys.readouterr().err
