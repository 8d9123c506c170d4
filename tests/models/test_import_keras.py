"""Keras 3 ``.keras`` files give Keras' own outputs (Keras 3 on the torch backend)."""

import os
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "torch")

import keras
import numpy as np
import pytest

from statecast.models import ImportFailed, Model
from statecast.models.importers import ForecastOptions, import_keras

TOL = {"atol": 1e-5, "rtol": 1e-5}
L = keras.layers


def roundtrip(model, tmp_path, x, **options):
    path = tmp_path / "model.keras"
    model.save(path)
    imported = import_keras(path, ForecastOptions(**options) if options else None)
    ours = Model(imported.spec, imported.tensors)
    expected = keras.ops.convert_to_numpy(model(x, training=False))
    return ours, imported, expected


def data(shape, seed=0, scale=1.0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


def test_stacked_lstm_dropout_gru_and_a_dense_head(tmp_path):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((None, 3)), L.LSTM(8, return_sequences=True),
                              L.Dropout(0.3), L.GRU(5, reset_after=True, dropout=0.2),
                              L.Dense(4, activation="relu"), L.Dense(2)])
    x = data((4, 9, 3))
    ours, imported, expected = roundtrip(model, tmp_path, x, targets=("a", "b"),
                                         features=("x", "y", "z"), horizon=1)
    assert [layer.cell for layer in imported.spec.layers] == ["lstm", "gru"]
    _, _, head = ours.run(x)
    np.testing.assert_allclose(head, expected, **TOL)


@pytest.mark.parametrize("layer", [
    lambda: L.LSTM(6, activation="relu"),
    lambda: L.GRU(6, reset_after=False, recurrent_activation="hard_sigmoid"),
    lambda: L.LSTM(6, recurrent_activation="hard_sigmoid", use_bias=False),
    lambda: L.GRU(6, activation="softsign"),
])
def test_layer_options_that_matter(tmp_path, layer):
    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((None, 2)), layer(), L.Dense(3)])
    x = data((3, 12, 2), scale=3.0)
    ours, _, expected = roundtrip(model, tmp_path, x)
    np.testing.assert_allclose(ours.run(x)[2], expected, **TOL)


def test_keras3_hard_sigmoid_is_x_over_6(tmp_path):
    keras.utils.set_random_seed(2)
    model = keras.Sequential([keras.Input((None, 1)),
                              L.GRU(4, recurrent_activation="hard_sigmoid"), L.Dense(1)])
    _, imported, _ = roundtrip(model, tmp_path, data((1, 2, 1)))
    gate = imported.spec.layers[0].gate_activation
    assert (gate.name, gate.alpha, gate.beta) == ("hard_sigmoid", 1 / 6, 0.5)


def test_return_sequences_puts_the_head_on_every_step(tmp_path):
    keras.utils.set_random_seed(3)
    model = keras.Sequential([keras.Input((None, 2)), L.LSTM(5, return_sequences=True),
                              L.Dense(1)])
    x = data((2, 7, 2))
    ours, imported, expected = roundtrip(model, tmp_path, x)
    assert imported.spec.head_every_step
    np.testing.assert_allclose(ours.run(x)[2], expected, **TOL)


def test_a_functional_chain_and_stateful_layers(tmp_path):
    keras.utils.set_random_seed(4)
    inputs = keras.Input((None, 3))
    hidden = L.LSTM(7, name="encoder")(inputs)
    model = keras.Model(inputs, L.Dense(12, name="out")(hidden))
    x = data((2, 6, 3))
    ours, imported, expected = roundtrip(model, tmp_path, x)
    assert imported.spec.horizon == 12 and imported.source["framework"] == "keras"
    np.testing.assert_allclose(ours.run(x)[2], expected, **TOL)


def test_unsupported_layers_are_named(tmp_path):
    model = keras.Sequential([keras.Input((None, 2)), L.Conv1D(4, 2), L.LSTM(3), L.Dense(1)])
    model.save(tmp_path / "conv.keras")
    with pytest.raises(ImportFailed, match=r"'conv1d' \(Conv1D\) is not supported"):
        import_keras(tmp_path / "conv.keras")
    model = keras.Sequential([keras.Input((None, 2)), L.LSTM(3, go_backwards=True)])
    model.save(tmp_path / "back.keras")
    with pytest.raises(ImportFailed, match="go_backwards layers are refused"):
        import_keras(tmp_path / "back.keras")
    model = keras.Sequential([keras.Input((None, 2)), L.Bidirectional(L.LSTM(3))])
    model.save(tmp_path / "bi.keras")
    with pytest.raises(ImportFailed, match="bidirectional layers are refused"):
        import_keras(tmp_path / "bi.keras")


def test_the_cli_imports_keras_files(tmp_path):
    from statecast.models import Registry
    from statecast.service.cli import main

    keras.utils.set_random_seed(5)
    model = keras.Sequential([keras.Input((None, 1)), L.LSTM(4), L.Dense(6)])
    model.save(tmp_path / "m.keras")
    assert main(["import", str(tmp_path / "m.keras"), "--name", "k", "--registry",
                 str(tmp_path / "r")]) == 0
    loaded = Registry(tmp_path / "r").load("k")
    x = data((1, 5, 1))
    np.testing.assert_allclose(loaded.run(x)[2],
                               keras.ops.convert_to_numpy(model(x, training=False)), **TOL)
    assert loaded.manifest["source"]["keras_version"].startswith("3.")


def test_keras3_legacy_h5_files(tmp_path):
    keras.utils.set_random_seed(6)
    model = keras.Sequential([keras.Input((None, 3)), L.LSTM(5, return_sequences=True),
                              L.GRU(4), L.Dense(2, activation="tanh")])
    model.save(tmp_path / "legacy.h5")
    imported = import_keras(tmp_path / "legacy.h5", ForecastOptions(targets=("a", "b"),
                                                                     features=("x", "y", "z"),
                                                                     horizon=1))
    x = data((3, 8, 3))
    np.testing.assert_allclose(Model(imported.spec, imported.tensors).run(x)[2],
                               keras.ops.convert_to_numpy(model(x, training=False)), **TOL)


def test_weights_only_h5_files_are_refused(tmp_path):
    keras.utils.set_random_seed(8)
    model = keras.Sequential([keras.Input((None, 1)), L.LSTM(2), L.Dense(1)])
    model.save_weights(tmp_path / "only.weights.h5")
    with pytest.raises(ImportFailed, match="weights-only files carry no architecture"):
        import_keras(tmp_path / "only.weights.h5")


KERAS2 = Path(__file__).resolve().parent.parent / "data" / "keras2"


@pytest.mark.parametrize("name", ["lstm_gru_hard_sigmoid", "gru_reset_after_relu"])
def test_real_tf_keras2_files_give_tf_keras2_outputs(name):
    """Files written by tf.keras 2.15.1 with its outputs (tests/data/keras2/make_files.py);
    Keras 3 itself refuses to load such LSTM files."""
    expected = np.load(KERAS2 / "expected.npz")
    imported = import_keras(KERAS2 / f"{name}.h5", ForecastOptions(
        targets=tuple(f"t{i}" for i in range(expected[f"{name}/y"].shape[1])), horizon=1))
    assert imported.source["keras_version"].startswith("2.15")
    _, _, head = Model(imported.spec, imported.tensors).run(expected[f"{name}/x"])
    np.testing.assert_allclose(head, expected[f"{name}/y"], **TOL)


def test_keras2_hard_sigmoid_is_recorded_as_0_2_x():
    imported = import_keras(KERAS2 / "lstm_gru_hard_sigmoid.h5")
    gates = [layer.gate_activation for layer in imported.spec.layers]
    assert [(g.name, g.alpha, g.beta) for g in gates] == [("hard_sigmoid", 0.2, 0.5)] * 2


def test_three_layers_of_different_widths(tmp_path):
    keras.utils.set_random_seed(9)
    model = keras.Sequential([keras.Input((None, 2)), L.GRU(7, return_sequences=True),
                              L.LSTM(3, return_sequences=True, activation="relu"),
                              L.GRU(5, reset_after=False), L.Dense(2)])
    x = data((2, 11, 2))
    ours, imported, expected = roundtrip(model, tmp_path, x, targets=("a", "b"), horizon=1,
                                         features=("p", "q"))
    assert [layer.hidden_size for layer in imported.spec.layers] == [7, 3, 5]
    np.testing.assert_allclose(ours.run(x)[2], expected, **TOL)


def test_stateful_layers_over_consecutive_chunks_carry_the_same_state(tmp_path):
    keras.utils.set_random_seed(10)
    model = keras.Sequential([keras.Input((None, 2), batch_size=3),
                              L.LSTM(6, stateful=True, return_sequences=True),
                              L.GRU(4, stateful=True), L.Dense(1)])
    model.save(tmp_path / "stateful.keras")
    imported = import_keras(tmp_path / "stateful.keras")
    assert imported.spec.state_mode == "carry"
    ours = Model(imported.spec, imported.tensors)
    state = None
    for chunk in range(4):
        x = data((3, 5, 2), seed=chunk)
        expected = keras.ops.convert_to_numpy(model(x, training=False))
        _, state, head = ours.run(x, state)
        np.testing.assert_allclose(head, expected, **TOL)
    lstm_h, lstm_c = (keras.ops.convert_to_numpy(v) for v in model.layers[0].states)
    np.testing.assert_allclose(state.h[0], lstm_h, **TOL)
    np.testing.assert_allclose(state.c[0], lstm_c, **TOL)
    np.testing.assert_allclose(state.h[1], keras.ops.convert_to_numpy(model.layers[1].states[0]),
                               **TOL)


def test_models_with_initial_states_as_extra_inputs_are_refused(tmp_path):
    sequence, h, c = keras.Input((None, 2)), keras.Input((4,)), keras.Input((4,))
    output = L.Dense(1)(L.LSTM(4)(sequence, initial_state=[h, c]))
    keras.Model([sequence, h, c], output).save(tmp_path / "init.keras")
    with pytest.raises(ImportFailed, match=r"has 3 inputs .*\(initial_state=\[h, c\]\)"):
        import_keras(tmp_path / "init.keras")


def test_encoder_decoders_are_refused_naming_the_layer(tmp_path):
    model = keras.Sequential([keras.Input((None, 2)), L.LSTM(4), L.RepeatVector(3),
                              L.LSTM(4, return_sequences=True),
                              L.TimeDistributed(L.Dense(1))])
    model.save(tmp_path / "seq2seq.keras")
    with pytest.raises(ImportFailed, match=r"\(RepeatVector\) is not supported"):
        import_keras(tmp_path / "seq2seq.keras")


@pytest.mark.parametrize("layers,match", [
    (lambda: [L.LSTM(3, activation="selu"), L.Dense(1)], r"activation 'selu' is not supported"),
    (lambda: [L.Dense(3), L.LSTM(3)], r"Dense layers before the recurrent ones"),
    (lambda: [L.LSTM(3, return_sequences=True), L.Dense(2), L.GRU(2)],
     r"a recurrent layer after Dense layers"),
    (lambda: [L.Dropout(0.1)], r"has no LSTM or GRU layer"),
])
def test_other_refusals_say_why(tmp_path, layers, match):
    keras.Sequential([keras.Input((None, 2)), *layers()]).save(tmp_path / "m.keras")
    with pytest.raises(ImportFailed, match=match):
        import_keras(tmp_path / "m.keras")


def test_files_that_are_not_keras_models_are_refused(tmp_path):
    (tmp_path / "x.keras").write_bytes(b"not a zip")
    with pytest.raises(ImportFailed, match=r"is not a Keras 3 \.keras file"):
        import_keras(tmp_path / "x.keras")
    (tmp_path / "x.h5").write_bytes(b"not hdf5")
    with pytest.raises(ImportFailed, match="is not an HDF5 file"):
        import_keras(tmp_path / "x.h5")
