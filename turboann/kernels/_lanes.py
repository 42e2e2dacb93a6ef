"""Eight 32-bit lanes as one Numba value (one AVX register), for the encoder's lane kernels.

The encoder works on 8 vectors at once in a coordinate-major buffer (see
`hadamard.LANES`): coordinate i of all 8 is one register. LLVM's loop
vectoriser does not see that through Numba's eight-iteration loops and
small scratch arrays, so here the register is a type: `f32x8` is LLVM's
<8 x float>, `i32x8` <8 x i32> and `f64x8` <8 x double>. `+`, `-`, `*` (and
`&`, `|`, `<<`, `>>` on i32x8) are one vector instruction each; values stay
in registers. Arithmetic is plain IEEE (no fused multiply-add, no
reassociation), so a lane kernel gives bit for bit what the scalar loop it
replaces gives, one lane per vector; `fma` is the one fused operation, for
sums whose rounding no result depends on bit for bit.

All IR is target-independent except `permute`, which is vpermps with AVX2
and generic IR (slow, never the hot path there) without.
"""
from __future__ import annotations

import operator

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, models, overload, register_model

from ._simd import HAS_AVX2, _pointer

WIDTH = 8
_I32 = ir.IntType(32)


class Lanes(types.Type):
    """8 lanes of one scalar kind: "f32", "i32" or "f64"."""

    def __init__(self, kind: str):
        self.kind = kind
        super().__init__(name=f"{kind}x{WIDTH}")


f32x8 = Lanes("f32")
i32x8 = Lanes("i32")
f64x8 = Lanes("f64")
_ELEMENT = {"f32": ir.FloatType(), "i32": _I32, "f64": ir.DoubleType()}
_SCALAR = {"f32": types.float32, "i32": types.int32, "f64": types.float64}


def _ir(t: Lanes) -> ir.VectorType:
    return ir.VectorType(_ELEMENT[t.kind], WIDTH)


@register_model(Lanes)
class _LanesModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, _ir(fe_type))


def _broadcast(builder, value, vtype: ir.VectorType):
    undef = ir.Constant(vtype, ir.Undefined)
    one = builder.insert_element(undef, value, ir.Constant(_I32, 0))
    return builder.shuffle_vector(one, undef, ir.Constant(ir.VectorType(_I32, WIDTH), [0] * WIDTH))


# -- memory ---------------------------------------------------------------------------

@intrinsic
def load(typingctx, arr, offset):
    """Elements offset..offset+7 of a C-contiguous float32 array as f32x8 (no alignment needed)."""
    if not (isinstance(arr, types.Array) and arr.dtype == types.float32):
        return None

    def codegen(context, builder, sig, args):
        return builder.load(_pointer(context, builder, sig.args[0], args[0], args[1], _ir(f32x8)), align=4)
    return f32x8(arr, offset), codegen


@intrinsic
def store(typingctx, arr, offset, v):
    """Write f32x8 v to elements offset..offset+7 of a C-contiguous float32 array."""
    if not (isinstance(arr, types.Array) and arr.dtype == types.float32 and v == f32x8):
        return None

    def codegen(context, builder, sig, args):
        builder.store(args[2], _pointer(context, builder, sig.args[0], args[0], args[1], _ir(f32x8)), align=4)
        return context.get_dummy_value()
    return types.void(arr, offset, v), codegen


@intrinsic
def store_bytes(typingctx, arr, offset, v):
    """Write the low byte of each lane of i32x8 v to elements offset..offset+7 of a uint8 array."""
    if not (isinstance(arr, types.Array) and arr.dtype == types.uint8 and v == i32x8):
        return None

    def codegen(context, builder, sig, args):
        vtype = ir.VectorType(ir.IntType(8), WIDTH)
        builder.store(builder.trunc(args[2], vtype),
                      _pointer(context, builder, sig.args[0], args[0], args[1], vtype), align=1)
        return context.get_dummy_value()
    return types.void(arr, offset, v), codegen


@intrinsic
def transpose(typingctx, arr, offset, stride):
    """The 8 x 8 tile arr[offset + r * stride + c] (r, c < 8) of a C-contiguous float32 array, as its
    8 columns: a UniTuple of f32x8 whose value c holds element c of every row r, in lane r."""
    if not (isinstance(arr, types.Array) and arr.dtype == types.float32):
        return None
    out = types.UniTuple(f32x8, WIDTH)

    def codegen(context, builder, sig, args):
        array = args[0]
        start = context.cast(builder, args[1], sig.args[1], types.int64)
        step = context.cast(builder, args[2], sig.args[2], types.int64)
        rows = []
        for r in range(WIDTH):
            at = builder.add(start, builder.mul(step, ir.Constant(step.type, r)))
            rows.append(builder.load(_pointer(context, builder, sig.args[0], array, at, _ir(f32x8)), align=4))

        def shuffle(a, b, mask):
            return builder.shuffle_vector(a, b, ir.Constant(ir.VectorType(_I32, WIDTH), mask))
        # unpack pairs of rows, then pairs of pairs, then swap 128-bit halves (vunpck, vshufps, vperm2f128)
        lo, hi = [0, 8, 1, 9, 4, 12, 5, 13], [2, 10, 3, 11, 6, 14, 7, 15]
        t = [shuffle(rows[2 * i], rows[2 * i + 1], m) for i in range(4) for m in (lo, hi)]
        lo, hi = [0, 1, 8, 9, 4, 5, 12, 13], [2, 3, 10, 11, 6, 7, 14, 15]
        s = [shuffle(t[4 * i + j], t[4 * i + j + 2], m) for i in range(2) for j in range(2) for m in (lo, hi)]
        cols = [None] * WIDTH
        for c in range(4):
            cols[c] = shuffle(s[c], s[c + 4], [0, 1, 2, 3, 8, 9, 10, 11])
            cols[c + 4] = shuffle(s[c], s[c + 4], [4, 5, 6, 7, 12, 13, 14, 15])
        return context.make_tuple(builder, sig.return_type, cols)
    return out(arr, offset, stride), codegen


# -- construction and lanes ----------------------------------------------------------

def _named(typer, name: str, doc: str | None = None):
    """The intrinsic of a typing function made by a factory, under its own name."""
    typer.__name__ = typer.__qualname__ = name
    typer.__doc__ = doc
    return intrinsic(typer)


def _splatter(vt: Lanes):
    def typer(typingctx, value):
        if not isinstance(value, (types.Float, types.Integer)):
            return None

        def codegen(context, builder, sig, args):
            scalar = context.cast(builder, args[0], sig.args[0], _SCALAR[vt.kind])
            return _broadcast(builder, scalar, _ir(vt))
        return vt(value), codegen
    return _named(typer, f"splat_{vt.kind}", f"A {vt.name} with every lane equal to `value` (converted to {vt.kind}).")


splat = _splatter(f32x8)
splat_i32 = _splatter(i32x8)


@intrinsic
def get(typingctx, v, lane):
    """Lane `lane` of a Lanes value, as a scalar of its kind."""
    if not isinstance(v, Lanes):
        return None

    def codegen(context, builder, sig, args):
        return builder.extract_element(args[0], builder.trunc(args[1], _I32))
    return _SCALAR[v.kind](v, lane), codegen


@intrinsic
def widen(typingctx, v):
    """f32x8 -> f64x8, exactly."""
    if v != f32x8:
        return None

    def codegen(context, builder, sig, args):
        return builder.fpext(args[0], _ir(f64x8))
    return f64x8(v), codegen


# -- comparisons and selection -------------------------------------------------------

@intrinsic
def ge(typingctx, a, b):
    """i32x8 mask: -1 where a >= b (f32x8, ordered: NaN compares false), else 0."""
    if not (a == f32x8 and b == f32x8):
        return None

    def codegen(context, builder, sig, args):
        return builder.sext(builder.fcmp_ordered(">=", args[0], args[1]), _ir(i32x8))
    return i32x8(a, b), codegen


@intrinsic
def where(typingctx, mask, a, b):
    """Lanes of a where the i32x8 mask is nonzero, of b elsewhere."""
    if not (mask == i32x8 and isinstance(a, Lanes) and a == b):
        return None

    def codegen(context, builder, sig, args):
        zero = ir.Constant(_ir(i32x8), None)
        return builder.select(builder.icmp_signed("!=", args[0], zero), args[1], args[2])
    return a(mask, a, b), codegen


@intrinsic
def permute(typingctx, table, index):
    """Lane l = table[index[l] & 7]: f32x8 table, i32x8 index (vpermps)."""
    if not (table == f32x8 and index == i32x8):
        return None

    def codegen(context, builder, sig, args):
        if HAS_AVX2:
            fn = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(_ir(f32x8), [_ir(f32x8), _ir(i32x8)]), "llvm.x86.avx2.permps")
            return builder.call(fn, args)
        out = ir.Constant(_ir(f32x8), ir.Undefined)
        for lane in range(WIDTH):
            pos = builder.and_(builder.extract_element(args[1], ir.Constant(_I32, lane)), ir.Constant(_I32, 7))
            out = builder.insert_element(out, builder.extract_element(args[0], pos), ir.Constant(_I32, lane))
        return out
    return f32x8(table, index), codegen


@intrinsic
def fma(typingctx, a, b, c):
    """a * b + c for f32x8 values, rounded once (vfmadd with FMA3, llvm.fma otherwise)."""
    if not (a == f32x8 and b == f32x8 and c == f32x8):
        return None

    def codegen(context, builder, sig, args):
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(_ir(f32x8), [_ir(f32x8)] * 3), "llvm.fma.v8f32")
        return builder.call(fn, args)
    return f32x8(a, b, c), codegen


# -- operators -----------------------------------------------------------------------

def _binary(float_op: str | None, int_op: str | None, name: str):
    """An intrinsic applying an LLVM binary instruction to two Lanes values of one kind."""
    def typer(typingctx, a, b):
        if not (isinstance(a, Lanes) and a == b):
            return None
        op = int_op if a.kind == "i32" else float_op
        if op is None:
            return None

        def codegen(context, builder, sig, args):
            return getattr(builder, op)(args[0], args[1])
        return a(a, b), codegen
    return _named(typer, name)


def _shift(op: str, name: str):
    """An intrinsic shifting every lane of an i32x8 by one integer."""
    def typer(typingctx, v, n):
        if not (v == i32x8 and isinstance(n, types.Integer)):
            return None

        def codegen(context, builder, sig, args):
            count = context.cast(builder, args[1], sig.args[1], types.int32)
            return getattr(builder, op)(args[0], _broadcast(builder, count, _ir(i32x8)))
        return v(v, n), codegen
    return _named(typer, name)


_OPERATORS = [(operator.add, _binary("fadd", "add", "add")), (operator.sub, _binary("fsub", "sub", "sub")),
              (operator.mul, _binary("fmul", "mul", "mul")), (operator.and_, _binary(None, "and_", "and_")),
              (operator.or_, _binary(None, "or_", "or_"))]


def _register(op, fn, accepts):
    @overload(op)
    def _impl(a, b):
        if accepts(a, b):
            return lambda a, b: fn(a, b)


for _op, _fn in _OPERATORS:
    _register(_op, _fn, lambda a, b: isinstance(a, Lanes) and a == b)
for _op, _fn in ((operator.lshift, _shift("shl", "shift_left")), (operator.rshift, _shift("lshr", "shift_right"))):
    _register(_op, _fn, lambda a, b: a == i32x8 and isinstance(b, types.Integer))
