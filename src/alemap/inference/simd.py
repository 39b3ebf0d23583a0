"""Eight-wide float64 row operations for the compiled CPU engine.

The whole-grid path adds kernel rows of ~17 voxels into a cache-resident
buffer millions of times per iteration. Written as plain loops, LLVM turns
each row into a vector loop plus runtime checks that the buffer and the
kernel do not overlap plus a scalar remainder, and that bookkeeping costs
more than the arithmetic. These numba intrinsics emit one unaligned
``<8 x double>`` load/operate/store each, so a row of ``n`` voxels is
``ceil(n / 8)`` straight vector operations (LLVM splits them into narrower
ones on CPUs without 512-bit vectors).

The arithmetic is the scalar loops' own, lane by lane: IEEE ``fadd``, and
for the minimum ``k < d ? k : d`` (an ordered compare, as Python's ``<``), so
results are bit-identical. Callers own the bounds: every call touches eight
elements from the given index, and the arrays must be 1-D, C-contiguous
float64 with room for them (``cpu.ROW_PAD``).
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.extending import intrinsic

__all__ = ["LANES", "LANES_F32", "add8", "add16f", "min8", "flush8"]

#: Elements per operation (float64; float32 for ``add16f``).
LANES = 8
LANES_F32 = 16
_VEC = ir.VectorType(ir.DoubleType(), LANES)
_VEC_F32 = ir.VectorType(ir.FloatType(), LANES_F32)


def _vector_at(context, builder, arr_type, arr, index, vec=_VEC):
    """Pointer to ``arr[index:index + lanes]`` as one vector (no bounds check)."""
    data = context.make_array(arr_type)(context, builder, arr).data
    return builder.bitcast(builder.gep(data, [index]), vec.as_pointer())


def _check(*arrays, dtype=types.float64):
    for a in arrays:
        if not (isinstance(a, types.Array) and a.ndim == 1 and a.dtype == dtype and a.layout == "C"):
            raise TypeError(f"simd row operations take 1-D C-contiguous {dtype} arrays, not {a}")


@intrinsic
def add8(typingctx, dst, i, src, j):
    """``dst[i:i + 8] += src[j:j + 8]``."""
    _check(dst, src)
    sig = types.void(dst, i, src, j)

    def codegen(context, builder, signature, args):
        d_ptr = _vector_at(context, builder, signature.args[0], args[0], args[1])
        s_ptr = _vector_at(context, builder, signature.args[2], args[2], args[3])
        s = builder.load(s_ptr, align=8)
        d = builder.load(d_ptr, align=8)
        builder.store(builder.fadd(d, s), d_ptr, align=8)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def min8(typingctx, dst, i, src, j):
    """``dst[i:i + 8] = where(src[j:j + 8] < dst[i:i + 8], src[j:j + 8], dst[i:i + 8])``."""
    _check(dst, src)
    sig = types.void(dst, i, src, j)

    def codegen(context, builder, signature, args):
        d_ptr = _vector_at(context, builder, signature.args[0], args[0], args[1])
        s_ptr = _vector_at(context, builder, signature.args[2], args[2], args[3])
        s = builder.load(s_ptr, align=8)
        d = builder.load(d_ptr, align=8)
        builder.store(builder.select(builder.fcmp_ordered("<", s, d), s, d), d_ptr, align=8)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def flush8(typingctx, dst, src, i):
    """``dst[i:i + 8] += src[i:i + 8]; src[i:i + 8] = 0``."""
    _check(dst, src)
    sig = types.void(dst, src, i)

    def codegen(context, builder, signature, args):
        d_ptr = _vector_at(context, builder, signature.args[0], args[0], args[2])
        s_ptr = _vector_at(context, builder, signature.args[1], args[1], args[2])
        s = builder.load(s_ptr, align=8)
        d = builder.load(d_ptr, align=8)
        builder.store(builder.fadd(d, s), d_ptr, align=8)
        builder.store(ir.Constant(_VEC, [0.0] * LANES), s_ptr, align=8)
        return context.get_dummy_value()

    return sig, codegen



@intrinsic
def add16f(typingctx, dst, i, src, j):
    """``dst[i:i + 16] += src[j:j + 16]`` on float32 arrays."""
    _check(dst, src, dtype=types.float32)
    sig = types.void(dst, i, src, j)

    def codegen(context, builder, signature, args):
        d_ptr = _vector_at(context, builder, signature.args[0], args[0], args[1], _VEC_F32)
        s_ptr = _vector_at(context, builder, signature.args[2], args[2], args[3], _VEC_F32)
        s = builder.load(s_ptr, align=4)
        d = builder.load(d_ptr, align=4)
        builder.store(builder.fadd(d, s), d_ptr, align=4)
        return context.get_dummy_value()

    return sig, codegen
