"""The kernels against the float64 reference in tests/naive.py, on every path."""

import numpy as np
import pytest

from statecast.kernels import Engine, engine, pack_network
from statecast.kernels.engine import PATHS
from tests import naive
from tests.factories import random_dense, random_layer

ATOL = RTOL = 1e-5


@pytest.fixture(autouse=True, params=PATHS)
def path(request, monkeypatch):
    """Every test runs on every path, whatever its shape: the fused loops (normally one
    stream, one step), the panel products (everything else) and the split path (normally one
    stream of a wide layer, with ``spread`` on and more than one thread)."""
    monkeypatch.setattr(engine, "SPREAD_MIN_HIDDEN", 1)

    def forced(self, x, arena, slots, y, head_out, *, check=True):
        if check:
            self.check(x, arena, slots, y, head_out)
        self.forward_on(request.param, x, arena, slots, y, head_out)

    monkeypatch.setattr(Engine, "forward", forced)
    return request.param


def run_kernel(layers, head, x, every_step=False, arena=None, slots=None):
    net = pack_network(layers, head, every_step)
    batch, steps, _ = x.shape
    if arena is None:
        arena = np.zeros((batch, net.state_size), np.float32)
    if slots is None:
        slots = np.arange(batch, dtype=np.int64)
    y = np.full((batch, steps, net.output_size), np.nan, np.float32)
    head_out = np.full((batch * steps if net.head_every_step else batch, net.head_size), np.nan,
                       np.float32)
    Engine(net).forward(x, arena, slots, y, head_out)
    return net, y, arena, head_out


def states_of(net, arena, slots):
    rows = arena[slots]
    return [(rows[:, h:h + hw], rows[:, c:c + cw] if c >= 0 else None)
            for h, hw, c, cw in net.state_offsets]


def assert_matches_naive(layers, head, x, every_step=False, state=None):
    batch = x.shape[0]
    net = pack_network(layers, head, every_step)
    arena = np.zeros((batch, net.state_size), np.float32)
    if state is not None:
        for (h, c), (h_at, hw, c_at, cw) in zip(state, net.state_offsets, strict=True):
            arena[:, h_at:h_at + hw] = h
            if c is not None:
                arena[:, c_at:c_at + cw] = c
    _, y, arena, head_out = run_kernel(layers, head, x, every_step, arena)
    ref_y, ref_state, ref_head = naive.run(layers, head, x, state, every_step)
    np.testing.assert_allclose(y, ref_y, atol=ATOL, rtol=RTOL)
    for (h, c), (ref_h, ref_c) in zip(states_of(net, arena, np.arange(batch)), ref_state,
                                      strict=True):
        np.testing.assert_allclose(h, ref_h, atol=ATOL, rtol=RTOL)
        if ref_c is not None:
            np.testing.assert_allclose(c, ref_c, atol=ATOL, rtol=RTOL)
    if head:
        np.testing.assert_allclose(head_out.reshape(ref_head.shape), ref_head, atol=ATOL,
                                   rtol=RTOL)


@pytest.mark.parametrize("batch,steps", [(1, 1), (3, 7), (20, 4)])
def test_lstm_two_layers_with_head(batch, steps):
    rng = np.random.default_rng(batch * 10 + steps)
    layers = [random_layer(rng, "lstm", 5, 8), random_layer(rng, "lstm", 8, 6)]
    head = [random_dense(rng, 6, 4, "relu"), random_dense(rng, 4, 3)]
    x = rng.standard_normal((batch, steps, 5)).astype(np.float32)
    assert_matches_naive(layers, head, x)


def test_lstm_projection_and_widths_that_differ_per_layer():
    rng = np.random.default_rng(1)
    layers = [random_layer(rng, "lstm", 3, 12, proj=5), random_layer(rng, "lstm", 5, 7),
              random_layer(rng, "lstm", 7, 9, proj=2)]
    x = rng.standard_normal((4, 6, 3)).astype(np.float32)
    state = [(rng.standard_normal((4, lay.output_size)), rng.standard_normal((4, lay.hidden_size)))
             for lay in layers]
    assert_matches_naive(layers, [], x, state=state)


@pytest.mark.parametrize("gate,cell,hidden", [
    ("hard_sigmoid", "relu", "relu"),
    ("sigmoid", "linear", "linear"),
    ("sigmoid", "softsign", "elu"),
    ("hard_sigmoid", "tanh", "softplus"),
])
def test_lstm_activations(gate, cell, hidden):
    rng = np.random.default_rng(2)
    layers = [random_layer(rng, "lstm", 4, 6, gate_activation=gate, cell_activation=cell,
                           hidden_activation=hidden)]
    x = (rng.standard_normal((3, 9, 4)) * 2).astype(np.float32)
    assert_matches_naive(layers, [], x)


def test_lstm_peepholes_clip_and_coupled_input_forget():
    rng = np.random.default_rng(3)
    layers = [random_layer(rng, "lstm", 4, 6, peephole=True, clip=1.5, scale=1.0),
              random_layer(rng, "lstm", 6, 5, peephole=True, input_forget=True)]
    x = (rng.standard_normal((5, 8, 4)) * 3).astype(np.float32)
    assert_matches_naive(layers, [], x)


@pytest.mark.parametrize("reset_after", [True, False])
def test_gru_reset_gate_before_and_after_the_matmul(reset_after):
    rng = np.random.default_rng(4)
    layers = [random_layer(rng, "gru", 3, 7, reset_after=reset_after),
              random_layer(rng, "gru", 7, 4, reset_after=reset_after, clip=2.0)]
    x = rng.standard_normal((6, 5, 3)).astype(np.float32)
    state = [(rng.standard_normal((6, lay.hidden_size)), None) for lay in layers]
    assert_matches_naive(layers, [random_dense(rng, 4, 2)], x, state=state)


def test_mixed_lstm_and_gru_stack_with_head_on_every_step():
    rng = np.random.default_rng(5)
    layers = [random_layer(rng, "gru", 2, 5, gate_activation="hard_sigmoid"),
              random_layer(rng, "lstm", 5, 6, proj=3)]
    head = [random_dense(rng, 3, 4, "tanh"), random_dense(rng, 4, 2)]
    x = rng.standard_normal((3, 6, 2)).astype(np.float32)
    assert_matches_naive(layers, head, x, every_step=True)


def test_saturated_gates_stay_finite_and_exact():
    rng = np.random.default_rng(6)
    layers = [random_layer(rng, "lstm", 3, 8, scale=3.0), random_layer(rng, "gru", 8, 4,
                                                                        scale=3.0)]
    x = (rng.standard_normal((4, 30, 3)) * 100).astype(np.float32)
    _, _, arena, _ = run_kernel(layers, [], x)
    assert np.isfinite(arena).all()
    assert_matches_naive(layers, [], x)


def test_state_is_read_and_written_in_place_at_the_given_slots():
    rng = np.random.default_rng(7)
    layers = [random_layer(rng, "lstm", 2, 4)]
    net = pack_network(layers)
    arena = rng.standard_normal((10, net.state_size)).astype(np.float32)
    before = arena.copy()
    slots = np.array([7, 2, 5], np.int64)
    x = rng.standard_normal((3, 4, 2)).astype(np.float32)
    _, y, arena_after, _ = run_kernel(layers, [], x, arena=arena, slots=slots)
    assert arena_after is arena
    untouched = [r for r in range(10) if r not in slots]
    np.testing.assert_array_equal(arena[untouched], before[untouched])
    start = [(before[slots, 0:4], before[slots, 4:8])]
    ref_y, ref_state, _ = naive.run(layers, [], x, start)
    np.testing.assert_allclose(y, ref_y, atol=ATOL, rtol=RTOL)
    np.testing.assert_allclose(arena[slots, 0:4], ref_state[0][0], atol=ATOL, rtol=RTOL)
    np.testing.assert_allclose(arena[slots, 4:8], ref_state[0][1], atol=ATOL, rtol=RTOL)


def test_chunked_windows_with_state_carried_equal_one_window():
    rng = np.random.default_rng(8)
    layers = [random_layer(rng, "lstm", 3, 6, proj=4), random_layer(rng, "gru", 4, 5)]
    head = [random_dense(rng, 5, 2)]
    x = rng.standard_normal((5, 12, 3)).astype(np.float32)
    _, y_whole, arena_whole, head_whole = run_kernel(layers, head, x)
    arena = np.zeros_like(arena_whole)
    parts = []
    for start, stop in ((0, 1), (1, 5), (5, 12)):
        _, y_part, arena, head_part = run_kernel(layers, head, np.ascontiguousarray(
            x[:, start:stop]), arena=arena)
        parts.append(y_part)
    # Equal to float32 rounding: one step reads [w_ih; w_hh] in one pass, several steps
    # project the inputs of the whole chunk first (another order of the same sums).
    np.testing.assert_allclose(np.concatenate(parts, axis=1), y_whole, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(arena, arena_whole, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(head_part, head_whole, rtol=1e-6, atol=1e-6)
