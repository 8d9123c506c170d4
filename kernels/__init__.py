"""Numba kernels for stateful recurrent forecasting: pure numeric code, no I/O.

Public entry points: :func:`pack_network` (weights -> one buffer), :class:`Engine` (runs
windows through it, state in place in an arena, and chooses the kernel of every call) and
:func:`activate`.
"""

from statecast.kernels.activations import ACTIVATIONS, activate
from statecast.kernels.engine import Engine
from statecast.kernels.network import (
    DenseLayer,
    PackedNetwork,
    RecurrentLayer,
    activation,
    pack_network,
)

__all__ = [
    "ACTIVATIONS",
    "DenseLayer",
    "Engine",
    "PackedNetwork",
    "RecurrentLayer",
    "activate",
    "activation",
    "pack_network",
]
