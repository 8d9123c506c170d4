"""Atomic operations on int64 array elements, for threads that meet inside one parallel loop.

Numba offers no atomics on the CPU; these emit LLVM's (sequentially consistent, so a value
written before an atomic store or add is seen by a thread whose atomic load observes it).
A plain load in a spin loop could be hoisted out of the loop by the optimiser: an atomic
load cannot.
"""

from __future__ import annotations

from typing import Any

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from statecast.kernels.config import JIT_DISABLED

_ORDER = "seq_cst"


def _element_pointer(context: Any, builder: Any, array_type: Any, array: Any, index: Any) -> Any:
    view = context.make_array(array_type)(context, builder, array)
    return cgutils.get_item_pointer(context, builder, array_type, view, [index])


def _check(array: Any) -> None:
    if not (isinstance(array, types.Array) and array.dtype == types.int64):
        raise TypeError("atomics take an int64 array")


def _atomic_add(typingctx: Any, array: Any, index: Any, value: Any) -> Any:
    """``array[index] += value`` atomically; returns the value before."""
    _check(array)
    signature = types.int64(array, types.intp, types.int64)

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        pointer = _element_pointer(context, builder, sig.args[0], args[0], args[1])
        return builder.atomic_rmw("add", pointer, args[2], _ORDER)

    return signature, codegen


def _atomic_cas(typingctx: Any, array: Any, index: Any, expected: Any, value: Any) -> Any:
    """Set ``array[index] = value`` if it equals ``expected``, atomically; returns the value
    found (``expected`` when the exchange happened)."""
    _check(array)
    signature = types.int64(array, types.intp, types.int64, types.int64)

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        pointer = _element_pointer(context, builder, sig.args[0], args[0], args[1])
        pair = builder.cmpxchg(pointer, args[2], args[3], _ORDER, _ORDER)
        return builder.extract_value(pair, 0)

    return signature, codegen


def _atomic_load(typingctx: Any, array: Any, index: Any) -> Any:
    """``array[index]``, read atomically (never hoisted out of a loop)."""
    _check(array)
    signature = types.int64(array, types.intp)

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        pointer = _element_pointer(context, builder, sig.args[0], args[0], args[1])
        return builder.load_atomic(pointer, _ORDER, 8)

    return signature, codegen


#: Callable from kernels only (``intrinsic`` makes them Numba-typed; mypy sees ``Any``).
atomic_add: Any = intrinsic(_atomic_add)
atomic_cas: Any = intrinsic(_atomic_cas)
atomic_load: Any = intrinsic(_atomic_load)


def _yield_cpu(typingctx: Any) -> Any:
    """``sched_yield()``: let another runnable thread have this core (a waiting thread calls
    it so that the thread it waits for runs even when the cores are oversubscribed)."""
    signature = types.void()

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        function = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.IntType(32), []), "sched_yield")
        builder.call(function, [])
        return context.get_dummy_value()

    return signature, codegen


yield_cpu: Any = intrinsic(_yield_cpu)



def _add_python(array: Any, index: int, value: int) -> int:
    before = int(array[index])
    array[index] = before + value
    return before


def _cas_python(array: Any, index: int, expected: int, value: int) -> int:
    found = int(array[index])
    if found == expected:
        array[index] = value
    return found


if JIT_DISABLED:
    # Plain Python for ``NUMBA_DISABLE_JIT=1``: a parallel loop is then a serial loop, so the
    # first thread claims and finishes every part, and nothing waits.
    atomic_add = _add_python
    atomic_cas = _cas_python
    atomic_load = lambda array, index: int(array[index])  # noqa: E731
    yield_cpu = lambda: None  # noqa: E731
