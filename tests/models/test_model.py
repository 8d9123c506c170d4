"""Model.run: the state forms it takes, the input policy, scaling, initial states."""

import numpy as np
import pytest

from statecast.models import InvalidInput, Model, ScalingSpec
from tests.models.helpers import tiny_spec, tiny_tensors


@pytest.fixture(scope="module")
def model():
    spec = tiny_spec()
    return Model(spec, tiny_tensors(spec))


def x_of(batch, steps, seed=0):
    return np.random.default_rng(seed).standard_normal((batch, steps, 2)).astype(np.float32)


def test_run_returns_outputs_state_and_head(model):
    y, state, head = model.run(x_of(3, 5))
    assert y.shape == (3, 5, 3) and head.shape == (3, 2)
    assert [h.shape for h in state.h] == [(3, 4), (3, 3)]
    assert state.c[0].shape == (3, 4) and state.c[1] is None
    np.testing.assert_array_equal(state.h[1], y[:, -1])


def test_state_forms_are_equivalent(model):
    x = x_of(2, 4)
    _, first, _ = model.run(x)
    expected = model.run(x, first)
    pairs = [(first.h[0], first.c[0]), (first.h[1],)]
    for given in (pairs, [(h, c) for h, c in zip(first.h, first.c, strict=True)]):
        got = model.run(x, given)
        np.testing.assert_array_equal(got[0], expected[0])
        np.testing.assert_array_equal(got[1].arena, expected[1].arena)


def test_the_given_state_is_not_modified(model):
    _, state, _ = model.run(x_of(2, 3))
    before = state.arena.copy()
    model.run(x_of(2, 3, 1), state)
    np.testing.assert_array_equal(state.arena, before)


def test_strided_and_float64_inputs_give_bit_identical_results(model):
    x = x_of(4, 6)
    reference = model.run(x)
    wide = np.zeros((8, 6, 4), np.float32)
    wide[::2, :, ::2] = x
    strided = wide[::2, :, ::2]
    assert not strided.flags.c_contiguous
    for variant in (strided, x.astype(np.float64), x.tolist()):
        got = model.run(variant)
        np.testing.assert_array_equal(got[0], reference[0])
        np.testing.assert_array_equal(got[2], reference[2])


@pytest.mark.parametrize("x,match", [
    (np.zeros((2, 3, 5), np.float32), "x has 5 features per step; the model takes 2"),
    (np.zeros((3, 2), np.float32), r"x must be \[batch, time, features\]"),
    (np.zeros((2, 0, 2), np.float32), "at least one stream and one step"),
    (np.array([[["a", "b"]]]), "must hold real numbers"),
    (np.zeros((1, 1, 2), np.complex64), "must hold real numbers"),
])
def test_bad_inputs_are_refused(model, x, match):
    with pytest.raises(InvalidInput, match=match):
        model.run(x)


def test_nan_propagates_as_in_the_frameworks_and_stays_in_the_returned_state(model):
    _, clean, _ = model.run(x_of(1, 2))
    y, _, head = model.run(np.array([[[np.nan, 0.0]]], np.float32), clean)
    assert np.isnan(y).all() and np.isnan(head).all()
    assert np.isfinite(clean.arena).all()


def test_bad_states_are_refused(model):
    with pytest.raises(InvalidInput, match=r"h of layer 0 must have shape \(2, 4\)"):
        model.run(x_of(2, 1), [(np.zeros((2, 3)), np.zeros((2, 4))), (np.zeros((2, 3)),)])
    with pytest.raises(InvalidInput, match="layer 0 is an LSTM: its c is required"):
        model.run(x_of(2, 1), [(np.zeros((2, 4)),), (np.zeros((2, 3)),)])
    with pytest.raises(InvalidInput, match="layer 1 is a GRU: it has no c"):
        model.run(x_of(2, 1), [(np.zeros((2, 4)), np.zeros((2, 4))),
                               (np.zeros((2, 3)), np.zeros((2, 3)))])


def test_initial_state_from_the_weights():
    spec = tiny_spec(initial_state=True)
    tensors = tiny_tensors(spec)
    model = Model(spec, tensors)
    given = [(np.tile(tensors["initial.0.h"], (3, 1)), np.tile(tensors["initial.0.c"], (3, 1))),
             (np.tile(tensors["initial.1.h"], (3, 1)),)]
    np.testing.assert_array_equal(model.run(x_of(3, 2))[0], model.run(x_of(3, 2), given)[0])
    arena = model.new_arena(2)
    np.testing.assert_array_equal(arena[1, :4], tensors["initial.0.h"])


def test_scaling_in_and_out():
    scaling = ScalingSpec("standard", (10.0, 0.0), (2.0, 1.0), (10.0,), (2.0,))
    model = Model(tiny_spec(scaling=scaling), tiny_tensors(tiny_spec()))
    np.testing.assert_allclose(model.scale_inputs(np.array([[12.0, 3.0]])), [[1.0, 3.0]])
    np.testing.assert_allclose(model.unscale_targets(np.array([[1.5]])), [[13.0]])


def test_forward_into_updates_the_arena_like_run(model):
    x = x_of(2, 3)
    arena = model.new_arena(5)
    slots = np.array([4, 1], np.int64)
    y = np.empty((2, 3, 3), np.float32)
    head = np.empty((2, 2), np.float32)
    model.forward_into(x, arena, slots, y, head)
    ref_y, ref_state, ref_head = model.run(x)
    np.testing.assert_array_equal(y, ref_y)
    np.testing.assert_array_equal(head, ref_head)
    np.testing.assert_array_equal(arena[slots], ref_state.arena)
    with pytest.raises(ValueError, match="slots must be distinct"):
        model.forward_into(x, arena, np.array([1, 1], np.int64), y, head)


def test_head_from_state_is_bit_identical_to_the_forward_head(model):
    x = x_of(3, 4)
    _, state, head = model.run(x)
    np.testing.assert_array_equal(model.head_from_state(state.arena), head)
