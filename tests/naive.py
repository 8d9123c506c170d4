"""Deliberately simple float64 NumPy references for the kernels: one stream, one step at a
time, straight from the published equations (PyTorch / Keras / ONNX docs)."""

from __future__ import annotations

import numpy as np

from statecast.kernels.network import DenseLayer, RecurrentLayer


def act(name: str, x: np.ndarray, alpha: float, beta: float) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    table = {
        "sigmoid": lambda: 1.0 / (1.0 + np.exp(-x)),
        "tanh": lambda: np.tanh(x),
        "relu": lambda: np.maximum(x, 0.0),
        "linear": lambda: alpha * x + beta,
        "affine": lambda: alpha * x + beta,
        "hard_sigmoid": lambda: np.clip(alpha * x + beta, 0.0, 1.0),
        "leaky_relu": lambda: np.where(x >= 0, x, alpha * x),
        "thresholded_relu": lambda: np.where(x > alpha, x, 0.0),
        "scaled_tanh": lambda: alpha * np.tanh(beta * x),
        "elu": lambda: np.where(x >= 0, x, alpha * np.expm1(np.minimum(x, 0))),
        "softsign": lambda: x / (1.0 + np.abs(x)),
        "softplus": lambda: np.logaddexp(0.0, x),
    }
    with np.errstate(over="ignore"):
        return table[name]()


def lstm_step(layer: RecurrentLayer, x: np.ndarray, h: np.ndarray, c: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray]:
    hidden = layer.hidden_size
    g = x @ layer.w_ih.astype(np.float64) + h @ layer.w_hh.astype(np.float64) \
        + layer.b_ih + layer.b_hh
    gi, gf, gc, go = (g[k * hidden:(k + 1) * hidden] for k in range(4))
    p = layer.peephole.astype(np.float64) if layer.peephole is not None else np.zeros((3, hidden))
    gi = gi + p[0] * c
    gf = gf + p[1] * c
    clip = layer.clip or np.inf
    gi, gf, gc = (np.clip(v, -clip, clip) for v in (gi, gf, gc))
    i = act(*_a(layer.gate_activation, gi))
    f = 1.0 - i if layer.input_forget else act(*_a(layer.gate_activation, gf))
    c_new = f * c + i * act(*_a(layer.cell_activation, gc))
    o = act(*_a(layer.gate_activation, np.clip(go + p[2] * c_new, -clip, clip)))
    h_full = o * act(*_a(layer.hidden_activation, c_new))
    h_new = h_full @ layer.w_hr.astype(np.float64) if layer.w_hr is not None else h_full
    return h_new, c_new


def gru_step(layer: RecurrentLayer, x: np.ndarray, h: np.ndarray) -> np.ndarray:
    hidden = layer.hidden_size
    w_hh = layer.w_hh.astype(np.float64)
    gx = x @ layer.w_ih.astype(np.float64) + layer.b_ih
    gh = h @ w_hh + layer.b_hh
    clip = layer.clip or np.inf
    r = act(*_a(layer.gate_activation, np.clip(gx[:hidden] + gh[:hidden], -clip, clip)))
    z = act(*_a(layer.gate_activation,
                np.clip(gx[hidden:2 * hidden] + gh[hidden:2 * hidden], -clip, clip)))
    if layer.reset_after:
        n_pre = gx[2 * hidden:] + r * gh[2 * hidden:]
    else:
        n_pre = gx[2 * hidden:] + (r * h) @ w_hh[:, 2 * hidden:] + layer.b_hh[2 * hidden:]
    n = act(*_a(layer.cell_activation, np.clip(n_pre, -clip, clip)))
    return (1.0 - z) * n + z * h


def _a(spec: tuple[str, float, float], x: np.ndarray) -> tuple[str, np.ndarray, float, float]:
    return spec[0], x, spec[1], spec[2]


def run(layers: list[RecurrentLayer], head: list[DenseLayer], x: np.ndarray,
        state: list[tuple[np.ndarray, np.ndarray | None]] | None = None,
        every_step: bool = False):
    """x [B, T, I] -> (y [B, T, out], [(h [B, .], c [B, .] or None)] per layer, head)."""
    batch, steps, _ = x.shape
    if state is None:
        state = [(np.zeros((batch, layer.output_size)),
                  np.zeros((batch, layer.hidden_size)) if layer.cell == "lstm" else None)
                 for layer in layers]
    hs = [np.array(h, dtype=np.float64) for h, _ in state]
    cs = [None if c is None else np.array(c, dtype=np.float64) for _, c in state]
    seq = x.astype(np.float64)
    for index, layer in enumerate(layers):
        out = np.zeros((batch, steps, layer.output_size))
        for b in range(batch):
            for t in range(steps):
                if layer.cell == "lstm":
                    hs[index][b], cs[index][b] = lstm_step(layer, seq[b, t], hs[index][b],
                                                           cs[index][b])
                else:
                    hs[index][b] = gru_step(layer, seq[b, t], hs[index][b])
                out[b, t] = hs[index][b]
        seq = out
    heads = None
    if head:
        heads = seq if every_step else seq[:, -1:]
        for dense in head:
            heads = act(dense.activation[0], heads @ dense.weight + dense.bias,
                        dense.activation[1], dense.activation[2])
    return seq, list(zip(hs, cs, strict=True)), heads
