"""A 16-float vector type and the few intrinsics the packed CPU kernels use.

Plain ``@njit`` loops over an accumulator array keep every partial sum in
memory (each FMA also loads and stores); a vector *value* held in local
variables lets LLVM keep the micro-kernel's accumulators in registers. The
type is an LLVM ``<16 x float>``: one AVX-512 register, two AVX2 registers
or four SSE/NEON registers, so the same source compiles on any target
(``NUMBA_CPU_NAME=generic`` included), only faster where the width is native.

Every function here is typed for float32 only; the float64 path of the CPU
backend is the generic one (``_cpu_generic``).

NaN handling: comparisons are written so that a NaN input propagates (the
clamp in ``vtanh`` keeps NaN; ``llvm.minnum`` would not).
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic, models, register_model

WIDTH = 16

_f32 = ir.FloatType()
_i32 = ir.IntType(32)
_vty = ir.VectorType(_f32, WIDTH)


def aligned64(a):
    """A C-contiguous copy of ``a`` whose data starts on a 64-byte boundary.

    NumPy only promises 16 bytes; a 64-byte vector load from a misaligned
    panel touches two cache lines. Packed LSTM weights, one core, rows:
    B=1 D=64 H=128 60 -> 68 GFLOP/s, B=8 D=128 H=256 204-211 -> 216.
    """
    a = np.ascontiguousarray(a)
    raw = np.empty(a.size + 64 // a.itemsize, a.dtype)
    start = (-raw.ctypes.data % 64) // a.itemsize
    out = raw[start:start + a.size].reshape(a.shape)
    out[...] = a
    return out


class Vec16Type(types.Type):
    """16 float32 lanes held in registers."""

    def __init__(self):
        super().__init__(name="Vec16f32")


vec16 = Vec16Type()


@register_model(Vec16Type)
class _Vec16Model(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, _vty)


def _is_f32_array(arr):
    return isinstance(arr, types.Array) and arr.dtype == types.float32


def _lane_ptr(context, builder, arrty, arr, idxty, idx):
    ary = context.make_array(arrty)(context, builder, arr)
    i = context.cast(builder, idx, idxty, types.intp)
    ptr = builder.gep(ary.data, [i])
    return builder.bitcast(ptr, _vty.as_pointer())


@intrinsic
def vload(typingctx, arr, idx):
    """Load 16 floats starting at flat element ``idx`` of a C-contiguous array."""
    if not _is_f32_array(arr) or not isinstance(idx, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        ptr = _lane_ptr(context, builder, sig.args[0], args[0], sig.args[1], args[1])
        return builder.load(ptr, align=4)

    return vec16(arr, idx), codegen


@intrinsic
def vstore(typingctx, arr, idx, v):
    """Store 16 floats at flat element ``idx`` of a C-contiguous array."""
    if not _is_f32_array(arr) or not isinstance(idx, types.Integer) or v != vec16:
        return None

    def codegen(context, builder, sig, args):
        ptr = _lane_ptr(context, builder, sig.args[0], args[0], sig.args[1], args[1])
        builder.store(args[2], ptr, align=4)
        return context.get_dummy_value()

    return types.none(arr, idx, v), codegen


@intrinsic
def sload(typingctx, arr, idx):
    """``arr.flat[idx]`` for a C-contiguous float32 array, without Numba's
    negative-index wraparound (which costs three integer ops per load in the
    micro-kernel's inner loop). ``idx`` must be in range."""
    if not _is_f32_array(arr) or not isinstance(idx, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        ary = context.make_array(sig.args[0])(context, builder, args[0])
        i = context.cast(builder, args[1], sig.args[1], types.intp)
        return builder.load(builder.gep(ary.data, [i]), align=4)

    return types.float32(arr, idx), codegen


@intrinsic
def vsplat(typingctx, x):
    """Broadcast a scalar to 16 lanes (converted to float32)."""
    if not isinstance(x, (types.Float, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        val = context.cast(builder, args[0], sig.args[0], types.float32)
        vec = builder.insert_element(ir.Constant(_vty, ir.Undefined), val, ir.Constant(_i32, 0))
        zeros = ir.Constant(ir.VectorType(_i32, WIDTH), [0] * WIDTH)
        return builder.shuffle_vector(vec, vec, zeros)

    return vec16(x), codegen


def _binary(op):
    @intrinsic
    def fn(typingctx, a, b):
        if a != vec16 or b != vec16:
            return None

        def codegen(context, builder, sig, args):
            return getattr(builder, op)(args[0], args[1])

        return vec16(a, b), codegen

    return fn


vadd = _binary("fadd")
vsub = _binary("fsub")
vmul = _binary("fmul")
vdiv = _binary("fdiv")


@intrinsic
def vfma(typingctx, a, b, c):
    """``a * b + c`` in one rounding (``llvm.fma``)."""
    if a != vec16 or b != vec16 or c != vec16:
        return None

    def codegen(context, builder, sig, args):
        fnty = ir.FunctionType(_vty, [_vty, _vty, _vty])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.fma.v16f32")
        return builder.call(fn, list(args))

    return vec16(a, b, c), codegen


@intrinsic
def vclamp(typingctx, x, lo, hi):
    """``min(max(x, lo), hi)`` lane-wise, NaN in ``x`` propagating."""
    if x != vec16 or lo != vec16 or hi != vec16:
        return None

    def codegen(context, builder, sig, args):
        v, lo_, hi_ = args
        v = builder.select(builder.fcmp_ordered("<", v, lo_), lo_, v)
        return builder.select(builder.fcmp_ordered(">", v, hi_), hi_, v)

    return vec16(x, lo, hi), codegen


@intrinsic
def vrelu(typingctx, x):
    """``x if x > 0 else 0`` lane-wise (NaN propagates)."""
    if x != vec16:
        return None

    def codegen(context, builder, sig, args):
        zero = ir.Constant(_vty, [0.0] * WIDTH)
        v = args[0]
        return builder.select(builder.fcmp_ordered("<=", v, zero), zero, v)

    return vec16(x), codegen


# Rational tanh approximation (the one Eigen uses for float): exact to a
# few ulp on [-9, 9] and saturating outside; it vectorises where np.tanh
# does not (no SVML in this Numba build).
_TANH_CLAMP = 7.90531110763549805
_A1 = 4.89352455891786e-03
_A3 = 6.37261928875436e-04
_A5 = 1.48572235717979e-05
_A7 = 5.12229709037114e-08
_A9 = -8.60467152213735e-11
_A11 = 2.00018790482477e-13
_A13 = -2.76076847742355e-16
_B0 = 4.89352518554385e-03
_B2 = 2.26843463243900e-03
_B4 = 1.18534705686654e-04
_B6 = 1.19825839466702e-06


@njit(inline="always")
def vtanh(x):
    x = vclamp(x, vsplat(-_TANH_CLAMP), vsplat(_TANH_CLAMP))
    x2 = vmul(x, x)
    p = vfma(x2, vsplat(_A13), vsplat(_A11))
    p = vfma(x2, p, vsplat(_A9))
    p = vfma(x2, p, vsplat(_A7))
    p = vfma(x2, p, vsplat(_A5))
    p = vfma(x2, p, vsplat(_A3))
    p = vfma(x2, p, vsplat(_A1))
    p = vmul(p, x)
    q = vfma(x2, vsplat(_B6), vsplat(_B4))
    q = vfma(x2, q, vsplat(_B2))
    q = vfma(x2, q, vsplat(_B0))
    return vdiv(p, q)


@njit(inline="always")
def vsigmoid(x):
    # 0.5 * tanh(x / 2) + 0.5, the form of _math.sigmoid
    half = vsplat(0.5)
    return vfma(vtanh(vmul(x, half)), half, half)


# ---- synchronisation between the kernel's own threads ----
# Counters live in an int64 array; the futex word is the low half of one of
# them (little-endian). Reached through ``syscall`` by name, so cached
# kernels hold no ctypes pointer.

import platform as _platform
import sys as _sys

_i64 = ir.IntType(64)
_SYS_FUTEX = {"x86_64": 202, "AMD64": 202, "aarch64": 98, "arm64": 98}.get(_platform.machine())
HAVE_FUTEX = _sys.platform.startswith("linux") and _SYS_FUTEX is not None
_IS_X86 = _platform.machine() in ("x86_64", "AMD64", "i686", "i386")


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


def _prefetcher(locality, doc):
    @intrinsic
    def fn(typingctx, arr, idx):
        if not _is_f32_array(arr) or not isinstance(idx, types.Integer):
            return None

        def codegen(context, builder, sig, args):
            ary = context.make_array(sig.args[0])(context, builder, args[0])
            i = context.cast(builder, args[1], sig.args[1], types.intp)
            ptr = builder.bitcast(builder.gep(ary.data, [i]), cgutils.voidptr_t)
            fnty = ir.FunctionType(ir.VoidType(), [cgutils.voidptr_t, _i32, _i32, _i32])
            f = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
            # (address, read, locality, data cache)
            builder.call(f, [ptr, ir.Constant(_i32, 0), ir.Constant(_i32, locality), ir.Constant(_i32, 1)])
            return context.get_dummy_value()

        return types.none(arr, idx), codegen

    fn.__doc__ = doc
    return fn


prefetch_l2 = _prefetcher(2, """Hint the cache line holding flat element ``idx`` of a float32 array
    into L2 (``prefetcht1`` on x86). A hint: never faults, even out of range.""")
prefetch_l1 = _prefetcher(3, """Hint the cache line holding flat element ``idx`` of a float32 array
    into L1 (``prefetcht0`` on x86). A hint: never faults, even out of range.""")
