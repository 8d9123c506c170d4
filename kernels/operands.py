"""The bundles kernels pass each other instead of long argument lists.

Numba passes a named tuple by value, field by field, so a bundle costs nothing over its
fields as separate arguments; it fixes which values travel together and names them.

Build and read bundles in kernels compiled without Numba's runtime (``LEAF_OPTIONS``), where
they cost nothing: elsewhere each bundle built or array read from one updates reference
counts, atomically (shared between threads inside a parallel loop). Such a kernel returns a
bundle only to another such kernel, since it holds no reference to the bundle's arrays.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Layer(NamedTuple):
    """One recurrent layer of a packed network (:mod:`kernels.network`): its ``params`` and
    ``meta``, and ``row``, where the layer's fields start in ``meta``."""

    params: np.ndarray
    meta: np.ndarray
    row: int


class Streams(NamedTuple):
    """The streams a kernel works on: ``nb`` streams of the call from stream ``s0``, whose
    states are the rows ``slots[s0:s0 + nb]`` of ``arena``."""

    arena: np.ndarray
    slots: np.ndarray
    s0: int
    nb: int


class Buffers(NamedTuple):
    """A block's scratch rows (``[streams, width]`` each) for one step of a layer:
    ``gates``, the gate pre-activations; ``extra``, a GRU's recurrent product; ``full``,
    ``h`` before any projection; ``u``, a step's inputs and previous ``h``."""

    gates: np.ndarray
    extra: np.ndarray
    full: np.ndarray
    u: np.ndarray


class Strided(NamedTuple):
    """A matrix inside a C-contiguous array: element ``(r, c)`` at flat index
    ``offset + r * stride + c`` (``stride`` 0: every row is the same row)."""

    array: np.ndarray
    offset: int
    stride: int


class Panels(NamedTuple):
    """``depth`` rows of ``n_panels`` adjacent weight panels (:mod:`kernels.panels`): the first
    panel's rows of ``PANEL`` floats start at flat index ``offset`` of ``array``, each next
    panel ``stride`` floats on."""

    array: np.ndarray
    offset: int
    stride: int
    depth: int
    n_panels: int
