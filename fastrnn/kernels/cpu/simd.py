"""The SIMD vector type of every CPU kernel, and the intrinsics on it.

Plain ``@njit`` loops over an accumulator array keep every partial sum in
memory (each multiply-add also loads and stores); a vector *value* held in
local variables lets LLVM keep a micro-kernel's accumulators in registers.
:data:`VEC` holds one 64-byte vector type per float dtype: an LLVM
``<16 x float>`` or ``<8 x double>`` (one AVX-512 register, two AVX2 or four
SSE/NEON registers), so the same source compiles for any target
(``NUMBA_CPU_NAME=generic`` included), only faster where the width is
native.

The vectors have arithmetic operators (``+ - * /`` and unary ``-``, with a
scalar on either side broadcast to every lane), so a formula written for
scalars, such as the gate math of :mod:`fastrnn.kernels._math`, also runs
on vectors. The functions below cover what the operators do not: loads and
stores, broadcasts, fused multiply-add, clamps, the activations' vector
forms, lane access and prefetches.

NaN handling: comparisons are written so that a NaN input propagates (the
clamps keep NaN; ``llvm.minnum`` would not).

The module is long because it is the one vector type of the CPU kernels:
every intrinsic the tiles and the stream kernels use (float, bfloat16 and
int8 loads, integer dot products, the activations) lives beside the type.
"""

from __future__ import annotations

import operator

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic, models, overload, register_model

#: Bytes of one vector.
BYTES = 64
#: float32 lanes of one vector (the packed panels' width).
LANES = BYTES // 4

_i32 = ir.IntType(32)


class VecType(types.Type):
    """A 64-byte vector of ``dtype`` lanes held in registers."""

    def __init__(self, dtype):
        self.dtype = dtype
        self.lanes = BYTES * 8 // dtype.bitwidth
        super().__init__(name=f"vec{self.lanes}x{dtype}")


#: The vector type of each float dtype.
VEC = {types.float32: VecType(types.float32), types.float64: VecType(types.float64)}


def lanes(dtype):
    """Lanes of one vector of NumPy ``dtype`` (16 for float32, 8 for float64)."""
    return BYTES // np.dtype(dtype).itemsize


@register_model(VecType)
class _VecModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        lane = dmm.lookup(fe_type.dtype).get_value_type()
        super().__init__(dmm, fe_type, ir.VectorType(lane, fe_type.lanes))


def aligned64(a):
    """A C-contiguous copy of ``a`` whose data starts on a 64-byte boundary.

    NumPy only promises 16 bytes; a 64-byte vector load from a misaligned
    panel touches two cache lines.
    """
    a = np.ascontiguousarray(a)
    raw = np.empty(a.size + 64 // a.itemsize, a.dtype)
    start = (-raw.ctypes.data % 64) // a.itemsize
    out = raw[start:start + a.size].reshape(a.shape)
    out[...] = a
    return out


# ---- typing helpers ----

def _llvm_vec(context, vty):
    return ir.VectorType(context.get_value_type(vty.dtype), vty.lanes)


def _float_array(arr):
    return isinstance(arr, types.Array) and arr.dtype in VEC


def _scalar(x):
    return isinstance(x, (types.Float, types.Integer, types.Boolean))


def _like(x):
    """The vector type that goes with ``x``: an array, a vector or a float."""
    if isinstance(x, VecType):
        return x
    if _float_array(x):
        return VEC[x.dtype]
    if isinstance(x, types.Float):
        return VEC.get(x)
    return None


def _elem_ptr(context, builder, arrty, arr, idxty, idx):
    ary = context.make_array(arrty)(context, builder, arr)
    i = context.cast(builder, idx, idxty, types.intp)
    return builder.gep(ary.data, [i])


def _splat(context, builder, vty, val):
    lt = _llvm_vec(context, vty)
    v = builder.insert_element(ir.Constant(lt, ir.Undefined), val, ir.Constant(_i32, 0))
    zeros = ir.Constant(ir.VectorType(_i32, vty.lanes), [0] * vty.lanes)
    return builder.shuffle_vector(v, v, zeros)


# ---- memory ----

@intrinsic
def vload(typingctx, arr, idx):
    """The vector starting at flat element ``idx`` of a contiguous float array."""
    if not _float_array(arr) or not isinstance(idx, types.Integer):
        return None
    vty = VEC[arr.dtype]

    def codegen(context, builder, sig, args):
        p = _elem_ptr(context, builder, sig.args[0], args[0], sig.args[1], args[1])
        p = builder.bitcast(p, _llvm_vec(context, vty).as_pointer())
        return builder.load(p, align=arr.dtype.bitwidth // 8)

    return vty(arr, idx), codegen


@intrinsic
def vstore(typingctx, arr, idx, v):
    """Store the vector ``v`` at flat element ``idx`` of a contiguous float array."""
    if not _float_array(arr) or not isinstance(idx, types.Integer) or v != VEC[arr.dtype]:
        return None

    def codegen(context, builder, sig, args):
        p = _elem_ptr(context, builder, sig.args[0], args[0], sig.args[1], args[1])
        p = builder.bitcast(p, _llvm_vec(context, v).as_pointer())
        builder.store(args[2], p, align=arr.dtype.bitwidth // 8)
        return context.get_dummy_value()

    return types.none(arr, idx, v), codegen


@intrinsic
def sload(typingctx, arr, idx):
    """``arr.flat[idx]`` of a contiguous float array, without Numba's
    negative-index wraparound (three integer operations per load in a
    micro-kernel's inner loop). ``idx`` must be in range."""
    if not _float_array(arr) or not isinstance(idx, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        p = _elem_ptr(context, builder, sig.args[0], args[0], sig.args[1], args[1])
        return builder.load(p, align=arr.dtype.bitwidth // 8)

    return arr.dtype(arr, idx), codegen


def _prefetcher(locality, doc):
    @intrinsic
    def fn(typingctx, arr, idx):
        if not isinstance(arr, types.Array) or not isinstance(idx, types.Integer):
            return None

        def codegen(context, builder, sig, args):
            p = _elem_ptr(context, builder, sig.args[0], args[0], sig.args[1], args[1])
            p = builder.bitcast(p, cgutils.voidptr_t)
            fnty = ir.FunctionType(ir.VoidType(), [cgutils.voidptr_t, _i32, _i32, _i32])
            f = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
            # (address, read, locality, data cache)
            builder.call(f, [p, ir.Constant(_i32, 0), ir.Constant(_i32, locality),
                             ir.Constant(_i32, 1)])
            return context.get_dummy_value()

        return types.none(arr, idx), codegen

    fn.__doc__ = doc
    return fn


prefetch_l2 = _prefetcher(2, """Hint the cache line holding flat element ``idx`` of an array
    (floats, or packed weights) into L2 (``prefetcht1`` on x86). A hint: never faults, even out of range.""")
prefetch_l1 = _prefetcher(3, """Hint the cache line holding flat element ``idx`` of an array
    (floats, or packed weights) into L1 (``prefetcht0`` on x86). A hint: never faults, even out of range.""")


# ---- reduced-precision weights ----
#
# Packed weights may be float32, bfloat16 (stored as the uint16 bit patterns:
# the upper half of a float32) or int8 (with per-column float32 scales
# applied by the caller). Either way a load yields a float32 vector: the
# weights are widened in registers and the arithmetic stays float32.

#: The NumPy dtype that holds each packed weight format.
WEIGHT_DTYPES = {"float32": np.dtype(np.float32), "bfloat16": np.dtype(np.uint16),
                 "int8": np.dtype(np.int8)}


def _weight_array(arr):
    return isinstance(arr, types.Array) and (
        arr.dtype in VEC or arr.dtype in (types.uint16, types.int8))


@intrinsic
def _wload_narrow(typingctx, arr, idx):
    if not isinstance(idx, types.Integer) or not isinstance(arr, types.Array) \
            or arr.dtype not in (types.uint16, types.int8):
        return None
    vty = VEC[types.float32]
    bits = arr.dtype.bitwidth

    def codegen(context, builder, sig, args):
        p = _elem_ptr(context, builder, sig.args[0], args[0], sig.args[1], args[1])
        narrow = ir.VectorType(ir.IntType(bits), 16)
        p = builder.bitcast(p, narrow.as_pointer())
        v = builder.load(p, align=1)
        wide = ir.VectorType(_i32, 16)
        f32 = _llvm_vec(context, vty)
        if bits == 16:  # bfloat16: the upper half of a float32
            v = builder.shl(builder.zext(v, wide), ir.Constant(wide, [16] * 16))
            return builder.bitcast(v, f32)
        return builder.sitofp(builder.sext(v, wide), f32)

    return vty(arr, idx), codegen


def wload(arr, idx):
    """16 packed weights from flat element ``idx`` as a float32 vector.

    float32 (or float64) arrays: :func:`vload`. uint16 arrays hold bfloat16
    bit patterns: 16 x 16 bits loaded, zero-extended and shifted into the
    upper half of each float32 lane (exact). int8 arrays: 16 bytes loaded,
    sign-extended and converted to float32 (exact; the column scales are
    the caller's). LLVM lowers these to one widening load and one shift or
    convert per vector on x86 (``vpmovzxwd`` + ``vpslld``, ``vpmovsxbd`` +
    ``vcvtdq2ps``) and to plain integer vector code on any other target.
    """
    raise NotImplementedError  # typed by the overload below


@overload(wload, inline="always")
def _ov_wload(arr, idx):
    if _float_array(arr):
        return lambda arr, idx: vload(arr, idx)
    if _weight_array(arr):
        return lambda arr, idx: _wload_narrow(arr, idx)
    return None


# ---- int8 dot products (int8 weights, dynamically quantized activations) ----
#
# A vector of 16 int32 lanes; lane i of a weight vector packs the int8
# weights of 4 consecutive k for column i (byte j: k = 4 * group + j), and
# an activation vector broadcasts the 4 uint8 activations of those k to
# every lane. vdot then adds the 4 products of each lane to its int32 sum,
# exactly: one vpdpbusd where the target has AVX512_VNNI, and plain integer
# vector code (the same integers) everywhere else.

#: 16 int32 lanes (one 64-byte register).
IVEC = VecType(types.int32)


def _ivec(context):
    return ir.VectorType(_i32, 16)


@intrinsic
def izero(typingctx, like):
    """A vector of 16 int32 zeros (``like``: any value; only typing)."""
    def codegen(context, builder, sig, args):
        return ir.Constant(_ivec(context), None)

    return IVEC(like), codegen


@intrinsic
def dload(typingctx, arr, idx):
    """16 int32 lanes from flat element ``idx`` of a contiguous array (the
    packed int8 weights of a dot-product panel, stored as int32; the bfloat16
    pairs of a :func:`bdot` panel, stored as uint32; the bfloat16 pairs of a
    weights-only bfloat16 panel, stored as uint16, ``idx`` counting uint16
    elements (see :func:`pair_lo`); or, from a float32 array, int32 bit
    patterns kept beside the scales)."""
    if not isinstance(arr, types.Array) or not isinstance(idx, types.Integer) \
            or arr.dtype not in (types.int32, types.uint32, types.uint16, types.float32):
        return None

    def codegen(context, builder, sig, args):
        p = _elem_ptr(context, builder, sig.args[0], args[0], sig.args[1], args[1])
        return builder.load(builder.bitcast(p, _ivec(context).as_pointer()), align=4)

    return IVEC(arr, idx), codegen


@intrinsic
def dsplat(typingctx, arr, idx):
    """The 4 bytes from flat element ``idx`` of a uint8 array (4 activations
    for :func:`vdot`), or of a uint16 array (2 bfloat16 activations for
    :func:`bdot`), as one int32 broadcast to all 16 lanes."""
    if not isinstance(arr, types.Array) or arr.dtype not in (types.uint8, types.uint16) \
            or not isinstance(idx, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        p = _elem_ptr(context, builder, sig.args[0], args[0], sig.args[1], args[1])
        v = builder.load(builder.bitcast(p, _i32.as_pointer()), align=1)
        vt = _ivec(context)
        v0 = builder.insert_element(ir.Constant(vt, ir.Undefined), v, ir.Constant(_i32, 0))
        return builder.shuffle_vector(v0, v0, ir.Constant(vt, [0] * 16))

    return IVEC(arr, idx), codegen


def _pair_half(high, doc):
    @intrinsic
    def half(typingctx, v):
        if v != IVEC:
            return None
        vty = VEC[types.float32]

        def codegen(context, builder, sig, args):
            wide = _ivec(context)
            if high:  # already the upper half of a float32: clear the lower
                bits = builder.and_(args[0], ir.Constant(wide, [-65536] * 16))
            else:
                bits = builder.shl(args[0], ir.Constant(wide, [16] * 16))
            return builder.bitcast(bits, _llvm_vec(context, vty))

        return vty(v), codegen

    half.__doc__ = doc
    return half


# Two bfloat16 weights per int32 lane (one column, two consecutive k, the
# lower k in the lower half) widen with one shift or one mask each: no
# shuffle, as a zero-extending load of 16 bfloat16 would take.
pair_lo = _pair_half(False, "The lower bfloat16 of each int32 lane of ``v`` as float32 (exact).")
pair_hi = _pair_half(True, "The upper bfloat16 of each int32 lane of ``v`` as float32 (exact).")


def _has_vnni(context):
    features = getattr(context.codegen(), "_tm_features", "") or ""
    return "+avx512vnni" in features.split(",")


@intrinsic
def vdot(typingctx, acc, a, b):
    """``acc[i] + sum_j a.u8[4i + j] * b.s8[4i + j]`` (j < 4) for each of the
    16 int32 lanes: unsigned activations times signed weights, exact (no
    saturation)."""
    if acc != IVEC or a != IVEC or b != IVEC:
        return None

    def codegen(context, builder, sig, args):
        acc_, a_, b_ = args
        bytes_ = ir.VectorType(ir.IntType(8), 64)
        if _has_vnni(context):
            fnty = ir.FunctionType(_ivec(context), [_ivec(context), bytes_, bytes_])
            fn = cgutils.get_or_insert_function(builder.module, fnty,
                                                "llvm.x86.avx512.vpdpbusd.512")
            return builder.call(fn, [acc_, builder.bitcast(a_, bytes_),
                                     builder.bitcast(b_, bytes_)])
        # portable: widen to 16 bits (255 * 127 fits), multiply, add the four
        # products of each lane
        w16 = ir.VectorType(ir.IntType(16), 64)
        w32 = ir.VectorType(_i32, 64)
        prod = builder.mul(builder.zext(builder.bitcast(a_, bytes_), w16),
                           builder.sext(builder.bitcast(b_, bytes_), w16))
        prod = builder.sext(prod, w32)
        out = acc_
        for j in range(4):
            pick = ir.Constant(ir.VectorType(_i32, 16), [4 * i + j for i in range(16)])
            out = builder.add(out, builder.shuffle_vector(prod, prod, pick))
        return out

    return IVEC(acc, a, b), codegen


class _BFloat(ir.Type):
    """LLVM's ``bfloat`` scalar type (llvmlite has no class for it): the
    operand type of the bfloat16 dot-product intrinsic."""

    def _to_string(self):
        return "bfloat"

    def __eq__(self, other):
        return isinstance(other, _BFloat)

    def __hash__(self):
        return hash("bfloat")


def _has_bf16(context):
    features = getattr(context.codegen(), "_tm_features", "") or ""
    return "+avx512bf16" in features.split(",")


@intrinsic
def bdot(typingctx, acc, a, b):
    """``acc[i] + a.bf16[2i+1] * b.bf16[2i+1] + a.bf16[2i] * b.bf16[2i]`` for
    each of the 16 float32 lanes (``a``, ``b``: int32 vectors of bfloat16
    pairs, :func:`dload` / :func:`dsplat`). A product of two bfloat16 is exact
    in float32; each addition rounds to float32, the odd pair's first. One
    ``vdpbf16ps`` where the target has AVX512_BF16 (which also reads and
    writes subnormals as zero, as the kernels' :mod:`.fpenv` setting does),
    and the same arithmetic in plain vector code (two multiply-adds)
    everywhere else."""
    vty = VEC[types.float32]
    if acc != vty or a != IVEC or b != IVEC:
        return None

    def codegen(context, builder, sig, args):
        acc_, a_, b_ = args
        fty = _llvm_vec(context, vty)
        if _has_bf16(context):
            bv = ir.VectorType(_BFloat(), 32)
            fnty = ir.FunctionType(fty, [fty, bv, bv])
            fn = cgutils.get_or_insert_function(builder.module, fnty,
                                                "llvm.x86.avx512bf16.dpbf16ps.512")
            return builder.call(fn, [acc_, builder.bitcast(a_, bv), builder.bitcast(b_, bv)])
        iv = _ivec(context)
        hi = ir.Constant(iv, [-65536] * 16)  # 0xFFFF0000
        sixteen = ir.Constant(iv, [16] * 16)

        def fma(x, y, z):
            fn = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(fty, [fty, fty, fty]), "llvm.fma.v16f32")
            return builder.call(fn, [x, y, z])

        odd = fma(builder.bitcast(builder.and_(a_, hi), fty),
                  builder.bitcast(builder.and_(b_, hi), fty), acc_)
        return fma(builder.bitcast(builder.shl(a_, sixteen), fty),
                   builder.bitcast(builder.shl(b_, sixteen), fty), odd)

    return vty(acc, a, b), codegen


@intrinsic
def isub(typingctx, a, b):
    """``a - b`` on int32 lanes."""
    if a != IVEC or b != IVEC:
        return None

    def codegen(context, builder, sig, args):
        return builder.sub(args[0], args[1])

    return IVEC(a, b), codegen


@intrinsic
def itof(typingctx, a):
    """int32 lanes converted to float32 (rounded to nearest past 2**24)."""
    if a != IVEC:
        return None
    vty = VEC[types.float32]

    def codegen(context, builder, sig, args):
        return builder.sitofp(args[0], _llvm_vec(context, vty))

    return vty(a), codegen


def dot_instruction():
    """What :func:`vdot` compiles to on this target: ``"vpdpbusd"`` with
    AVX512_VNNI, else ``"portable integer code"``."""
    from numba.core.registry import cpu_target

    return "vpdpbusd" if _has_vnni(cpu_target.target_context) else "portable integer code"


def bf16_dot_instruction():
    """What :func:`bdot` compiles to on this target: ``"vdpbf16ps"`` with
    AVX512_BF16, else ``"vector multiply-adds"``."""
    from numba.core.registry import cpu_target

    return "vdpbf16ps" if _has_bf16(cpu_target.target_context) else "vector multiply-adds"


def load_instructions(fmt):
    """The instructions this machine's kernels use to widen and apply one
    vector of ``fmt`` weights (``"float32"``, ``"bfloat16"`` or ``"int8"``),
    read from the assembly of a probe compiled for this target, e.g.
    ``"vpmovsxbd + vcvtdq2ps + vfmadd213ps (zmm)"`` (bfloat16: a vector of
    pairs, :func:`pair_lo` / :func:`pair_hi`). For ``python -m fastrnn
    info``; compiles on first call."""
    import re

    from numba import typeof

    w = np.zeros(64, WEIGHT_DTYPES[fmt])
    out = np.zeros(64, np.float32)
    # bfloat16 panels hold pairs of k (see pair_lo): the kernels widen those
    probe = _probe_pairs if fmt == "bfloat16" else _probe
    probe(w, out)
    asm = probe.inspect_asm((typeof(w), typeof(out)))
    wanted = ("pmovzx", "pmovsx", "punpck", "psll", "psra", "pand", "cvtdq2ps", "fmadd", "mulps",
              "addps")
    names, regs = [], set()
    for m in re.finditer(r"^\s+([a-z][a-z0-9]*)\s+([^\n]*)", asm, re.M):
        name, ops = m.group(1), m.group(2)
        if any(k in name for k in wanted) and name not in names:
            names.append(name)
            regs.update(re.findall(r"%([xyz])mm", ops))
    if re.search(r"\bfmaf\b", asm):  # no FMA instruction on this target: libm, lane by lane
        names.append("fmaf calls")
    if not names:
        return "no x86 vector instructions found (another architecture)"
    width = "zmm" if "z" in regs else "ymm" if "y" in regs else "xmm"
    return f"{' + '.join(names)} ({width})"


@njit(nogil=True)
def _probe(w, out):
    vstore(out, 0, vfma(wload(w, 0), vload(out, 16), vload(out, 32)))


@njit(nogil=True)
def _probe_pairs(w, out):
    v = dload(w, 0)
    vstore(out, 0, vfma(pair_hi(v), vload(out, 16), vfma(pair_lo(v), vload(out, 32),
                                                          vload(out, 48))))


@intrinsic
def f32_from_bits(typingctx, x):
    """The float32 whose bit pattern is the low 32 bits of the integer ``x``."""
    if not isinstance(x, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        v = args[0]
        if x.bitwidth > 32:
            v = builder.trunc(v, _i32)
        return builder.bitcast(v, ir.FloatType())

    return types.float32(x), codegen


# ---- making vectors ----

@intrinsic
def vsplat(typingctx, x):
    """Every lane set to the float scalar ``x`` (a float32 or float64 vector)."""
    vty = VEC.get(x)
    if vty is None:
        return None

    def codegen(context, builder, sig, args):
        return _splat(context, builder, vty, args[0])

    return vty(x), codegen


@intrinsic
def vfill(typingctx, like, x):
    """A vector of ``like``'s dtype (an array or a vector) with every lane
    set to the scalar ``x``, converted to that dtype."""
    vty = _like(like)
    if vty is None or not _scalar(x):
        return None

    def codegen(context, builder, sig, args):
        val = context.cast(builder, args[1], sig.args[1], vty.dtype)
        return _splat(context, builder, vty, val)

    return vty(like, x), codegen


@intrinsic
def vzero(typingctx, like):
    """A zero vector of ``like``'s dtype (an array or a vector)."""
    vty = _like(like)
    if vty is None:
        return None

    def codegen(context, builder, sig, args):
        return ir.Constant(_llvm_vec(context, vty), None)

    return vty(like), codegen


@intrinsic
def vlanes(typingctx, v):
    """The number of lanes of the vector ``v`` (a constant)."""
    if not isinstance(v, VecType):
        return None

    def codegen(context, builder, sig, args):
        return context.get_constant(types.intp, v.lanes)

    return types.intp(v), codegen


@intrinsic
def vget(typingctx, v, i):
    """Lane ``i`` of ``v``."""
    if not isinstance(v, VecType) or not isinstance(i, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        return builder.extract_element(args[0], args[1])

    return v.dtype(v, i), codegen


@intrinsic
def vset(typingctx, v, i, x):
    """``v`` with lane ``i`` set to the scalar ``x``."""
    if not isinstance(v, VecType) or not isinstance(i, types.Integer) or not _scalar(x):
        return None

    def codegen(context, builder, sig, args):
        val = context.cast(builder, args[2], sig.args[2], v.dtype)
        return builder.insert_element(args[0], val, args[1])

    return v(v, i, x), codegen


@njit(inline="always")
def vload_part(arr, idx, n):
    """The first ``n`` lanes from flat element ``idx`` of ``arr``, zeros past
    them (no element past ``idx + n - 1`` is read)."""
    v = vzero(arr)
    if n >= vlanes(v):
        return vload(arr, idx)
    for i in range(n):
        v = vset(v, i, arr[idx + i])
    return v


@njit(inline="always")
def vstore_part(arr, idx, v, n):
    """Store the first ``n`` lanes of ``v`` at flat element ``idx`` of ``arr``."""
    if n >= vlanes(v):
        vstore(arr, idx, v)
        return
    for i in range(n):
        arr[idx + i] = vget(v, i)


# ---- arithmetic ----

def _binary(op):
    @intrinsic
    def fn(typingctx, a, b):
        if not isinstance(a, VecType) or a != b:
            return None

        def codegen(context, builder, sig, args):
            return getattr(builder, op)(args[0], args[1])

        return a(a, b), codegen

    return fn


vadd = _binary("fadd")
vsub = _binary("fsub")
vmul = _binary("fmul")
vdiv = _binary("fdiv")


def _operator(op, vfn):
    """``op`` on vectors, and on a vector and a scalar (broadcast to every lane)."""

    @overload(op)
    def _ov(a, b):
        if isinstance(a, VecType) and a == b:
            return lambda a, b: vfn(a, b)
        if isinstance(a, VecType) and _scalar(b):
            return lambda a, b: vfn(a, vfill(a, b))
        if _scalar(a) and isinstance(b, VecType):
            return lambda a, b: vfn(vfill(b, a), b)
        return None


_operator(operator.add, vadd)
_operator(operator.sub, vsub)
_operator(operator.mul, vmul)
_operator(operator.truediv, vdiv)


@overload(operator.neg)
def _ov_neg(a):
    if isinstance(a, VecType):
        return lambda a: vsub(vzero(a), a)
    return None


@intrinsic
def vfma(typingctx, a, b, c):
    """``a * b + c`` lane by lane, in one rounding (``llvm.fma``)."""
    if not isinstance(a, VecType) or a != b or a != c:
        return None

    def codegen(context, builder, sig, args):
        lt = _llvm_vec(context, a)
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(lt, [lt] * 3),
            "llvm.fma.v%df%d" % (a.lanes, a.dtype.bitwidth))
        return builder.call(fn, list(args))

    return a(a, b, c), codegen


@intrinsic
def vclamp(typingctx, x, lo, hi):
    """``min(max(x, lo), hi)`` lane-wise, NaN in ``x`` propagating."""
    if not isinstance(x, VecType) or lo != x or hi != x:
        return None

    def codegen(context, builder, sig, args):
        v, lo_, hi_ = args
        v = builder.select(builder.fcmp_ordered("<", v, lo_), lo_, v)
        return builder.select(builder.fcmp_ordered(">", v, hi_), hi_, v)

    return x(x, lo, hi), codegen


@intrinsic
def vrelu(typingctx, x):
    """``x if x > 0 else 0`` lane-wise (NaN propagates)."""
    if not isinstance(x, VecType):
        return None

    def codegen(context, builder, sig, args):
        zero = ir.Constant(_llvm_vec(context, x), None)
        v = args[0]
        return builder.select(builder.fcmp_ordered("<=", v, zero), zero, v)

    return x(x), codegen


# ---- activations ----
#
# float32 sigmoid and tanh on vectors (Numba has no vector math library
# here; math.exp and math.tanh would run lane by lane), within float32
# rounding over the whole line: a gate that saturates reaches exactly 0 or
# 1, as float32 ``1 / (1 + exp(-x))`` does, so a unit that holds its memory
# holds it over any number of steps. Other activations, and every float64
# one, run lane by lane (fastrnn.kernels.cpu.gates).
#
# They are generated as LLVM IR in which every floating-point instruction
# carries its own fast-math flags ("afn", which changes no arithmetic):
# Numba adds a kernel's fastmath flags only to instructions that have none,
# and reassociation (the stream kernels allow it) would fold the range
# reduction's rounding away. NaN propagates through every step (no lane
# takes a poison value: the integer conversion is a bit pattern).
#
# Both rest on exp(x) = 2**n * (1 + q), x in [-88, 20]: n = round(x / ln 2)
# by adding and subtracting 1.5 * 2**23 (round to nearest even, no SSE4.1
# needed), r = x - n ln 2 in two fused steps (Cody-Waite,
# ln 2 = _LN2_HI + _LN2_LO), q = exp(r) - 1 = r + r**2 p(r) on
# |r| <= ln 2 / 2 with p of degree 4 fitted for relative error (0.05 ulp of
# exp(r)), 2**n put into the exponent field with integer shifts. A result
# below 2**-126 (subnormal) comes out as 0, as it would anyway under the
# kernels' flush-to-zero (see .fpenv).
#
# sigmoid: e = exp(-|x|), then 1 / (1 + e) or e / (1 + e) by the sign of x
# (max error 2.4 ulp, of the gate and of 1 - gate alike).
# tanh: u = exp(2|x|) - 1 = 2**n (1 + q) - 1 in one fused step (q itself
# where n = 0: no cancellation near 0), tanh|x| = u / (u + 2) (max error
# 2.6 ulp), the sign of x put back; |x| is capped
# at 10, past which tanh is 1 in float32 (1 - tanh(9.02) < 2**-25).

_FLAGS = ("afn",)
_LOG2E = 1.44269504088896341
_ROUND = 12582912.0  # 1.5 * 2**23
_ROUND_BITS = 0x4B400000
_LN2_HI = 0.693145751953125  # 15 significant bits: n * _LN2_HI is exact
_LN2_LO = 1.42860682030941723212e-6
_EXP_P = (1.3814515817218748e-3, 8.368746632663087e-3, 4.166839120946138e-2,
          0.1666652038721329, 0.4999999343062348)
_TANH_BIG = 10.0


class _IR:
    """IR helpers for one float32 vector type, every FP instruction flagged."""

    def __init__(self, context, builder, vty):
        self.b = builder
        self.lt = _llvm_vec(context, vty)
        self.it = ir.VectorType(_i32, vty.lanes)
        self.lanes = vty.lanes

    def c(self, v):
        return ir.Constant(self.lt, [float(v)] * self.lanes)

    def ic(self, v):
        return ir.Constant(self.it, [int(v)] * self.lanes)

    def add(self, a, b):
        return self.b.fadd(a, b, flags=_FLAGS)

    def sub(self, a, b):
        return self.b.fsub(a, b, flags=_FLAGS)

    def mul(self, a, b):
        return self.b.fmul(a, b, flags=_FLAGS)

    def div(self, a, b):
        return self.b.fdiv(a, b, flags=_FLAGS)

    def call(self, name, args):
        fn = cgutils.get_or_insert_function(
            self.b.module, ir.FunctionType(self.lt, [self.lt] * len(args)),
            f"llvm.{name}.v{self.lanes}f32")
        return self.b.call(fn, args)

    def fma(self, a, b, c):
        return self.call("fma", [a, b, c])

    def horner(self, x, coefs):
        p = self.c(coefs[0])
        for k in coefs[1:]:
            p = self.fma(p, x, self.c(k))
        return p

    def less(self, x, y):
        """``x < y`` lane by lane, false where either is NaN."""
        return self.b.fcmp_ordered("<", x, y, flags=_FLAGS)

    def pow2(self, n):
        """2**n for integer lanes n in [-126, 127]."""
        bits = self.b.shl(self.b.add(n, self.ic(127)), self.ic(23))
        return self.b.bitcast(bits, self.lt)

    def exp_parts(self, x):
        """``(q, s)`` with ``exp(x) = s * (1 + q)``, ``s = 2**n``, for x in
        [-88, 88]: ``fma(q, s, s)`` is exp(x), ``fma(q, s, s - 1)`` exp(x) - 1
        (with no cancellation where n = 0: q itself)."""
        t = self.fma(x, self.c(_LOG2E), self.c(_ROUND))
        n = self.sub(t, self.c(_ROUND))
        ni = self.b.sub(self.b.bitcast(t, self.it), self.ic(_ROUND_BITS))
        r = self.fma(n, self.c(-_LN2_HI), x)
        r = self.fma(n, self.c(-_LN2_LO), r)
        q = self.fma(self.horner(r, _EXP_P), self.mul(r, r), r)
        return q, self.pow2(ni)


def _f32_unary(doc, body):
    @intrinsic
    def fn(typingctx, x):
        if x != VEC[types.float32]:
            return None

        def codegen(context, builder, sig, args):
            return body(_IR(context, builder, x), args[0])

        return x(x), codegen

    fn.__doc__ = doc
    return fn


def _sigmoid_body(m, x):
    # the value of 1 / (1 + exp(-x)) with the relative accuracy of exp on
    # both sides (1 - sigmoid(x) = sigmoid(-x)), and no overflow
    b = m.b
    neg = b.fneg(m.call("fabs", [x]), flags=_FLAGS)
    q, s = m.exp_parts(b.select(m.less(neg, m.c(-88.0)), m.c(-88.0), neg))
    e = m.fma(q, s, s)
    return m.div(b.select(m.less(x, m.c(0.0)), e, m.c(1.0)), m.add(m.c(1.0), e))


def _tanh_body(m, x):
    b = m.b
    a = m.call("fabs", [x])
    a = b.select(m.less(m.c(_TANH_BIG), a), m.c(_TANH_BIG), a)
    q, s = m.exp_parts(m.add(a, a))
    u = m.fma(q, s, m.sub(s, m.c(1.0)))
    return m.call("copysign", [m.div(u, m.add(u, m.c(2.0))), x])


vsigmoid = _f32_unary("""``1 / (1 + exp(-x))`` on every lane of a float32 vector: within
    2.4 ulp of the exact sigmoid, and ``1 - sigmoid`` within 2.4 ulp or
    2**-24, so exactly 1 above x = 17.33 and 0 below x = -87.7 (where the
    exact value is subnormal); NaN propagates.""", _sigmoid_body)
vtanh = _f32_unary("""tanh on every lane of a float32 vector: within 2.6 ulp of the exact
    tanh and ``1 - |tanh|`` within 2**-24, so exactly +-1 past |x| = 9.02;
    odd (-0 stays -0); NaN propagates.""", _tanh_body)
