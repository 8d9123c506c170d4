"""Numba kernels for stateful recurrent forecasting: pure numeric code, no I/O.

Public entry points: :func:`pack_network` (weights -> one buffer), :func:`forward` (run a
window through it, state in place in an arena) and :func:`activate`.
"""

from kernels.activations import ACTIVATIONS, activate
from kernels.network import (
    DenseLayer,
    PackedNetwork,
    RecurrentLayer,
    activation,
    pack_network,
)
from kernels.recurrent import check_forward_args, forward

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
