"""Make the tf.keras 2 test files: real ``.h5`` full-model files written by tf.keras 2.15,
with the outputs tf.keras computed for fixed inputs.

tf.keras 2 cannot run beside numpy 2, so this is a one-off tool run in its own virtualenv,
never a project dependency:

    python3 -m venv /tmp/tf2 && /tmp/tf2/bin/pip install "tensorflow-cpu==2.15.1" h5py
    /tmp/tf2/bin/python tests/data/keras2/make_files.py

It rewrites ``*.h5`` and ``expected.npz`` beside this file.
"""

from pathlib import Path

import numpy as np
import tensorflow as tf

HERE = Path(__file__).resolve().parent
L = tf.keras.layers


def models():
    tf.keras.utils.set_random_seed(0)
    # No explicit Input layer: the first layer carries batch_input_shape, as most old
    # tutorials wrote it; hard_sigmoid is Keras 2's clip(0.2x + 0.5, 0, 1).
    yield "lstm_gru_hard_sigmoid", tf.keras.Sequential([
        L.LSTM(6, return_sequences=True, recurrent_activation="hard_sigmoid",
               input_shape=(None, 2)),
        L.GRU(3, reset_after=False, recurrent_activation="hard_sigmoid"),
        L.Dense(1)]), 2
    tf.keras.utils.set_random_seed(1)
    yield "gru_reset_after_relu", tf.keras.Sequential([
        tf.keras.Input((None, 3)),
        L.GRU(5, reset_after=True, activation="relu", return_sequences=True),
        L.Dropout(0.2),
        L.LSTM(4, activation="relu"),
        L.Dense(3, activation="tanh"), L.Dense(2)]), 3


def main() -> None:
    expected = {}
    rng = np.random.default_rng(0)
    for name, model, features in models():
        for layer in model.layers:
            for variable in layer.weights:  # non-trivial biases too
                variable.assign(variable + rng.normal(0, 0.3, variable.shape).astype("f4"))
        x = (rng.standard_normal((3, 9, features)) * 2).astype(np.float32)
        model.save(HERE / f"{name}.h5", save_format="h5")
        expected[f"{name}/x"] = x
        expected[f"{name}/y"] = model(x, training=False).numpy()
    np.savez(HERE / "expected.npz", **expected)
    print(f"tf {tf.__version__}: wrote {sorted(p.name for p in HERE.glob('*.h5'))}")


if __name__ == "__main__":
    main()
