"""Subnormal numbers read and written as zero for the duration of a kernel call.

A subnormal (denormal) float is one below the smallest normal magnitude
(``1.2e-38`` in float32, ``2.2e-308`` in float64). Many CPUs take a slow
microcode path for every arithmetic instruction that reads or produces one:
an all-subnormal input (audio silence after a gain stage, features near
zero, a state decaying towards zero under zero biases) made a call up to
two orders of magnitude slower.

Every compiled entry kernel of this package therefore calls
:func:`flush_denormals` on entry and :func:`restore_fp` before it returns,
on every thread that runs kernel code (each parallel loop body, the panel
split's workers, the stream kernels): the thread's floating-point control
register gets flush-to-zero and denormals-are-zero (x86 ``MXCSR`` bits 15
and 6; AArch64 ``FPCR.FZ``, bit 24) and the caller's own setting is put back
afterwards, so code that runs on the same thread after the call (NumPy,
PyTorch, the caller's own) sees its floating-point environment unchanged.
Both are no-ops on other architectures.

What it means for results: inside a kernel call, subnormal inputs, weights
and states read as zeros of the same sign, and a result that would be
subnormal is zero. A normal number never changes, so results on normal
data are the same bits; a result that differs is one where a sum of
products passed through the subnormal range (magnitudes below ``1e-38``
in float32), where the difference is below that magnitude.

A compiler barrier (an empty ``asm`` that clobbers memory) follows the set
and precedes the restore, so no load, store or arithmetic that depends on
them moves out of the flushed region.
"""

from __future__ import annotations

import llvmlite.binding as llvm
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

#: MXCSR: flush-to-zero (bit 15) and denormals-are-zero (bit 6).
MXCSR_FLUSH = (1 << 15) | (1 << 6)
#: AArch64 FPCR: flush-to-zero (bit 24; inputs and outputs).
FPCR_FLUSH = 1 << 24

_i32 = ir.IntType(32)
_i64 = ir.IntType(64)


def _arch_of(triple):
    if triple.startswith(("x86_64", "i386", "i686")):
        return "x86"
    if triple.startswith(("aarch64", "arm64")):
        return "aarch64"
    return None


def _arch(builder):
    return _arch_of(getattr(builder.module, "triple", "") or llvm.get_process_triple())


#: This process's architecture (``"x86"``, ``"aarch64"`` or None: no flushing).
ARCH = _arch_of(llvm.get_process_triple())
#: The bits :func:`flush_denormals` sets here (0 where it does nothing).
FLUSH = {"x86": MXCSR_FLUSH, "aarch64": FPCR_FLUSH}.get(ARCH, 0)


def _barrier(builder):
    asm = ir.InlineAsm(ir.FunctionType(ir.VoidType(), []), "", "~{memory}", side_effect=True)
    builder.call(asm, [])


def _fn(builder, name, ret, args):
    return cgutils.get_or_insert_function(builder.module, ir.FunctionType(ret, args), name)


def _read(builder, arch):
    """The control register as an i64 (0 where there is none)."""
    if arch == "x86":
        slot = cgutils.alloca_once(builder, _i32)
        builder.call(_fn(builder, "llvm.x86.sse.stmxcsr", ir.VoidType(), [cgutils.voidptr_t]),
                     [builder.bitcast(slot, cgutils.voidptr_t)])
        return builder.zext(builder.load(slot), _i64)
    if arch == "aarch64":
        return builder.call(_fn(builder, "llvm.aarch64.get.fpcr", _i64, []), [])
    return ir.Constant(_i64, 0)


def _write(builder, arch, value):
    if arch == "x86":
        slot = cgutils.alloca_once(builder, _i32)
        builder.store(builder.trunc(value, _i32), slot)
        builder.call(_fn(builder, "llvm.x86.sse.ldmxcsr", ir.VoidType(), [cgutils.voidptr_t]),
                     [builder.bitcast(slot, cgutils.voidptr_t)])
    elif arch == "aarch64":
        builder.call(_fn(builder, "llvm.aarch64.set.fpcr", ir.VoidType(), [_i64]), [value])


@intrinsic
def flush_denormals(typingctx):
    """Set flush-to-zero and denormals-are-zero on the calling thread.

    Returns
    -------
    int64
        The control register as it was, for :func:`restore_fp`.
    """

    def codegen(context, builder, sig, args):
        arch = _arch(builder)
        old = _read(builder, arch)
        if arch is not None:
            flags = MXCSR_FLUSH if arch == "x86" else FPCR_FLUSH
            _write(builder, arch, builder.or_(old, ir.Constant(_i64, flags)))
        _barrier(builder)
        return old

    return types.int64(), codegen


@intrinsic
def restore_fp(typingctx, word):
    """Put back the control register :func:`flush_denormals` returned."""
    if not isinstance(word, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        _barrier(builder)
        arch = _arch(builder)
        if arch is not None:
            _write(builder, arch, context.cast(builder, args[0], sig.args[0], types.int64))
        return context.get_dummy_value()

    return types.none(word), codegen


@intrinsic
def fp_control(typingctx):
    """The calling thread's floating-point control register (x86 ``MXCSR``,
    AArch64 ``FPCR``; 0 elsewhere), for tests and diagnostics."""

    def codegen(context, builder, sig, args):
        _barrier(builder)
        return _read(builder, _arch(builder))

    return types.int64(), codegen
