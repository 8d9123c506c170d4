"""The split path (kernels.split): a step's hidden units spread over threads give the
fused loops' results bit for bit, for any number of parts and threads."""

import numba
import numpy as np
import pytest

from statecast.kernels import Engine, pack_network
from statecast.kernels.fused import forward_fused
from statecast.kernels.split import _forward_split, pack_split, part_size
from tests.factories import random_dense, random_layer


def buffers(net, batch, steps, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, steps, net.input_size)).astype(np.float32)
    arena = (rng.standard_normal((batch, net.state_size)) * 0.5).astype(np.float32)
    y = np.empty((batch, steps, net.output_size), np.float32)
    head = np.empty((batch, net.head_size), np.float32)
    return x, arena, np.arange(batch, dtype=np.int64), y, head


def fused(net, x, arena, slots, y, head):
    forward_fused(x, net.params, net.meta, arena, slots, y, head)


@pytest.fixture(scope="module")
def wide():
    """LSTM, GRU (reset after the product, clipped), GRU with the reset before (not split),
    LSTM with peepholes, clip and coupled gates, a projected LSTM (not split), a head."""
    rng = np.random.default_rng(0)
    return pack_network(
        [random_layer(rng, "lstm", 5, 70, scale=0.2),
         random_layer(rng, "gru", 70, 40, clip=1.5, scale=0.2),
         random_layer(rng, "gru", 40, 33, reset_after=False, scale=0.2),
         random_layer(rng, "lstm", 33, 67, peephole=True, clip=2.0, input_forget=True,
                      scale=0.2),
         random_layer(rng, "lstm", 67, 30, proj=20, scale=0.2)],
        [random_dense(rng, 20, 3, "tanh"), random_dense(rng, 3, 2)])


@pytest.mark.parametrize("parts", [1, 2, 3, 5])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("batch,steps", [(1, 1), (1, 9), (3, 4),
                                         pytest.param(16, 40, marks=pytest.mark.jit_only)])
def test_split_equals_the_fused_loops_bit_for_bit(wide, parts, threads, batch, steps):
    """More parts than threads, one thread for several parts (the claims let it do all of
    them), parts of unequal width and chunked input projections."""
    if threads > numba.config.NUMBA_NUM_THREADS:
        pytest.skip("one core")
    x, arena, slots, y, head = buffers(wide, batch, steps, batch * steps)
    expected_arena = arena.copy()
    expected_y, expected_head = y.copy(), head.copy()
    fused(wide, x, expected_arena, slots, expected_y, expected_head)
    weights, offsets = pack_split(wide, parts, 1)
    before = numba.get_num_threads()
    numba.set_num_threads(threads)
    try:
        _forward_split(x, wide.params, wide.meta, arena, slots, y, head, weights, offsets)
    finally:
        numba.set_num_threads(before)
    np.testing.assert_array_equal(y, expected_y)
    np.testing.assert_array_equal(arena, expected_arena)
    np.testing.assert_array_equal(head, expected_head)


def test_pack_split_skips_reset_before_gru_projected_and_narrow_layers(wide):
    _, offsets = pack_split(wide, 2, 68)
    assert offsets[:, 0].tolist() == [0, -1, -1, -1, -1]
    _, offsets = pack_split(wide, 2, 1)
    assert (offsets[[0, 1, 3]] >= 0).all() and (offsets[[2, 4]] == -1).all()
    assert wide.widest_splittable == 70


def test_parts_cover_the_units_in_whole_cache_lines_when_wide():
    assert part_size(256, 2) == 128
    assert part_size(100, 2) == 64  # 64 + 36
    assert part_size(70, 3) == 24  # narrow: an even share
    assert part_size(100, 3) == 48  # 48 + 48 + 4
    assert part_size(10, 4) == 3


def test_an_engine_packs_the_split_weights_once_per_thread_count():
    rng = np.random.default_rng(3)
    runner = Engine(pack_network([random_layer(rng, "lstm", 2, 256)]), spread=True)
    assert runner._split_weights(2) is runner._split_weights(2)


def test_concurrent_spread_calls_from_many_threads_give_one_threads_results():
    """Python threads calling one engine with ``spread`` on at once: more runnable threads
    than cores, parallel regions of several callers on the same cores, split and panel
    calls side by side; every result equals a lone call's, and nothing hangs."""
    import threading

    rng = np.random.default_rng(4)
    net = pack_network([random_layer(rng, "lstm", 3, 128, scale=0.2),
                        random_layer(rng, "lstm", 128, 128, scale=0.2)],
                       [random_dense(rng, 128, 2)])
    cases = [buffers(net, 1 + i % 3, 5 + i, 10 + i) for i in range(6)]
    expected = []
    for x, arena, slots, y, head in cases:
        state, out, h = arena.copy(), y.copy(), head.copy()
        fused(net, x, state, slots, out, h)
        expected.append((state, out, h))
    failures = []
    runner = Engine(net, spread=True)

    def run(index):
        x, arena, slots, y, head = cases[index]
        for _ in range(15):
            state, out, h = arena.copy(), np.empty_like(y), np.empty_like(head)
            runner.forward(x, state, slots, out, h)
            for got, want in zip((state, out, h), expected[index], strict=True):
                if not np.array_equal(got, want):
                    failures.append(index)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(cases))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads)
    assert failures == []
