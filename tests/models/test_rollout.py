"""Model.advance and Model.predict against the same arithmetic written out with Model.run."""

import numpy as np
import pytest

from statecast.models import DenseLayerSpec, Model, RecurrentLayerSpec
from statecast.models.errors import InvalidInput
from statecast.models.model import State
from statecast.models.spec import ScalingSpec
from tests.models.helpers import tiny_spec, tiny_tensors

SCALING = ScalingSpec("standard", (1.0, -2.0), (2.0, 0.5), (1.0,), (2.0,))


def model_of(**changes) -> Model:
    spec = tiny_spec(features=("y", "x"), targets=("y",), scaling=SCALING, **changes)
    return Model(spec, tiny_tensors(spec, seed=3))


def raw(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def test_advance_carries_each_stream_from_its_state_and_groups_by_length():
    model = model_of()
    rng = np.random.default_rng(0)
    start = model.to_state(None, 3).arena + raw(rng, 3, model.state_size)
    observations = [raw(rng, 4, 2), raw(rng, 0, 2), raw(rng, 2, 2)]
    before = start.copy()
    after = model.advance(start, observations)
    np.testing.assert_array_equal(start, before)  # the caller's rows are not touched
    np.testing.assert_array_equal(after[1], start[1])  # nothing new: the state is kept
    for index in (0, 2):
        x = model.scale_inputs(observations[index])[None]
        _, state, _ = model.run(x, State(start[index:index + 1].copy(),
                                         model.network.state_offsets))
        np.testing.assert_array_equal(after[index], state.arena[0])


def test_a_window_model_reruns_its_last_w_observations_from_the_initial_state():
    model = model_of(state_mode="window:3")
    rng = np.random.default_rng(1)
    history = raw(rng, 7, 2)
    after = model.advance(raw(rng, 1, model.state_size), [history])
    _, state, _ = model.run(model.scale_inputs(history[-3:])[None])
    np.testing.assert_array_equal(after[0], state.arena[0])


def test_predict_of_a_direct_model_is_its_head_in_original_units():
    model = model_of()
    rng = np.random.default_rng(2)
    states = raw(rng, 4, model.state_size)
    forecast = model.predict(states, 1)
    head = model.head_from_state(states).reshape(4, 2, 1)
    np.testing.assert_array_equal(forecast, model.unscale_targets(head[:, :1]))
    with pytest.raises(InvalidInput, match="horizon must be 1-2"):
        model.predict(states, 3)


def test_a_recursive_rollout_feeds_back_predictions_with_the_future_covariates():
    spec_changes = {"forecast_mode": "recursive", "horizon": 1,
                    "head": (DenseLayerSpec(3, 1),)}
    model = model_of(**spec_changes)
    rng = np.random.default_rng(3)
    states = raw(rng, 2, model.state_size)
    future = raw(rng, 2, 4, 1)
    forecast = model.predict(states, 4, future)
    for stream in range(2):
        state = model.to_state(None, 1)
        state.arena[:] = states[stream]
        expected = []
        head = model.head_from_state(states[stream:stream + 1])
        for step in range(4):
            expected.append(model.unscale_targets(head)[0])
            observation = np.array([[expected[-1][0], future[stream, step, 0]]], np.float32)
            _, state, head = model.run(model.scale_inputs(observation)[None], state)
        np.testing.assert_array_equal(forecast[stream], np.array(expected))
    with pytest.raises(InvalidInput, match="needs future"):
        model.predict(states, 4)


def window_model() -> Model:
    """A model with a head over its last step and future covariates: it forecasts from its
    window (models.windowed), not from a state."""
    spec = tiny_spec(layers=(RecurrentLayerSpec("lstm", 2, 4),), head=(DenseLayerSpec(5, 1),),
                     features=("y", "x"), targets=("y",), state_mode="window:3",
                     head_steps=1, future_features=("x",), horizon=1)
    return Model(spec, tiny_tensors(spec))


def test_a_model_that_forecasts_from_its_window_keeps_its_initial_state():
    model = window_model()
    assert model.spec.forecasts_from_window
    start = model.new_arena(1)
    np.testing.assert_array_equal(model.advance(start, [np.ones((5, 2), np.float32)]), start)


def test_the_verbs_refuse_arrays_that_do_not_fit_before_any_kernel_runs():
    """The kernels do not check bounds: every shape is checked first, with the fix named."""
    model = model_of(forecast_mode="recursive", horizon=1, head=(DenseLayerSpec(3, 1),))
    rng = np.random.default_rng(4)
    states = raw(rng, 2, model.state_size)
    with pytest.raises(InvalidInput, match=r"observations 1 must be \[time, 2\]"):
        model.advance(states, [raw(rng, 3, 2), raw(rng, 3, 1)])
    with pytest.raises(InvalidInput, match="states must be"):
        model.advance(states[:, :-1], [raw(rng, 3, 2), raw(rng, 3, 2)])
    with pytest.raises(InvalidInput, match="states must be"):
        model.predict(states[:, :-1], 2, raw(rng, 2, 2, 1))
    with pytest.raises(InvalidInput, match="needs future"):
        model.predict(states, 3, raw(rng, 2, 2, 2))
    with pytest.raises(InvalidInput, match="at least 1"):
        model.predict(states, 0)


def test_predict_refuses_a_model_that_forecasts_from_its_window():
    model = window_model()
    with pytest.raises(InvalidInput, match="forecasts from its window"):
        model.predict(model.new_arena(1), 1)
