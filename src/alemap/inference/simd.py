"""Eight-wide float64 (and sixteen-wide float32) row operations for the compiled CPU engine.

The whole-grid path adds kernel rows of ~17 voxels into a cache-resident
buffer millions of times per iteration. Written as plain loops, LLVM turns
each row into a vector loop plus runtime checks that the buffer and the
kernel do not overlap plus a scalar remainder, and that bookkeeping costs
more than the arithmetic. These numba intrinsics emit one unaligned
``<8 x double>`` load/operate/store each, so a row of ``n`` voxels is
``ceil(n / 8)`` straight vector operations (LLVM splits them into narrower
ones on CPUs without 512-bit vectors). The bound pass adds its float32 rows
sixteen values at a time (``add16f``) the same way. The window path
(:mod:`alemap.inference.windows`) updates a window's sums and experiment
minimum in one step (``window8``) and walks bit sets with ``tzcnt`` and
``popcnt`` (``trailing_zeros``, ``bit_count``).

The arithmetic is the scalar loops' own, lane by lane: IEEE ``fadd``, and
for the minimum ``k < d ? k : d`` (an ordered compare, as Python's ``<``), so
results are bit-identical. Callers own the bounds: every call touches one
vector (8 float64 or 16 float32 values) from the given index, and the arrays
must be 1-D and C-contiguous with room for it (``cpu.ROW_PAD``,
``cpu.BOUND_PAD``).

numba's on-disk cache of the engine is keyed on ``cpu.py``: after editing
only this module in a development checkout, delete
``src/alemap/inference/__pycache__`` (an installed upgrade rewrites both).
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.extending import intrinsic

__all__ = ["LANES", "LANES_F32", "add8", "add16f", "min8", "flush8", "window8", "trailing_zeros", "bit_count"]

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


def _row_op(name: str, doc: str, combine, vec=_VEC, dtype=types.float64, align=8):
    """Intrinsic ``name(dst, i, src, j)``: ``dst[i:i + n] = combine(dst[i:i + n], src[j:j + n])``
    with ``n`` the lanes of ``vec``."""

    def typer(typingctx, dst, i, src, j):
        _check(dst, src, dtype=dtype)
        sig = types.void(dst, i, src, j)

        def codegen(context, builder, signature, args):
            d_ptr = _vector_at(context, builder, signature.args[0], args[0], args[1], vec)
            s_ptr = _vector_at(context, builder, signature.args[2], args[2], args[3], vec)
            s = builder.load(s_ptr, align=align)
            d = builder.load(d_ptr, align=align)
            builder.store(combine(builder, d, s), d_ptr, align=align)
            return context.get_dummy_value()

        return sig, codegen

    typer.__name__ = typer.__qualname__ = name
    typer.__doc__ = doc
    return intrinsic(typer)


add8 = _row_op("add8", "``dst[i:i + 8] += src[j:j + 8]``.", lambda b, d, s: b.fadd(d, s))
min8 = _row_op(
    "min8", "``dst[i:i + 8] = where(src[j:j + 8] < dst[i:i + 8], src[j:j + 8], dst[i:i + 8])``.",
    lambda b, d, s: b.select(b.fcmp_ordered("<", s, d), s, d),
)
add16f = _row_op("add16f", "``dst[i:i + 16] += src[j:j + 16]`` on float32 arrays.", lambda b, d, s: b.fadd(d, s),
                 vec=_VEC_F32, dtype=types.float32, align=4)


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
def window8(typingctx, buf, i, src, j, new):
    """One focus on one window of eight voxels (``buf[i:i + 8]`` sums, ``buf[i + 8:i + 16]``
    the current experiment's minimum): if ``new`` (another experiment), the sums take the
    minimum so far (``+ 0.0`` otherwise, which changes no sum) and the minimum restarts from
    the row ``src[j:j + 8]``; else the minimum takes the row as ``min8`` does."""
    _check(buf, src)
    sig = types.void(buf, i, src, j, new)

    def codegen(context, builder, signature, args):
        s_ptr = _vector_at(context, builder, signature.args[0], args[0], args[1])
        m_ptr = _vector_at(context, builder, signature.args[0], args[0],
                           builder.add(args[1], ir.Constant(args[1].type, LANES)))
        r_ptr = _vector_at(context, builder, signature.args[2], args[2], args[3])
        s, m, r = (builder.load(p, align=8) for p in (s_ptr, m_ptr, r_ptr))
        new_exp = builder.icmp_unsigned("!=", args[4], ir.Constant(args[4].type, 0))
        builder.store(builder.fadd(s, builder.select(new_exp, m, ir.Constant(_VEC, [0.0] * LANES))), s_ptr, align=8)
        smaller = builder.select(builder.fcmp_ordered("<", r, m), r, m)
        builder.store(builder.select(new_exp, r, smaller), m_ptr, align=8)
        return context.get_dummy_value()

    return sig, codegen


def _bit_op(name: str, doc: str, llvm_name: str, extra_args: tuple):
    """Intrinsic ``name(bits)`` on a uint64 returning int64: one LLVM bit intrinsic."""

    def typer(typingctx, bits):
        if bits != types.uint64:
            raise TypeError(f"{name} takes a uint64, not {bits}")
        sig = types.int64(types.uint64)

        def codegen(context, builder, signature, args):
            i64 = ir.IntType(64)
            fnty = ir.FunctionType(i64, [i64] + [a.type for a in extra_args])
            fn = builder.module.declare_intrinsic(llvm_name, [i64], fnty)
            return builder.call(fn, [args[0], *extra_args])

        return sig, codegen

    typer.__name__ = typer.__qualname__ = name
    typer.__doc__ = doc
    return intrinsic(typer)


trailing_zeros = _bit_op("trailing_zeros", "Index of the lowest set bit of a uint64, 64 for zero (``tzcnt``).",
                         "llvm.cttz", (ir.Constant(ir.IntType(1), 0),))
bit_count = _bit_op("bit_count", "Number of set bits of a uint64 (``popcnt``).", "llvm.ctpop", ())
