"""How the PyTorch importer reads state_dicts: keys, prefixes, heads, cells, refusals."""

import collections

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from statecast.models import ImportFailed, Model
from statecast.models.importers import ForecastOptions, import_pytorch, import_state_dict

TOL = {"atol": 1e-5, "rtol": 1e-5}


def sd(module):
    return {k: v.detach().numpy() for k, v in module.state_dict().items()}


def run_torch(module, x):
    with torch.no_grad():
        return module(torch.from_numpy(x)).numpy()


class DartsLike(torch.nn.Module):
    """Darts' RNNModel: ``rnn`` then a Linear ``V`` on every step."""

    def __init__(self):
        super().__init__()
        self.rnn = torch.nn.GRU(2, 10, num_layers=2, batch_first=True)
        self.V = torch.nn.Linear(10, 1)

    def forward(self, x):
        y, _ = self.rnn(x)
        return self.V(y)


class Encoder(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = torch.nn.LSTM(3, 8, batch_first=True)


class Nested(torch.nn.Module):
    """``encoder.lstm.`` prefix and a Linear head emitting horizon 6."""

    def __init__(self):
        super().__init__()
        self.encoder = Encoder()
        self.out = torch.nn.Linear(8, 6)

    def forward(self, x):
        y, _ = self.encoder.lstm(x)
        return self.out(y[:, -1])


class TwoWidths(torch.nn.Module):
    """Separate nn.LSTM modules of different widths, as Keras-minded authors write them."""

    def __init__(self):
        super().__init__()
        self.lstm1 = torch.nn.LSTM(2, 16, batch_first=True)
        self.lstm2 = torch.nn.LSTM(16, 8, batch_first=True)
        self.fc = torch.nn.Linear(8, 3)

    def forward(self, x):
        y, _ = self.lstm1(x)
        y, _ = self.lstm2(y)
        return self.fc(y[:, -1])


class CellStack(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.cells = torch.nn.ModuleList([torch.nn.LSTMCell(2, 6), torch.nn.LSTMCell(6, 5)])


def test_nested_prefix_and_linear_head():
    torch.manual_seed(0)
    net = Nested()
    imported = import_state_dict(sd(net))
    assert imported.spec.horizon == 6 and imported.spec.forecast_mode == "direct"
    x = np.random.default_rng(0).standard_normal((3, 11, 3)).astype(np.float32)
    _, _, head = Model(imported.spec, imported.tensors).run(x)
    np.testing.assert_allclose(head, run_torch(net, x), **TOL)


def test_darts_style_head_on_every_step():
    torch.manual_seed(1)
    net = DartsLike()
    imported = import_state_dict(sd(net), ForecastOptions(mode="recursive"),
                                 head_every_step=True)
    assert imported.spec.head_every_step
    x = np.random.default_rng(1).standard_normal((2, 9, 2)).astype(np.float32)
    _, _, head = Model(imported.spec, imported.tensors).run(x)
    np.testing.assert_allclose(head, run_torch(net, x), **TOL)


def test_separate_lstm_modules_of_different_widths_stack_in_name_order():
    torch.manual_seed(2)
    net = TwoWidths()
    imported = import_state_dict(sd(net), ForecastOptions(targets=("a", "b", "c")),
                                 cell="lstm")
    assert [layer.hidden_size for layer in imported.spec.layers] == [16, 8]
    assert imported.spec.horizon == 1
    x = np.random.default_rng(2).standard_normal((4, 5, 2)).astype(np.float32)
    _, _, head = Model(imported.spec, imported.tensors).run(x)
    np.testing.assert_allclose(head, run_torch(net, x), **TOL)


def test_module_list_of_cells_stacks_by_index():
    torch.manual_seed(3)
    net = CellStack()
    imported = import_state_dict(sd(net))
    assert [(lay.input_size, lay.hidden_size) for lay in imported.spec.layers] == [(2, 6), (6, 5)]
    x = np.random.default_rng(3).standard_normal((2, 4, 2)).astype(np.float32)
    h1 = c1 = torch.zeros(2, 6)
    h2 = c2 = torch.zeros(2, 5)
    with torch.no_grad():
        for t in range(4):
            h1, c1 = net.cells[0](torch.from_numpy(x[:, t]), (h1, c1))
            h2, c2 = net.cells[1](h1, (h2, c2))
    y, state, _ = Model(imported.spec, imported.tensors).run(x)
    np.testing.assert_allclose(y[:, -1], h2.numpy(), **TOL)
    np.testing.assert_allclose(state.c[0], c1.numpy(), **TOL)


def test_bias_free_layers_get_zero_biases():
    torch.manual_seed(4)
    rnn = torch.nn.GRU(3, 5, bias=False, batch_first=True)
    imported = import_state_dict(sd(rnn))
    x = np.random.default_rng(4).standard_normal((2, 6, 3)).astype(np.float32)
    y, _, _ = Model(imported.spec, imported.tensors).run(x)
    with torch.no_grad():
        np.testing.assert_allclose(y, rnn(torch.from_numpy(x))[0].numpy(), **TOL)


def test_sequential_head_needs_its_activations():
    torch.manual_seed(5)
    net = torch.nn.Module()
    net.rnn = torch.nn.LSTM(2, 4)
    net.fc = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    with pytest.raises(ImportFailed, match=r"does not record the activations.*--head-activations"):
        import_state_dict(sd(net))
    imported = import_state_dict(sd(net), head_activations=["relu", "linear"])
    assert [d.activation.name for d in imported.spec.head] == ["relu", "linear"]


def test_bidirectional_is_refused():
    with pytest.raises(ImportFailed, match=r"bidirectional .* refused"):
        import_state_dict(sd(torch.nn.LSTM(2, 3, bidirectional=True)))


def test_ambiguous_tensors_are_named():
    state = sd(torch.nn.LSTM(2, 3))
    state["norm.running_mean"] = np.zeros(3, np.float32)
    with pytest.raises(ImportFailed, match=r"neither recurrent layers nor a Linear head: "
                                           r"\['norm.running_mean'\]"):
        import_state_dict(state)


def test_head_prefix_selects_the_head():
    torch.manual_seed(6)
    net = Nested()
    state = sd(net)
    with pytest.raises(ImportFailed, match=r"no tensors under head prefix 'fc\.'"):
        import_state_dict(state, head_prefix="fc.")
    assert import_state_dict(state, head_prefix="out.").spec.head[0].out_features == 6


def test_cell_flag_is_checked_against_the_shapes():
    with pytest.raises(ImportFailed, match="shapes say gru, --cell says lstm"):
        import_state_dict(sd(torch.nn.GRU(2, 3)), cell="lstm")


def test_no_recurrent_weights_lists_the_keys():
    with pytest.raises(ImportFailed, match=r"no LSTM/GRU weights .*\['bias', 'weight'\]"):
        import_state_dict(sd(torch.nn.Linear(2, 3)))


def test_pt_file_roundtrip_and_checkpoint_dicts(tmp_path):
    torch.manual_seed(7)
    net = Nested()
    torch.save(net.state_dict(), tmp_path / "plain.pt")
    torch.save({"epoch": 3, "model_state_dict": net.state_dict()}, tmp_path / "ckpt.pth")
    plain = import_pytorch(tmp_path / "plain.pt")
    ckpt = import_pytorch(tmp_path / "ckpt.pth")
    assert plain.source["framework"] == "pytorch" and len(plain.source["sha256"]) == 64
    for name, tensor in plain.tensors.items():
        np.testing.assert_array_equal(tensor, ckpt.tensors[name])


def test_safetensors_file_needs_no_torch_load(tmp_path):
    torch.manual_seed(8)
    net = Nested()
    save_file({k: v.contiguous() for k, v in net.state_dict().items()},
              str(tmp_path / "w.safetensors"))
    imported = import_pytorch(tmp_path / "w.safetensors")
    x = np.random.default_rng(8).standard_normal((1, 4, 3)).astype(np.float32)
    _, _, head = Model(imported.spec, imported.tensors).run(x)
    np.testing.assert_allclose(head, run_torch(net, x), **TOL)


def test_a_pickled_module_is_refused_with_the_fix(tmp_path):
    torch.save(Nested(), tmp_path / "module.pt")
    with pytest.raises(ImportFailed, match=r"refused: save the weights with "
                                           r"torch.save\(model.state_dict\(\), path\)"):
        import_pytorch(tmp_path / "module.pt")


def test_a_legacy_pickle_file_is_refused(tmp_path):
    path = tmp_path / "legacy.pt"
    path.write_bytes(b"\x80\x02" + b"\x00" * 32)
    with pytest.raises(ImportFailed, match=r"not a torch\.save zip file"):
        import_pytorch(path)


def test_an_ordered_dict_of_non_tensors_is_refused(tmp_path):
    torch.save(collections.OrderedDict(a=1, b="x"), tmp_path / "odd.pt")
    with pytest.raises(ImportFailed, match="holds no tensors"):
        import_pytorch(tmp_path / "odd.pt")


def test_forecast_options_shape_the_spec():
    torch.manual_seed(9)
    state = sd(Nested())
    imported = import_state_dict(state, ForecastOptions(
        horizon=3, targets=("load", "temp"), features=("load", "temp", "hour"),
        state_mode="window:24",
        scaler={"method": "standard", "mean": [1, 2, 3], "std": [2, 4, 1]}))
    spec = imported.spec
    assert (spec.horizon, spec.targets, spec.window, spec.retain) == (3, ("load", "temp"), 24, 24)
    assert spec.scaling.target_shift == (1.0, 2.0) and spec.scaling.target_scale == (2.0, 4.0)
    with pytest.raises(ImportFailed, match="horizon 4 x 2 target"):
        import_state_dict(state, ForecastOptions(horizon=4, targets=("a", "b"),
                                                 features=("a", "b", "c")))
