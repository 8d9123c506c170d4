"""The statecast command line: import a PyTorch file, run it, and the errors it prints."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from statecast.models import Registry
from statecast.service.cli import main


class Forecaster(torch.nn.Module):
    def __init__(self, widths=(8, 8)):
        super().__init__()
        self.lstm1 = torch.nn.LSTM(2, widths[0], batch_first=True)
        self.lstm2 = torch.nn.LSTM(widths[0], widths[1], batch_first=True)
        self.fc = torch.nn.Linear(widths[1], 4)

    def forward(self, x, s1=None, s2=None):
        y, s1 = self.lstm1(x, s1)
        y, s2 = self.lstm2(y, s2)
        return y, s1, s2, self.fc(y[:, -1])


@pytest.fixture()
def saved(tmp_path):
    torch.manual_seed(0)
    net = Forecaster(widths=(8, 5))
    torch.save(net.state_dict(), tmp_path / "net.pt")
    return net, tmp_path


def test_import_then_run_matches_torch(saved, capsys):
    net, tmp = saved
    registry = str(tmp / "registry")
    assert main(["import", str(tmp / "net.pt"), "--name", "demand", "--registry", registry,
                 "--horizon", "4", "--alias", "production"]) == 0
    assert "published demand@1" in capsys.readouterr().out
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 7, 2)).astype(np.float32)
    h0 = [rng.standard_normal((3, w)).astype(np.float32) for w in (8, 5)]
    c0 = [rng.standard_normal((3, w)).astype(np.float32) for w in (8, 5)]
    np.savez(tmp / "in.npz", x=x, h0_0=h0[0], c0_0=c0[0], h0_1=h0[1], c0_1=c0[1])
    assert main(["run", "--registry", registry, "--model", "demand@production",
                 "--inputs", str(tmp / "in.npz"), "--output", str(tmp / "out.npz")]) == 0
    out = np.load(tmp / "out.npz")
    with torch.no_grad():
        t = [torch.from_numpy(a[:, None].transpose(1, 0, 2).copy()) for a in (*h0, *c0)]
        y, s1, s2, head = net(torch.from_numpy(x), (t[0], t[2]), (t[1], t[3]))
    np.testing.assert_allclose(out["y"], y.numpy(), atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(out["head"], head.numpy(), atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(out["h_n_1"], s2[0][0].numpy(), atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(out["c_n_0"], s1[1][0].numpy(), atol=1e-5, rtol=1e-5)
    assert "h_n" not in out.files


def test_run_with_stacked_state_writes_stacked_state(tmp_path):
    torch.manual_seed(1)
    rnn = torch.nn.GRU(3, 6, num_layers=2, batch_first=True)
    torch.save(rnn.state_dict(), tmp_path / "gru.pth")
    registry = str(tmp_path / "r")
    assert main(["import", str(tmp_path / "gru.pth"), "--name", "g", "--registry", registry,
                 "--cell", "gru"]) == 0
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 5, 3)).astype(np.float32)
    h0 = rng.standard_normal((2, 2, 6)).astype(np.float32)
    np.savez(tmp_path / "in.npz", x=x, h0=h0)
    assert main(["run", "--registry", registry, "--model", "g", "--inputs",
                 str(tmp_path / "in.npz"), "--output", str(tmp_path / "out.npz")]) == 0
    out = np.load(tmp_path / "out.npz")
    with torch.no_grad():
        _, h_n = rnn(torch.from_numpy(x), torch.from_numpy(h0))
    np.testing.assert_allclose(out["h_n"], h_n.numpy(), atol=1e-5, rtol=1e-5)
    assert sorted(out.files) == ["h_n", "y"]


def test_errors_say_what_is_wrong_and_exit_2(saved, capsys):
    _, tmp = saved
    registry = str(tmp / "registry")
    assert main(["import", str(tmp / "net.pt"), "--name", "../x", "--registry", registry]) == 2
    assert "invalid model name '../x'" in capsys.readouterr().err
    assert main(["import", str(tmp / "net.pt"), "--name", "m", "--registry", registry,
                 "--horizon", "3"]) == 2
    assert "horizon 3 x 1 target(s)" in capsys.readouterr().err
    assert main(["import", str(tmp / "net.pt"), "--name", "m", "--registry", registry]) == 0
    np.savez(tmp / "bad.npz", x=np.zeros((1, 2, 9), np.float32))
    assert main(["run", "--registry", registry, "--model", "m", "--inputs",
                 str(tmp / "bad.npz"), "--output", str(tmp / "o.npz")]) == 2
    assert "x has 9 features per step; the model takes 2" in capsys.readouterr().err
    np.savez(tmp / "nox.npz", y=np.zeros(3))
    assert main(["run", "--registry", registry, "--model", "m", "--inputs",
                 str(tmp / "nox.npz"), "--output", str(tmp / "o.npz")]) == 2
    assert "has no array 'x'" in capsys.readouterr().err
    assert main(["run", "--registry", registry, "--model", "nope", "--inputs",
                 str(tmp / "nox.npz"), "--output", str(tmp / "o.npz")]) == 2
    assert "no model named 'nope'" in capsys.readouterr().err


def test_the_console_script_is_installed():
    script = Path(sys.executable).parent / "statecast"
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, check=True)
    assert "import" in result.stdout and "run" in result.stdout


def test_import_applies_a_scaler_file(saved, tmp_path):
    _, tmp = saved
    scaler = tmp / "scaler.json"
    scaler.write_text(json.dumps({"method": "minmax", "data_min_": [0.0, -1.0],
                                  "data_max_": [10.0, 1.0], "feature_range": [0, 1]}))
    registry = str(tmp / "registry")
    assert main(["import", str(tmp / "net.pt"), "--name", "scaled", "--registry", registry,
                 "--features", "load,temp", "--targets", "load,temp", "--horizon", "2",
                 "--scaler", str(scaler), "--state-mode", "window:24"]) == 0
    model = Registry(registry).load("scaled")
    assert model.spec.window == 24 and model.spec.features == ("load", "temp")
    np.testing.assert_allclose(model.scale_inputs(np.array([[5.0, 0.0]])), [[0.5, 0.5]])
    np.testing.assert_allclose(model.unscale_targets(np.array([[1.0, 0.0]])), [[10.0, -1.0]])


def test_a_scaler_that_does_not_fit_is_refused(saved, capsys):
    _, tmp = saved
    scaler = tmp / "bad.json"
    scaler.write_text(json.dumps({"mean": [1.0], "std": [2.0]}))
    assert main(["import", str(tmp / "net.pt"), "--name", "m", "--registry",
                 str(tmp / "registry"), "--scaler", str(scaler)]) == 2
    assert "scaler has 1 values, the model has 2 features" in capsys.readouterr().err


@pytest.mark.parametrize("store,expected", [
    ("memory", ["1", "1", "gthread"]),
    ("sqlite:s.db", [str(os.cpu_count() or 1), "1", "sync"]),
])
def test_the_gunicorn_master_never_imports_numba(tmp_path, store, expected):
    code = ("import sys, statecast.service.gunicorn_conf as c; print(c.workers, c.threads, "
            "c.worker_class, 'numba' in sys.modules, 'statecast.kernels' in sys.modules)")
    env = {**os.environ, "STATECAST_STORE": store, "STATECAST_REGISTRY": str(tmp_path)}
    for name in ("NUMBA_CACHE_DIR", "STATECAST_WORKERS", "STATECAST_THREADS",
                 "STATECAST_WORKER_CLASS"):
        env.pop(name, None)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, env=env, cwd=tmp_path)
    assert result.stdout.split() == [*expected, "False", "False"]


def test_serve_refuses_several_workers_for_the_memory_store(capsys, monkeypatch):
    monkeypatch.setattr(os, "environ", {**os.environ, "STATECAST_STORE": "memory"})
    assert main(["serve", "--workers", "2"]) == 2
    assert "memory store lives in one process" in capsys.readouterr().err
    assert main(["serve", "--store", "postgres://x"]) == 2
    assert "unknown store 'postgres://x'" in capsys.readouterr().err


def test_run_on_a_fresh_registry_finds_the_bundled_model(tmp_path):
    np.savez(tmp_path / "in.npz", x=np.ones((1, 3, 1), np.float32))
    assert main(["run", "--registry", str(tmp_path / "fresh"), "--model", "sunspots",
                 "--inputs", str(tmp_path / "in.npz"), "--output", str(tmp_path / "o.npz")]) == 0
    out = np.load(tmp_path / "o.npz")
    assert out["head"].shape == (1, 12) and out["h_n"].shape == (1, 1, 32)


def test_run_forecast_gives_the_verbs_forecast_in_original_units(tmp_path):
    """``statecast run --forecast H``: raw observations in, each series' state and forecast
    out, exactly as ``Model.advance``/``Model.predict`` (what the service runs) give them."""
    from statecast.models import Registry

    x = (np.arange(2 * 5).reshape(2, 5, 1) * 7.0 + 20.0).astype(np.float32)
    np.savez(tmp_path / "in.npz", x=x)
    assert main(["run", "--registry", str(tmp_path / "r"), "--model", "sunspots",
                 "--inputs", str(tmp_path / "in.npz"), "--output", str(tmp_path / "o.npz"),
                 "--forecast", "6"]) == 0
    out = np.load(tmp_path / "o.npz")
    model = Registry(tmp_path / "r").load("sunspots")
    states = model.advance(model.new_arena(2), list(x))
    np.testing.assert_array_equal(out["state"], states)
    np.testing.assert_array_equal(out["forecast"], model.predict(states, 6))
    assert out["forecast"].shape == (2, 6, 1)
