"""Imported PyTorch models give PyTorch's own outputs (float32, within 1e-5 abs and rel)."""

import numpy as np
import pytest
import torch

from statecast.models import Model
from statecast.models.importers import import_state_dict

TOL = {"atol": 1e-5, "rtol": 1e-5}


def state_dict(module: torch.nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy() for k, v in module.state_dict().items()}


def as_model(module: torch.nn.Module, **kwargs) -> Model:
    imported = import_state_dict(state_dict(module), **kwargs)
    return Model(imported.spec, imported.tensors)


def torch_state(rng, layers, batch, hidden, proj, cell):
    h = torch.from_numpy(rng.standard_normal((layers, batch, proj or hidden)).astype(np.float32))
    if cell == "gru":
        return h
    c = torch.from_numpy((rng.standard_normal((layers, batch, hidden)) * 3).astype(np.float32))
    return (h, c)


CASES = [
    # cell, input, hidden, layers, proj, batch, time, input scale
    ("lstm", 8, 64, 2, 0, 1, 1, 1.0),
    ("lstm", 1, 1, 1, 0, 3, 200, 1.0),
    ("lstm", 4, 256, 1, 0, 2, 20, 1.0),
    ("lstm", 5, 32, 3, 0, 300, 6, 1.0),
    ("lstm", 3, 48, 2, 16, 7, 30, 1.0),
    ("lstm", 2, 20, 3, 5, 33, 9, 1.0),
    ("lstm", 6, 16, 2, 0, 5, 40, 60.0),
    ("gru", 8, 64, 2, 0, 1, 1, 1.0),
    ("gru", 1, 1, 1, 0, 4, 200, 1.0),
    ("gru", 4, 256, 1, 0, 2, 20, 1.0),
    ("gru", 5, 32, 3, 0, 300, 6, 1.0),
    ("gru", 6, 16, 2, 0, 5, 40, 60.0),
]


@pytest.mark.parametrize("cell,inputs,hidden,layers,proj,batch,steps,scale", CASES)
@pytest.mark.parametrize("start", ["zeros", "random"])
def test_stacked_rnn_matches_torch(cell, inputs, hidden, layers, proj, batch, steps, scale,
                                   start):
    torch.manual_seed(hidden * 7 + layers)
    rng = np.random.default_rng(batch + steps)
    kwargs = {"proj_size": proj} if proj else {}
    rnn = (torch.nn.LSTM if cell == "lstm" else torch.nn.GRU)(
        inputs, hidden, num_layers=layers, batch_first=True, **kwargs)
    x = (rng.standard_normal((batch, steps, inputs)) * scale).astype(np.float32)
    state0 = torch_state(rng, layers, batch, hidden, proj, cell) if start == "random" else None
    with torch.no_grad():
        ref_y, ref_state = rnn(torch.from_numpy(x), state0)
    model = as_model(rnn)
    given = None
    if state0 is not None:
        given = (state0.numpy(),) if cell == "gru" else tuple(s.numpy() for s in state0)
    y, state, head = model.run(x, given)
    assert head is None
    np.testing.assert_allclose(y, ref_y.numpy(), **TOL)
    h, c = state.stacked()
    if cell == "gru":
        np.testing.assert_allclose(h, ref_state.numpy(), **TOL)
        assert c is None
    else:
        np.testing.assert_allclose(h, ref_state[0].numpy(), **TOL)
        np.testing.assert_allclose(c, ref_state[1].numpy(), **TOL)


def test_saturating_inputs_match_torch_and_stay_finite():
    torch.manual_seed(3)
    rnn = torch.nn.LSTM(4, 32, num_layers=2, batch_first=True)
    with torch.no_grad():
        for p in rnn.parameters():
            p.mul_(3.0)
    # Gate pre-activations in the hundreds: every sigmoid and tanh saturates.
    x = (np.random.default_rng(0).standard_normal((6, 50, 4)) * 100).astype(np.float32)
    with torch.no_grad():
        ref_y, (_, ref_c) = rnn(torch.from_numpy(x))
    y, state, _ = as_model(rnn).run(x)
    assert np.isfinite(state.arena).all()
    np.testing.assert_allclose(y, ref_y.numpy(), **TOL)
    np.testing.assert_allclose(state.stacked()[1], ref_c.numpy(), **TOL)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_cell_loop_matches_torch(cell):
    torch.manual_seed(5)
    module = (torch.nn.LSTMCell if cell == "lstm" else torch.nn.GRUCell)(3, 17)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 25, 3)).astype(np.float32)
    h = torch.zeros(4, 17)
    c = torch.zeros(4, 17)
    outputs = []
    with torch.no_grad():
        for t in range(25):
            if cell == "lstm":
                h, c = module(torch.from_numpy(x[:, t]), (h, c))
            else:
                h = module(torch.from_numpy(x[:, t]), h)
            outputs.append(h.numpy().copy())
    y, state, _ = as_model(module).run(x)
    np.testing.assert_allclose(y, np.stack(outputs, axis=1), **TOL)
    if cell == "lstm":
        np.testing.assert_allclose(state.c[0], c.numpy(), **TOL)


class Forecaster(torch.nn.Module):
    """An encoder with a two-layer head, the shape of most tutorials' forecasters."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = torch.nn.LSTM(3, 24, num_layers=2, batch_first=True)
        self.head = torch.nn.Sequential(torch.nn.Linear(24, 16), torch.nn.ReLU(),
                                        torch.nn.Linear(16, 12))

    def forward(self, x):
        y, _ = self.encoder(x)
        return self.head(y[:, -1])


def test_chunked_runs_with_state_carried_equal_torch_on_the_whole_window():
    torch.manual_seed(9)
    net = Forecaster()
    x = np.random.default_rng(2).standard_normal((5, 60, 3)).astype(np.float32)
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    model = as_model(net, head_activations=["relu", "linear"])
    state = None
    for start in range(0, 60, 7):
        _, state, head = model.run(x[:, start:start + 7], state)
    np.testing.assert_allclose(head, expected, **TOL)
