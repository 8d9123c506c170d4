"""The split path (kernels.split): a step's hidden units spread over threads give the
fused loops' results bit for bit, for any number of parts and threads."""

import numba
import numpy as np
import pytest

from kernels import forward, pack_network, recurrent
from kernels.split import _forward_split, pack_split, part_size, split_weights
from tests.factories import random_dense, random_layer


def buffers(net, batch, steps, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, steps, net.input_size)).astype(np.float32)
    arena = (rng.standard_normal((batch, net.state_size)) * 0.5).astype(np.float32)
    y = np.empty((batch, steps, net.output_size), np.float32)
    head = np.empty((batch, net.head_size), np.float32)
    return x, arena, np.arange(batch, dtype=np.int64), y, head


@pytest.fixture(autouse=True)
def few_streams_not_panels(monkeypatch):
    """Calls of several streams take the panel path (kernels.panels); the split path still
    handles up to a block of streams, which these tests check."""
    monkeypatch.setattr(recurrent, "PANEL_MIN_STREAMS", 1 << 62)


def fused(net, x, arena, slots, y, head):
    recurrent._forward_serial(x, net.params, net.meta, arena, slots, y, head)


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
@pytest.mark.parametrize("batch,steps", [(1, 1), (1, 9), (3, 4), (16, 40)])
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
        _forward_split(x, wide.params, wide.meta, arena, slots, y, head, weights, offsets, 1)
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


def test_forward_takes_the_split_path_and_caches_its_weights(monkeypatch):
    """Through the public entry point: the result equals one thread's, and the split copy of
    the weights is made once."""
    rng = np.random.default_rng(1)
    net = pack_network([random_layer(rng, "lstm", 4, 128, scale=0.1)],
                       [random_dense(rng, 128, 2)])
    calls = []
    real = recurrent._forward_split
    monkeypatch.setattr(recurrent, "_forward_split",
                        lambda *args: calls.append(args[-1]) or real(*args))
    monkeypatch.setattr(recurrent, "_last_overlap", -1e9)
    x, arena, slots, y, head = buffers(net, 2, 6, 7)
    expected = arena.copy(), y.copy(), head.copy()
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        forward(net, x, expected[0], slots, expected[1], expected[2])
        assert calls == []
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
        forward(net, x, arena, slots, y, head)  # the fused loops, timed first
        for _ in range(2):  # then the split path, timed
            forward(net, x, arena.copy(), slots, y.copy(), head.copy())
    finally:
        numba.set_num_threads(before)
    if numba.config.NUMBA_NUM_THREADS > 1:
        assert calls[:1] == [128]
        assert len([k for k in net.derived if k[0] == "split"]) == 1
        assert split_weights(net, numba.config.NUMBA_NUM_THREADS, 64) is split_weights(
            net, numba.config.NUMBA_NUM_THREADS, 64)
    np.testing.assert_array_equal(arena, expected[0])
    np.testing.assert_array_equal(y, expected[1])
    np.testing.assert_array_equal(head, expected[2])


@pytest.mark.parametrize("streams,steps,hidden", [(1, 1, 256), (4, 1, 256), (8, 1, 128),
                                                  (16, 1, 64), (1, 2, 128), (4, 2, 64)])
def test_the_narrowest_split_layer_depends_on_the_call(streams, steps, hidden):
    assert recurrent.split_min_hidden(streams, steps) == hidden


def counting_split_calls(monkeypatch, seed):
    """A 1-layer hidden-128 LSTM, and a list that grows by one at each split call (no
    overlap seen yet)."""
    rng = np.random.default_rng(seed)
    net = pack_network([random_layer(rng, "lstm", 4, 128, scale=0.1)])
    calls = []
    real = recurrent._forward_split
    monkeypatch.setattr(recurrent, "_forward_split",
                        lambda *args: calls.append(1) or real(*args))
    monkeypatch.setattr(recurrent, "_last_overlap", -1e9)
    return net, calls


def test_calls_that_overlap_run_on_one_core_each(monkeypatch):
    """Another call in flight: this one takes the fused loops, and so do calls for
    OVERLAP_QUIET seconds after; then splitting resumes."""
    net, calls = counting_split_calls(monkeypatch, 2)
    x, arena, slots, y, head = buffers(net, 1, 3, 3)
    monkeypatch.setattr(recurrent, "_running", {-1})  # somebody else's call
    forward(net, x, arena, slots, y, head)
    assert calls == []
    monkeypatch.setattr(recurrent, "_running", set())
    forward(net, x, arena, slots, y, head)
    assert calls == []  # still within the quiet period
    monkeypatch.setattr(recurrent, "OVERLAP_QUIET", 0.0)
    forward(net, x, arena, slots, y, head)  # one core: its first call, not counted
    forward(net, x, arena, slots, y, head)  # one core, timed
    forward(net, x, arena, slots, y, head)
    assert calls == ([1] if numba.get_num_threads() > 1 else [])
    assert recurrent._running == set()


@pytest.mark.parametrize("quiet", [1.0, -1.0])
def test_concurrent_calls_from_many_threads_give_one_threads_results(monkeypatch, quiet):
    """Python threads calling at once (threaded workers): more runnable threads than cores,
    split and fused calls side by side (and, with ``quiet`` < 0, every call split even
    while others run: parallel regions of several callers on the same two cores); every
    result equals a lone call's, and nothing hangs."""
    import threading

    monkeypatch.setattr(recurrent, "OVERLAP_QUIET", quiet)
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

    def run(index):
        x, arena, slots, y, head = cases[index]
        for _ in range(15):
            state, out, h = arena.copy(), np.empty_like(y), np.empty_like(head)
            forward(net, x, state, slots, out, h)
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


def test_the_faster_path_is_taken_and_the_other_only_tried_now_and_then(monkeypatch):
    """Timings say the split path is slow (say, other work on the cores): it is tried after
    PROBE_EVERY calls, then later and later as each try confirms it; results are the same
    either way."""
    net, calls = counting_split_calls(monkeypatch, 6)
    timing = recurrent._PathTimes()
    timing.seconds = [1e-9, 10.0]  # fused: fast; split: very slow (its tries will show)
    net.derived[("timing", 1, True)] = timing
    x, arena, slots, y, head = buffers(net, 1, 3, 8)
    expected = arena.copy(), y.copy(), head.copy()
    fused(net, x, *expected[:1], slots, *expected[1:])
    for _ in range(3 * recurrent.PROBE_EVERY):
        state = arena.copy()
        forward(net, x, state, slots, y, head)
        np.testing.assert_array_equal(state, expected[0])
        np.testing.assert_array_equal(head, expected[2])
    if numba.get_num_threads() > 1:
        assert 1 <= len(calls) <= 2  # at call PROBE_EVERY, then at least 2x as long after
        assert timing.interval >= 2 * recurrent.PROBE_EVERY


def warmed_times():
    """Path times past each path's first (uncounted) call."""
    timing = recurrent._PathTimes()
    timing.choose()
    timing.record(False, False, 0.4)  # packing and compiling: not counted
    timing.choose()
    timing.record(False, False, 2.0)
    timing.choose()
    timing.record(True, False, 0.3)  # not counted
    return timing


def test_each_path_s_first_call_is_not_counted():
    timing = recurrent._PathTimes()
    assert timing.choose() == (False, False)
    timing.record(False, False, 5.0)
    assert timing.choose() == (False, False)  # again: the first one packed weights
    timing.record(False, False, 2.0)
    assert timing.choose() == (True, False)
    timing.record(True, False, 9.0)
    assert timing.choose() == (True, False)
    timing.record(True, False, 1.0)
    assert timing.seconds == [2.0, 1.0]


def test_path_times_switch_when_the_other_path_turns_faster():
    timing = warmed_times()
    assert timing.choose() == (True, False)  # split, counted this time
    timing.record(True, False, 1.0)
    while True:
        split, probe = timing.choose()
        if probe:
            break
        assert split  # the faster
        timing.record(True, False, 1.0)
    assert not split  # the try: fused, which is now faster
    timing.record(False, True, 1e-3)
    assert timing.interval == recurrent.PROBE_EVERY
    assert timing.choose()[0] is False


def test_one_very_slow_call_does_not_turn_the_choice():
    """A split call whose partner thread lost its core for a scheduler tick is 10-30x its
    usual time: it counts as ``_OUTLIER`` times the average, so the split path stays
    chosen when it was more than that much faster, and is tried again soon otherwise."""
    timing = warmed_times()
    timing.seconds[0] = 4.0
    timing.choose()
    timing.record(True, False, 1.0)
    timing.record(True, False, 30.0)  # one outlier among 1.0s
    assert timing.seconds[1] <= 1.0 + recurrent._TIMING_WEIGHT * (recurrent._OUTLIER - 1.0)
    assert timing.choose()[0] is True


def test_a_slow_first_counted_call_is_measured_against_the_other_path():
    timing = warmed_times()
    timing.choose()
    timing.record(True, False, 100.0)  # fused: 2.0
    assert timing.seconds[1] == recurrent._OUTLIER * 2.0
