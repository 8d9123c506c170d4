"""Small random networks for the kernel tests."""

from __future__ import annotations

import numpy as np

from statecast.kernels import DenseLayer, RecurrentLayer, activation


def random_layer(rng: np.random.Generator, cell: str, inputs: int, hidden: int, *,
                 proj: int = 0, peephole: bool = False, scale: float = 0.4,
                 **options) -> RecurrentLayer:
    gates = (4 if cell == "lstm" else 3) * hidden
    recurrent = proj or hidden

    def w(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    for key in ("gate_activation", "cell_activation", "hidden_activation"):
        if key in options and isinstance(options[key], str):
            options[key] = activation(options[key])
    return RecurrentLayer(
        cell=cell, w_ih=w(inputs, gates), w_hh=w(recurrent, gates), b_ih=w(gates),
        b_hh=w(gates), w_hr=w(hidden, proj) if proj else None,
        peephole=w(3, hidden) if peephole else None, **options)


def random_dense(rng: np.random.Generator, inputs: int, outputs: int,
                 act: str = "linear") -> DenseLayer:
    return DenseLayer((rng.standard_normal((inputs, outputs)) * 0.3).astype(np.float32),
                      (rng.standard_normal(outputs) * 0.1).astype(np.float32), activation(act))
