"""What callers of the kernel may rely on, beyond the numbers themselves."""

import numba
import numpy as np
import pytest

from statecast.kernels import Engine, engine, pack_network
from statecast.kernels.config import STREAM_BLOCK
from statecast.kernels.engine import PATHS
from tests.factories import random_dense, random_layer


@pytest.fixture(scope="module")
def net():
    rng = np.random.default_rng(0)
    return pack_network([random_layer(rng, "lstm", 3, 10, proj=4),
                         random_layer(rng, "gru", 4, 6)], [random_dense(rng, 6, 2)])


@pytest.fixture(scope="module")
def wide():
    """Layers every path runs whole, the split path included (LSTM without projection, GRU
    with the reset after the product), and one more GRU with the reset before."""
    rng = np.random.default_rng(7)
    return pack_network([random_layer(rng, "lstm", 3, 40), random_layer(rng, "gru", 40, 24),
                         random_layer(rng, "gru", 24, 9, reset_after=False)],
                        [random_dense(rng, 9, 3)])


def forward(net, x, arena, slots, y, head):
    Engine(net).forward(x, arena, slots, y, head)


def buffers(net, batch, steps, rng):
    x = rng.standard_normal((batch, steps, net.input_size)).astype(np.float32)
    arena = rng.standard_normal((batch, net.state_size)).astype(np.float32)
    slots = np.arange(batch, dtype=np.int64)
    y = np.empty((batch, steps, net.output_size), np.float32)
    head = np.empty((batch, net.head_size), np.float32)
    return x, arena, slots, y, head


@pytest.mark.parametrize("batch", [STREAM_BLOCK + 7, 3, 300])
def test_results_do_not_depend_on_the_thread_count(net, batch):
    """The panel path with two blocks and with several (and its tiles' row remainders)."""
    rng = np.random.default_rng(1)
    x, arena, slots, y, head = buffers(net, batch, 6, rng)
    results = []
    before = numba.get_num_threads()
    try:
        for threads in (1, numba.config.NUMBA_NUM_THREADS):
            numba.set_num_threads(threads)
            state = arena.copy()
            forward(net, x, state, slots, y, head)
            results.append((y.copy(), state, head.copy()))
    finally:
        numba.set_num_threads(before)
    for a, b in zip(results[0], results[1], strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("steps", [1, 5])
def test_every_path_gives_a_stream_the_same_bits(wide, monkeypatch, steps):
    """The same 43 streams on the fused loops, the panel products and the split path: each
    gate is the same chain of multiply-adds on every path (fused where the compile target
    has FMA, a multiply then an add where it has not), so the results are bit-identical.
    This holds on the host, on ``NUMBA_CPU_NAME=generic`` and without JIT
    (``tests/kernels/test_targets.py`` runs this module there)."""
    monkeypatch.setattr(engine, "SPREAD_MIN_HIDDEN", 1)
    rng = np.random.default_rng(11)
    x, arena, slots, y, head = buffers(wide, 43, steps, rng)
    slots = rng.permutation(60)[:43].astype(np.int64)
    arena = rng.standard_normal((60, wide.state_size)).astype(np.float32)
    runner = Engine(wide)
    results = {}
    for path in PATHS:
        state = arena.copy()
        runner.forward_on(path, x, state, slots, y, head)
        results[path] = (y.copy(), state, head.copy())
    for path in PATHS[1:]:
        for ours, theirs in zip(results[path], results[PATHS[0]], strict=True):
            np.testing.assert_array_equal(ours, theirs, err_msg=path)


def test_a_stream_does_not_depend_on_the_other_streams_of_its_call(net):
    """Alone it takes the fused loops or the panels, among 300 the panels in blocks on
    several threads: the results are identical."""
    rng = np.random.default_rng(2)
    x, arena, slots, y, head = buffers(net, 300, 4, rng)
    full_arena = arena.copy()
    forward(net, x, full_arena, slots, y, head)
    for index in (0, 17, 299):
        alone = arena[index:index + 1].copy()
        y1 = np.empty((1, 4, net.output_size), np.float32)
        h1 = np.empty((1, net.head_size), np.float32)
        forward(net, np.ascontiguousarray(x[index:index + 1]), alone,
                np.zeros(1, np.int64), y1, h1)
        np.testing.assert_array_equal(y1[0], y[index])
        np.testing.assert_array_equal(alone[0], full_arena[index])
        np.testing.assert_array_equal(h1[0], head[index])


@pytest.mark.parametrize("change,error,match", [
    (lambda a: a.update(x=a["x"].astype(np.float64)), TypeError, "x must be float32"),
    (lambda a: a.update(x=a["x"][:, :, :2].copy()), ValueError, "x has 2 features"),
    (lambda a: a.update(x=np.asfortranarray(a["x"])), ValueError, "x must be C-contiguous"),
    (lambda a: a.update(x=a["x"][:, :0].copy()), ValueError, "at least one stream and one step"),
    (lambda a: a.update(arena=a["arena"][:, :-1].copy()), ValueError, "arena rows must hold"),
    (lambda a: a.update(slots=a["slots"].astype(np.int32)), TypeError, "slots must be int64"),
    (lambda a: a.update(slots=np.array([0, 0, 1], np.int64)), ValueError, "must be distinct"),
    (lambda a: a.update(slots=np.array([0, 1, 9], np.int64)), ValueError, r"slots must lie in"),
    (lambda a: a.update(slots=np.array([0, 1], np.int64)), ValueError, "one arena row per"),
    (lambda a: a.update(y=a["y"][:, :, :1].copy()), ValueError, "y must have shape"),
    (lambda a: a.update(head=np.empty((3, 1, 2), np.float32)), ValueError, "head_out must"),
    (lambda a: a.update(head=np.empty((3, 3), np.float32)), ValueError, "head_out must"),
    (lambda a: a.update(x=[[[1.0]]]), TypeError, "x must be a numpy array"),
])
def test_every_argument_error_is_raised_before_the_kernel_runs(net, change, error, match):
    rng = np.random.default_rng(3)
    x, arena, slots, y, head = buffers(net, 3, 2, rng)
    args = {"x": x, "arena": arena, "slots": slots, "y": y, "head": head}
    change(args)
    before = arena.copy()
    with pytest.raises(error, match=match):
        forward(net, args["x"], args["arena"], args["slots"], args["y"], args["head"])
    np.testing.assert_array_equal(arena, before)


def test_check_accepts_what_forward_runs(net):
    rng = np.random.default_rng(4)
    x, arena, slots, y, head = buffers(net, 2, 3, rng)
    Engine(net).check(x, arena, slots, y, head)


@pytest.mark.parametrize("streams,steps,spread,threads,expected", [
    (1, 1, False, 2, "fused"), (1, 24, False, 2, "panels"), (64, 1, False, 2, "panels"),
    (1, 24, True, 2, "split"), (1, 1, True, 2, "split"), (2, 24, True, 2, "panels"),
    (1, 24, True, 1, "panels"), (1, 1, True, 1, "fused"),
])
def test_the_engine_chooses_by_shape_and_setting_alone(streams, steps, spread, threads,
                                                        expected):
    """A wide layer (256 units) spreads one stream over the threads only when ``spread``
    is on and there are threads to spread over; no timing, no state."""
    rng = np.random.default_rng(9)
    runner = Engine(pack_network([random_layer(rng, "lstm", 2, 256)]), spread=spread)
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
        if numba.get_num_threads() < threads:
            pytest.skip("needs two Numba threads")
        assert runner.path(streams, steps) == expected
    finally:
        numba.set_num_threads(before)


def test_pack_network_names_the_layer_that_does_not_fit():
    rng = np.random.default_rng(5)
    with pytest.raises(ValueError, match="layer 1: takes 5 inputs but receives 4"):
        pack_network([random_layer(rng, "lstm", 3, 4), random_layer(rng, "lstm", 5, 4)])
    with pytest.raises(ValueError, match="head layer 0: weight must be"):
        pack_network([random_layer(rng, "gru", 3, 4)], [random_dense(rng, 5, 1)])
