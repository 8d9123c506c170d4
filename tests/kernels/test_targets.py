"""Kernels compiled for other targets than the host, and run without JIT.

Each case runs in a fresh process: the target and ``NUMBA_DISABLE_JIT`` are read when the
kernels load.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: An AVX2 machine without AVX-512 (Haswell's features).
HASWELL = ("+avx,+avx2,+fma,+f16c,+bmi,+bmi2,+lzcnt,+movbe,+popcnt,+sse4.1,+sse4.2,+ssse3,"
           "+cx16,+xsave,-avx512f")

GEOMETRY_CHECK = """
import warnings
import numpy as np
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    from statecast.kernels import panels, target
    from statecast.kernels.operands import Panels, Strided
geometry = target.GEOMETRY
rng = np.random.default_rng(0)
a = rng.standard_normal((7, 19)).astype(np.float32)
w = rng.standard_normal((19, 3 * panels.PANEL)).astype(np.float32)
bias = rng.standard_normal(3 * panels.PANEL).astype(np.float32)
out = np.empty((7, 3 * panels.PANEL), np.float32)
weights = Panels(panels.as_panels(w), 0, 19 * panels.PANEL, 19, 3)
panels.panel_product(7, Strided(a, 0, 19), weights, Strided(bias, 0, 0),
                     Strided(out, 0, 3 * panels.PANEL))
np.testing.assert_allclose(out, bias + a.astype(np.float64) @ w, rtol=1e-5, atol=1e-5)
warned = any("without FMA" in str(w.message) for w in caught)
print(geometry.lanes, geometry.vectors, geometry.fma, warned)
"""


def run(args: list[str], timeout: float, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], env={**os.environ, **env}, cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("env,expected", [
    ({"NUMBA_CPU_NAME": "generic"}, "4 2 False True"),
    ({"NUMBA_CPU_NAME": "haswell", "NUMBA_CPU_FEATURES": HASWELL}, "8 2 True False"),
])
def test_the_tile_geometry_follows_the_compile_target(env, expected):
    """SSE2 (what ``generic`` means) gets 4-lane tiles and a warning that it lacks FMA, an
    AVX2 target 8-lane tiles: the tiles are compiled for the target, not the host."""
    done = run(["-c", GEOMETRY_CHECK], 600, **env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[-2] == expected


@pytest.mark.slow
def test_the_contracts_hold_on_a_generic_target():
    """Every path gives a stream the same bits on a target without FMA, too."""
    done = run(["-m", "pytest", "-q", "-p", "no:cacheprovider", "-W",
                "ignore:Numba compiles for:UserWarning", "tests/kernels/test_contracts.py"],
               1800, NUMBA_CPU_NAME="generic")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


@pytest.mark.slow
def test_the_kernel_tests_pass_without_jit():
    """``NUMBA_DISABLE_JIT=1``: every path runs as Python (the panel products in NumPy), so
    any of them can be stepped through in a debugger; the results are the same."""
    done = run(["-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/kernels",
                "--ignore", "tests/kernels/test_targets.py", "-m", "not jit_only"],
               3600, NUMBA_DISABLE_JIT="1")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
