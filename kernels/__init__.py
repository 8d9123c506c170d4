"""Numba kernels for stateful recurrent forecasting: pure numeric code, no I/O.

Public entry points: :func:`pack_network` (weights -> one buffer), :func:`forward` (run a
window through it, state in place in an arena) and :func:`activate`.
"""

from kernels.config import prefer_avx512_blas

prefer_avx512_blas()

from kernels.activations import ACTIVATIONS, activate  # noqa: E402
from kernels.network import (  # noqa: E402
    DenseLayer,
    PackedNetwork,
    RecurrentLayer,
    activation,
    pack_network,
)
from kernels.recurrent import check_forward_args, forward  # noqa: E402

__all__ = [
    "ACTIVATIONS",
    "DenseLayer",
    "PackedNetwork",
    "RecurrentLayer",
    "activate",
    "activation",
    "check_forward_args",
    "forward",
    "pack_network",
]
