"""The panel products (kernels.panels) against float64 NumPy, and the panel layout."""


import numpy as np
import pytest

from statecast.kernels import Engine, pack_network
from statecast.kernels.operands import Panels, Strided
from statecast.kernels.panels import PANEL, pack_panels, padded_width, panel_product
from tests.factories import random_layer


def pack(weights):
    """``[K, N]`` -> panels ``[N' / PANEL, K, PANEL]`` flattened, zero-padded to ``N'``."""
    k, n = weights.shape
    wide = np.zeros((k, padded_width(n)), np.float32)
    wide[:, :n] = weights
    return np.ascontiguousarray(wide.reshape(k, -1, PANEL).transpose(1, 0, 2)).ravel()


@pytest.mark.parametrize("rows", [1, 2, 3, 4, 5, 7, 9])
@pytest.mark.parametrize("k,n", [(1, PANEL), (13, 2 * PANEL), (40, PANEL + 16), (5, 7 * PANEL)])
def test_product_matches_numpy(rows, k, n):
    rng = np.random.default_rng(rows * 100 + k)
    a = rng.standard_normal((rows, k)).astype(np.float32)
    weights = rng.standard_normal((k, n)).astype(np.float32)
    bias = rng.standard_normal(padded_width(n)).astype(np.float32)
    out = np.full((rows, padded_width(n)), np.nan, np.float32)
    panel_product(rows, Strided(a, 0, k),
                  Panels(pack(weights), 0, k * PANEL, k, padded_width(n) // PANEL),
                  Strided(bias, 0, 0), Strided(out, 0, padded_width(n)))
    expected = bias[:n] + a.astype(np.float64) @ weights
    np.testing.assert_allclose(out[:, :n], expected, rtol=1e-5, atol=1e-5)
    assert np.all(out[:, n:] == bias[n:])  # padding columns: the src value, no NaN


def test_a_row_is_the_same_whatever_rows_share_its_tile():
    """Each output is one multiply-add chain: bit-identical alone, in a full tile or in a
    remainder tile, and starting from per-row ``src`` rows at any offset."""
    rng = np.random.default_rng(3)
    k, n = 37, 2 * PANEL
    a = rng.standard_normal((11, k)).astype(np.float32)
    packed = pack(rng.standard_normal((k, n)).astype(np.float32))
    src = rng.standard_normal((11, n)).astype(np.float32)
    together = np.empty((11, n), np.float32)
    w = Panels(packed, 0, k * PANEL, k, 2)
    panel_product(11, Strided(a, 0, k), w, Strided(src, 0, n), Strided(together, 0, n))
    for row in range(11):
        alone = np.empty((1, n), np.float32)
        panel_product(1, Strided(a, row * k, k), w, Strided(src, row * n, n),
                      Strided(alone, 0, n))
        np.testing.assert_array_equal(alone[0], together[row])


def test_layout_holds_biases_and_stacked_weights():
    rng = np.random.default_rng(4)
    layer = random_layer(rng, "gru", 8, 10)
    net = pack_network([random_layer(rng, "lstm", 5, 8), layer])
    weights, offsets = pack_panels(net)
    width = padded_width(30)
    block = weights[offsets[1]:]
    np.testing.assert_array_equal(block[:30], layer.b_ih)
    np.testing.assert_array_equal(block[width:width + 30], layer.b_hh)
    np.testing.assert_array_equal(block[2 * width:2 * width + 30], layer.b_ih + layer.b_hh)
    panels = block[3 * width:3 * width + (8 + 10) * width].reshape(width // PANEL, 18, PANEL)
    stacked = np.concatenate(panels, axis=1)[:, :30]
    np.testing.assert_array_equal(stacked, np.concatenate([layer.w_ih, layer.w_hh]))
    assert weights.ctypes.data % 64 == 0


def test_projecting_a_chunk_of_steps_gives_the_per_step_products():
    """One stream projects the inputs of many steps at once; 600 streams of 160 units (a
    block of 256 streams: no room for two steps' projections) run one product per step.
    Each output's chain of multiply-adds is the same: identical results."""
    rng = np.random.default_rng(5)
    net = pack_network([random_layer(rng, "lstm", 3, 160, scale=0.2),
                        random_layer(rng, "gru", 160, 160, scale=0.2)])
    x = rng.standard_normal((600, 5, 3)).astype(np.float32)
    arena = (rng.standard_normal((600, net.state_size)) * 0.5).astype(np.float32)
    y = np.empty((600, 5, net.output_size), np.float32)
    head = np.empty((600, 0), np.float32)
    state = arena.copy()
    runner = Engine(net)
    runner.forward(x, state, np.arange(600, dtype=np.int64), y, head)
    for index in (0, 599):
        alone = arena[index:index + 1].copy()
        y1 = np.empty((1, 5, net.output_size), np.float32)
        runner.forward(np.ascontiguousarray(x[index:index + 1]), alone, np.zeros(1, np.int64),
                       y1, np.empty((1, 0), np.float32))
        np.testing.assert_array_equal(y1[0], y[index])
        np.testing.assert_array_equal(alone[0], state[index])
