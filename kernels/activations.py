"""Activation functions used inside the recurrent kernels, applied in place to a vector.

Each activation is named by a small integer code (what the packed network carries) plus two
float parameters ``alpha`` and ``beta`` (ONNX's convention; unused ones are ignored). The
branch on the code sits outside the element loop, so every loop vectorises.

``tanh`` is a rational approximation (``bench/fit_tanh.py`` derives it): max abs error
4e-7 in float32 over the whole real line, clamped so that it is exact (+-1) past |x| = 9 and
never overflows. ``sigmoid(x) = 0.5 + 0.5 tanh(x / 2)`` inherits both properties.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from statecast.kernels.config import JIT_OPTIONS, LEAF_OPTIONS

SIGMOID = 0
TANH = 1
RELU = 2
AFFINE = 3
HARD_SIGMOID = 4
LEAKY_RELU = 5
THRESHOLDED_RELU = 6
SCALED_TANH = 7
ELU = 8
SOFTSIGN = 9
SOFTPLUS = 10

#: name -> (code, default alpha, default beta). ``linear`` is ``affine`` with alpha 1, beta 0.
#: ``hard_sigmoid`` defaults to the Keras 1/2 and ONNX definition (0.2, 0.5); Keras 3's is
#: (1/6, 0.5): importers always write both parameters explicitly.
ACTIVATIONS: dict[str, tuple[int, float, float]] = {
    "sigmoid": (SIGMOID, 0.0, 0.0),
    "tanh": (TANH, 0.0, 0.0),
    "relu": (RELU, 0.0, 0.0),
    "linear": (AFFINE, 1.0, 0.0),
    "affine": (AFFINE, 1.0, 0.0),
    "hard_sigmoid": (HARD_SIGMOID, 0.2, 0.5),
    "leaky_relu": (LEAKY_RELU, 0.01, 0.0),
    "thresholded_relu": (THRESHOLDED_RELU, 1.0, 0.0),
    "scaled_tanh": (SCALED_TANH, 1.0, 1.0),
    "elu": (ELU, 1.0, 0.0),
    "softsign": (SOFTSIGN, 0.0, 0.0),
    "softplus": (SOFTPLUS, 0.0, 0.0),
}

# Rational tanh on the clamped range: x * P(x^2) / Q(x^2).
_TANH_CLAMP = np.float32(9.0)
_P0 = np.float32(0.9999999071433485)
_P1 = np.float32(0.13373234965468803)
_P2 = np.float32(0.0034866211154844693)
_P3 = np.float32(2.0472294477244045e-05)
_P4 = np.float32(1.3184575514367532e-08)
_Q1 = np.float32(0.4670653208280167)
_Q2 = np.float32(0.02584214125184484)
_Q3 = np.float32(0.0003271441401488713)
_Q4 = np.float32(7.702866162214722e-07)
_ONE = np.float32(1.0)
_HALF = np.float32(0.5)
_ZERO = np.float32(0.0)


@numba.njit(inline="always", **JIT_OPTIONS)
def clamp(x: float, low: float, high: float) -> float:
    """``x`` limited to ``[low, high]``; NaN stays NaN (``min``/``max`` would drop it)."""
    return low if x < low else (high if x > high else x)


@numba.njit(inline="always", **JIT_OPTIONS)
def _tanh_scalar(x: float) -> float:
    clamped = clamp(x, -_TANH_CLAMP, _TANH_CLAMP)
    s = clamped * clamped
    p = (((_P4 * s + _P3) * s + _P2) * s + _P1) * s + _P0
    q = (((_Q4 * s + _Q3) * s + _Q2) * s + _Q1) * s + _ONE
    r = clamp(clamped * p / q, -_ONE, _ONE)
    # Past the clamp tanh is +-1 to float32 precision: return it exactly.
    return math.copysign(_ONE, x) if abs(x) >= _TANH_CLAMP else r


@numba.njit(**LEAF_OPTIONS)
def _activate(v: np.ndarray, row: int, start: int, n: int, code: int, alpha: float,
              beta: float) -> None:
    """Apply activation ``code`` in place to ``v[row, start:start + n]`` (float32 2-D).

    Indexes the buffer directly instead of taking a slice (a slice inside a kernel costs
    an atomic reference-count update), with unsigned column indices: a signed one makes
    Numba emit a negative-index check that stops LLVM from vectorising the loop.
    """
    a = np.float32(alpha)
    b = np.float32(beta)
    first = np.uint64(start)
    stop = first + np.uint64(n)
    if code == SIGMOID:
        for j in range(first, stop):
            v[row, j] = _HALF + _HALF * _tanh_scalar(_HALF * v[row, j])
    elif code == TANH:
        for j in range(first, stop):
            v[row, j] = _tanh_scalar(v[row, j])
    elif code == RELU:
        for j in range(first, stop):
            x = v[row, j]
            v[row, j] = _ZERO if x < _ZERO else x
    elif code == AFFINE:
        if a != _ONE or b != _ZERO:
            for j in range(first, stop):
                v[row, j] = a * v[row, j] + b
    elif code == HARD_SIGMOID:
        for j in range(first, stop):
            v[row, j] = clamp(a * v[row, j] + b, _ZERO, _ONE)
    elif code == LEAKY_RELU:
        for j in range(first, stop):
            x = v[row, j]
            v[row, j] = a * x if x < _ZERO else x
    elif code == THRESHOLDED_RELU:
        for j in range(first, stop):
            x = v[row, j]
            v[row, j] = _ZERO if x <= a else x
    elif code == SCALED_TANH:
        for j in range(first, stop):
            v[row, j] = a * _tanh_scalar(b * v[row, j])
    elif code == ELU:
        for j in range(first, stop):
            x = v[row, j]
            v[row, j] = a * np.float32(math.expm1(x)) if x < _ZERO else x
    elif code == SOFTSIGN:
        for j in range(first, stop):
            x = v[row, j]
            v[row, j] = x / (_ONE + abs(x))
    elif code == SOFTPLUS:
        for j in range(first, stop):
            x = v[row, j]
            v[row, j] = max(x, _ZERO) + np.float32(math.log1p(math.exp(-abs(x))))


def activate(values: np.ndarray, name: str, alpha: float | None = None,
             beta: float | None = None) -> np.ndarray:
    """Return ``name`` applied to a copy of ``values`` (float32), as the kernels compute it.

    Parameters
    ----------
    values : np.ndarray
        Any shape; converted to a contiguous float32 copy.
    name : str
        A key of :data:`ACTIVATIONS`.
    alpha, beta : float, optional
        Parameters; the activation's defaults when omitted.
    """
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; known: {sorted(ACTIVATIONS)}")
    code, default_alpha, default_beta = ACTIVATIONS[name]
    out = np.array(values, dtype=np.float32, order="C", copy=True)
    flat = out.reshape(1, -1)
    _activate(flat, 0, 0, flat.shape[1], code,
              default_alpha if alpha is None else alpha,
              default_beta if beta is None else beta)
    return out
