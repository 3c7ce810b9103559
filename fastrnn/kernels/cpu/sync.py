"""Synchronisation between a kernel's own threads: atomics, spin hints, futexes.

Counters live in an int64 array; a futex word is the low half of one of
them (little-endian). ``syscall`` is reached by name, so cached kernels
hold no ctypes pointer (Numba refuses to cache a function that holds one).
Used by the panel split (:mod:`fastrnn.kernels.cpu.split`).
"""

from __future__ import annotations

import platform
import sys

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

_i64 = ir.IntType(64)
_SYS_FUTEX = {"x86_64": 202, "AMD64": 202, "aarch64": 98, "arm64": 98}.get(platform.machine())
_SYS_GETTID = {"x86_64": 186, "AMD64": 186, "aarch64": 178, "arm64": 178}.get(platform.machine())
_SYS_GETCPU = {"x86_64": 309, "AMD64": 309, "aarch64": 168, "arm64": 168}.get(platform.machine())
HAVE_FUTEX = sys.platform.startswith("linux") and _SYS_FUTEX is not None
_IS_X86 = platform.machine() in ("x86_64", "AMD64", "i686", "i386")


def _is_i64_array(arr):
    return isinstance(arr, types.Array) and arr.dtype == types.int64


def _i64_ptr(context, builder, sig, args):
    ary = context.make_array(sig.args[0])(context, builder, args[0])
    i = context.cast(builder, args[1], sig.args[1], types.intp)
    return builder.gep(ary.data, [i])


@intrinsic
def atomic_load(typingctx, arr, idx):
    """Sequentially consistent load of ``arr[idx]`` (int64)."""
    if not _is_i64_array(arr) or not isinstance(idx, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        return builder.load_atomic(_i64_ptr(context, builder, sig, args), "seq_cst", 8)

    return types.int64(arr, idx), codegen


@intrinsic
def atomic_add(typingctx, arr, idx, val):
    """``arr[idx] += val`` atomically; returns the old value."""
    if not _is_i64_array(arr) or not isinstance(idx, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        v = context.cast(builder, args[2], sig.args[2], types.int64)
        return builder.atomic_rmw("add", _i64_ptr(context, builder, sig, args), v, "seq_cst")

    return types.int64(arr, idx, val), codegen


@intrinsic
def atomic_cas(typingctx, arr, idx, expected, new):
    """Compare-and-swap ``arr[idx]``: True when it held ``expected`` and now holds ``new``."""
    if not _is_i64_array(arr) or not isinstance(idx, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        e = context.cast(builder, args[2], sig.args[2], types.int64)
        n = context.cast(builder, args[3], sig.args[3], types.int64)
        res = builder.cmpxchg(_i64_ptr(context, builder, sig, args), e, n, "seq_cst", "seq_cst")
        return builder.extract_value(res, 1)

    return types.boolean(arr, idx, expected, new), codegen


@intrinsic
def cpu_relax(typingctx):
    """The spin-wait hint (``pause`` on x86; nothing elsewhere)."""

    def codegen(context, builder, sig, args):
        if _IS_X86:
            fnty = ir.FunctionType(ir.VoidType(), [])
            builder.call(cgutils.get_or_insert_function(builder.module, fnty,
                                                        "llvm.x86.sse2.pause"), [])
        return context.get_dummy_value()

    return types.none(), codegen


def _syscall(builder, args):
    fnty = ir.FunctionType(_i64, [_i64], var_arg=True)
    fn = cgutils.get_or_insert_function(builder.module, fnty, "syscall")
    return builder.call(fn, args)


@intrinsic
def futex_wait(typingctx, arr, idx, expected, timeout_ns):
    """Sleep while the low 32 bits of ``arr[idx]`` equal ``expected`` (at most
    ``timeout_ns``). Linux only; elsewhere returns at once (callers spin)."""
    if not _is_i64_array(arr):
        return None

    def codegen(context, builder, sig, args):
        if not HAVE_FUTEX:
            return ir.Constant(_i64, 0)
        ptr = builder.ptrtoint(_i64_ptr(context, builder, sig, args), _i64)
        e = context.cast(builder, args[2], sig.args[2], types.int64)
        e = builder.and_(e, ir.Constant(_i64, 0xFFFFFFFF))
        ns = context.cast(builder, args[3], sig.args[3], types.int64)
        ts = cgutils.alloca_once(builder, ir.ArrayType(_i64, 2))
        sec = builder.sdiv(ns, ir.Constant(_i64, 1_000_000_000))
        nsec = builder.srem(ns, ir.Constant(_i64, 1_000_000_000))
        zero = ir.Constant(ir.IntType(32), 0)
        builder.store(sec, builder.gep(ts, [zero, ir.Constant(ir.IntType(32), 0)]))
        builder.store(nsec, builder.gep(ts, [zero, ir.Constant(ir.IntType(32), 1)]))
        c = lambda v: ir.Constant(_i64, v)  # noqa: E731
        # FUTEX_WAIT | FUTEX_PRIVATE_FLAG = 128
        return _syscall(builder, [c(_SYS_FUTEX), ptr, c(128), e, builder.ptrtoint(ts, _i64),
                                  c(0), c(0)])

    return types.int64(arr, idx, expected, timeout_ns), codegen


@intrinsic
def futex_wake(typingctx, arr, idx):
    """Wake every thread sleeping in :func:`futex_wait` on ``arr[idx]``."""
    if not _is_i64_array(arr):
        return None

    def codegen(context, builder, sig, args):
        if not HAVE_FUTEX:
            return ir.Constant(_i64, 0)
        ptr = builder.ptrtoint(_i64_ptr(context, builder, sig, args), _i64)
        c = lambda v: ir.Constant(_i64, v)  # noqa: E731
        # FUTEX_WAKE | FUTEX_PRIVATE_FLAG = 129
        return _syscall(builder, [c(_SYS_FUTEX), ptr, c(129), c(2**31 - 1), c(0), c(0), c(0)])

    return types.int64(arr, idx), codegen


_HAVE_IDS = HAVE_FUTEX and _SYS_GETTID is not None and _SYS_GETCPU is not None


@intrinsic
def thread_id(typingctx):
    """The calling thread's kernel id (Linux's ``gettid``, as
    ``threading.get_native_id``); -1 elsewhere."""
    def codegen(context, builder, sig, args):
        if not _HAVE_IDS:
            return ir.Constant(_i64, -1)
        return _syscall(builder, [ir.Constant(_i64, _SYS_GETTID)])

    return types.int64(), codegen


@intrinsic
def current_cpu(typingctx):
    """The CPU the calling thread runs on now (Linux's ``getcpu``); -1 elsewhere."""
    def codegen(context, builder, sig, args):
        if not _HAVE_IDS:
            return ir.Constant(_i64, -1)
        cpu = cgutils.alloca_once_value(builder, ir.Constant(ir.IntType(32), -1))
        c = lambda v: ir.Constant(_i64, v)  # noqa: E731
        _syscall(builder, [c(_SYS_GETCPU), builder.ptrtoint(cpu, _i64), c(0), c(0)])
        return builder.sext(builder.load(cpu), _i64)

    return types.int64(), codegen
