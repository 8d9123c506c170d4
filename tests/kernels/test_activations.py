"""Activations against their float64 definitions; the fast tanh over the whole real line."""

import numpy as np
import pytest

from statecast.kernels import ACTIVATIONS, activate
from tests import naive


def test_tanh_approximation_is_within_4e7_everywhere():
    x = np.concatenate([np.linspace(-20, 20, 400_001, dtype=np.float32),
                        np.float32([-1e30, -500, -88.7, 88.7, 500, 1e30, 0.0, -0.0, 1e-30])])
    got = activate(x, "tanh")
    assert np.abs(got.astype(np.float64) - np.tanh(x.astype(np.float64))).max() < 4e-7
    assert np.all(np.abs(got) <= 1.0)


def test_tanh_is_odd_and_exact_at_zero():
    x = np.linspace(0, 12, 10_001, dtype=np.float32)
    np.testing.assert_array_equal(activate(x, "tanh"), -activate(-x, "tanh"))
    assert activate(np.float32([0.0]), "tanh")[0] == 0.0


def test_sigmoid_is_overflow_safe_in_the_hundreds():
    x = np.float32([-1e4, -500.0, -100.0, -88.0, 0.0, 88.0, 100.0, 500.0, 1e4])
    got = activate(x, "sigmoid")
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, naive.act("sigmoid", x, 0, 0), atol=3e-7, rtol=0)
    assert got[0] == 0.0 and got[-1] == 1.0


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activation_matches_definition(name):
    x = np.linspace(-30, 30, 6001, dtype=np.float32)
    _, alpha, beta = ACTIVATIONS[name]
    np.testing.assert_allclose(activate(x, name), naive.act(name, x, alpha, beta),
                               atol=5e-7, rtol=2e-6)


def test_hard_sigmoid_keras2_and_keras3_definitions_differ_as_documented():
    x = np.float32([-3.0, -2.5, -1.0, 0.0, 1.0, 2.5, 3.0])
    keras2 = activate(x, "hard_sigmoid", 0.2, 0.5)
    keras3 = activate(x, "hard_sigmoid", 1 / 6, 0.5)
    np.testing.assert_allclose(keras2, [0.0, 0.0, 0.3, 0.5, 0.7, 1.0, 1.0], atol=1e-7)
    np.testing.assert_allclose(keras3, [0.0, 1 / 12, 1 / 3, 0.5, 2 / 3, 11 / 12, 1.0],
                               atol=1e-7)


def test_parameterised_activations_use_alpha_and_beta():
    x = np.float32([-2.0, -0.5, 0.5, 2.0])
    np.testing.assert_allclose(activate(x, "scaled_tanh", 2.0, 0.5), 2 * np.tanh(0.5 * x),
                               atol=1e-6)
    np.testing.assert_allclose(activate(x, "leaky_relu", 0.1), [-0.2, -0.05, 0.5, 2.0])
    np.testing.assert_allclose(activate(x, "affine", 3.0, 1.0), 3 * x + 1)
    np.testing.assert_allclose(activate(x, "thresholded_relu", 1.0), [0, 0, 0, 2.0])


def test_unknown_activation_names_the_known_ones():
    with pytest.raises(ValueError, match="unknown activation 'swish'; known:"):
        activate(np.zeros(3), "swish")


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_nan_propagates_through_every_activation(name):
    got = activate(np.float32([np.nan, 1.0]), name)
    assert np.isnan(got[0]) and not np.isnan(got[1])
