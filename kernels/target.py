"""The CPU that Numba compiles for, and the vector geometry the panel kernels take from it.

Numba compiles for the host unless ``NUMBA_CPU_NAME``/``NUMBA_CPU_FEATURES`` name another
target (``generic`` for a portable cache). The register tiles of :mod:`kernels.panels`
must match that target, not the host: 16-lane tiles compiled for a target without AVX-512
become scalar code. And where the target has no FMA, each product is a multiply then an
add in every path alike (see :func:`has_fma`), at a fraction of the speed: a warning says
so once.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

from llvmlite import binding

from statecast.kernels.config import NUMBA_CONFIG


def _target_features() -> dict[str, bool]:
    """``{feature: enabled}`` as Numba passes them to LLVM for this process."""
    text = NUMBA_CONFIG.CPU_FEATURES
    if text is None:
        # No feature list (even with a CPU name): Numba passes the host's features.
        try:
            features = dict(binding.get_host_cpu_features())
        except RuntimeError:
            return {}
        if not NUMBA_CONFIG.ENABLE_AVX:
            features = {k: (v and not k.startswith("avx")) for k, v in features.items()}
        return features
    return {item[1:]: item[0] == "+" for item in text.split(",") if item[:1] in ("+", "-")}


@dataclass(frozen=True)
class Geometry:
    """Vector registers of the compile target: float32 ``lanes`` per register and
    ``vectors`` per tile row (a tile keeps ``4 x vectors`` accumulators in registers)."""

    name: str
    lanes: int
    vectors: int
    fma: bool

    @property
    def panel(self) -> int:
        """Gate columns per panel: one tile row."""
        return self.lanes * self.vectors


def target_geometry() -> Geometry:
    """The geometry for the target Numba compiles for in this process.

    AVX-512: 32 registers of 16 lanes, 4 x 4 accumulators. AVX/AVX2: 16 registers of 8
    lanes, 4 x 2 (room left for the weights and the broadcast). Otherwise SSE2, the x86-64
    baseline (and what ``generic`` means): 16 registers of 4 lanes, 4 x 2.
    """
    features = _target_features()
    name = NUMBA_CONFIG.CPU_NAME or binding.get_host_cpu_name()
    # A feature list may name a feature without those it implies (avx512f implies avx2,
    # fma and avx). A CPU name given with an empty list is read as that list: its own
    # features are not known here, so the tiles are the baseline's (correct, slower).
    avx512 = bool(features.get("avx512f"))
    avx = avx512 or bool(features.get("avx2") or features.get("avx"))
    fma = avx512 or bool(features.get("fma"))
    if avx512:
        return Geometry(name, 16, 4, fma)
    if avx:
        return Geometry(name, 8, 2, fma)
    return Geometry(name, 4, 2, fma)


GEOMETRY = target_geometry()

if not GEOMETRY.fma:
    warnings.warn(
        f"Numba compiles for {GEOMETRY.name!r} without FMA: every gate product is a multiply "
        "then an add (results agree across paths, at a fraction of the speed). Unset "
        "NUMBA_CPU_NAME/NUMBA_CPU_FEATURES to compile for this CPU.", stacklevel=1)
