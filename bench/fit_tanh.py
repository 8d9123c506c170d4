"""Derive the rational tanh used by the kernels (``kernels/activations.py``).

tanh(x) ~ x P(x^2) / Q(x^2) on [-9, 9] (clamped outside), P and Q of degree 4 in x^2,
fitted by iteratively re-weighted linear least squares in a Chebyshev basis (weights 1/|Q|
for the linearisation, then Lawson-style weights towards the minimax error). Prints the
coefficients and the worst float32 error over a dense grid of [-12, 12].

Run: ``python bench/fit_tanh.py``.
"""

from __future__ import annotations

import numpy as np
from numpy.polynomial import chebyshev, polynomial

CLAMP = 9.0
DEGREE_P = 4
DEGREE_Q = 4


def fit(iterations: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """Coefficients (power basis in s = x^2, Q[0] = 1) of the rational approximation."""
    x = np.linspace(0, CLAMP, 40001)
    target = np.tanh(x)
    u = 2 * x * x / CLAMP**2 - 1
    basis_p = chebyshev.chebvander(u, DEGREE_P)
    basis_q = chebyshev.chebvander(u, DEGREE_Q)
    linearisation = np.ones_like(x)
    lawson = np.ones_like(x)
    for _ in range(iterations):
        design = np.concatenate([x[:, None] * basis_p, -target[:, None] * basis_q[:, 1:]], 1)
        weights = linearisation * lawson
        coeffs, *_ = np.linalg.lstsq(design * weights[:, None], target * weights, rcond=None)
        p = coeffs[:DEGREE_P + 1]
        q = np.concatenate([[1.0], coeffs[DEGREE_P + 1:]])
        q_values = chebyshev.chebval(u, q)
        error = x * chebyshev.chebval(u, p) / q_values - target
        linearisation = 1 / np.abs(q_values)
        lawson = np.maximum(lawson * np.abs(error) ** 0.5 / (lawson * np.abs(error) ** 0.5).max(),
                            1e-6)

    def to_power_basis(cheb: np.ndarray) -> np.ndarray:
        # u = a s - 1 with a = 2 / CLAMP^2
        out = np.zeros(len(cheb))
        for k, ck in enumerate(chebyshev.cheb2poly(cheb)):
            term = polynomial.polypow([-1, 2 / CLAMP**2], k)
            out[:len(term)] += ck * term
        return out

    p_power, q_power = to_power_basis(p), to_power_basis(q)
    return p_power / q_power[0], q_power / q_power[0]


def worst_float32_error(p: np.ndarray, q: np.ndarray) -> float:
    x = np.linspace(-12, 12, 4_000_001).astype(np.float32)
    clamped = np.clip(x, -CLAMP, CLAMP).astype(np.float32)
    s = clamped * clamped
    num = np.zeros_like(s)
    den = np.zeros_like(s)
    for c in p[::-1]:
        num = num * s + np.float32(c)
    for c in q[::-1]:
        den = den * s + np.float32(c)
    approx = np.clip(clamped * num / den, -1, 1)
    return float(np.abs(approx - np.tanh(x.astype(np.float64))).max())


if __name__ == "__main__":
    p, q = fit()
    print("P:", [float(v) for v in p])
    print("Q:", [float(v) for v in q])
    print(f"worst float32 error on [-12, 12]: {worst_float32_error(p, q):.2e}")
