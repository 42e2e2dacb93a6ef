"""512-bit integer and float lanes for the dot-product engine (`kernels.dot`), as Numba intrinsics.

The engine decodes packed b-bit codes into bytes and takes their dot
products with int8 queries. The types here are LLVM vectors that fill one
AVX-512 register: `u8x64` (<64 x i8>, from `_simd`), `i32x16` (<16 x i32>)
and `f32x16` (<16 x float>). Each intrinsic emits the AVX-512 instruction
it names when this CPU has it (VBMI: vpermb, vpermi2b, vpmultishiftqb;
VNNI: vpdpbusd) and otherwise generic LLVM IR with the same result, which
LLVM lowers to what the CPU has (pairs of ymm instructions on AVX2). So one
compiled kernel is correct on every CPU, the instruction a CPU lacks is
never emitted (an intrinsic LLVM cannot select fails at compile time), and
the dispatch between a SIMD decode and the scalar one is a runtime flag
(`DECODE_SIMD`) that keeps Numba's on-disk cache valid.
"""
from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, models, register_model

from ._simd import CPU_FEATURES, _pointer, u8x64

HAS_VBMI = {"avx512vbmi", "avx512bw"} <= CPU_FEATURES
HAS_VNNI512 = {"avx512vnni", "avx512bw"} <= CPU_FEATURES
HAS_VNNI256 = "avxvnni" in CPU_FEATURES or {"avx512vnni", "avx512vl"} <= CPU_FEATURES

_I1, _I8, _I32 = ir.IntType(1), ir.IntType(8), ir.IntType(32)
_V8 = ir.VectorType(_I8, 64)
_V32 = ir.VectorType(_I32, 16)
_F32 = ir.VectorType(ir.FloatType(), 16)


class WideLanes(types.Type):
    """16 lanes of 32 bits: "i32" or "f32"."""

    def __init__(self, kind: str):
        self.kind = kind
        super().__init__(name=f"{kind}x16")


i32x16 = WideLanes("i32")
f32x16 = WideLanes("f32")


@register_model(WideLanes)
class _WideModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, _V32 if fe_type.kind == "i32" else _F32)


def _ir_of(t) -> ir.VectorType:
    return _V8 if t == u8x64 else (_V32 if t.kind == "i32" else _F32)


def _mask(builder, values, width):
    return ir.Constant(ir.VectorType(_I32, width), list(values))


def _call(builder, name, ret, args):
    fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ret, [a.type for a in args]), name)
    return builder.call(fn, args)


def _splat(builder, scalar, vtype: ir.VectorType):
    """Every lane of a vtype equal to scalar (insert and broadcast)."""
    undef = ir.Constant(vtype, ir.Undefined)
    return builder.shuffle_vector(builder.insert_element(undef, scalar, ir.Constant(_I32, 0)), undef,
                                  ir.Constant(ir.VectorType(_I32, vtype.count), [0] * vtype.count))


def _named(typer, name, doc):
    typer.__name__ = typer.__qualname__ = name
    typer.__doc__ = doc
    return intrinsic(typer)


# -- memory ---------------------------------------------------------------------------

@intrinsic
def load_bytes(typingctx, arr, offset, count):
    """Bytes offset..offset+count-1 (0 <= count <= 64) of a C-contiguous uint8 array as u8x64, zero
    above: a masked load, so it never reads past `count` bytes (vmovdqu8 {k}{z} with AVX-512BW; the
    mask is built in a general register, 2**count - 1, and moved to k with kmovq)."""
    def codegen(context, builder, sig, args):
        ptr = _pointer(context, builder, sig.args[0], args[0], args[1], _V8)
        i64 = ir.IntType(64)
        n = context.cast(builder, args[2], sig.args[2], types.int64)
        low = builder.sub(builder.shl(ir.Constant(i64, 1), n), ir.Constant(i64, 1))
        bits = builder.select(builder.icmp_signed(">=", n, ir.Constant(i64, 64)), ir.Constant(i64, -1), low)
        keep = builder.bitcast(bits, ir.VectorType(_I1, 64))
        return _call(builder, "llvm.masked.load.v64i8.p0v64i8", _V8,
                     [ptr, ir.Constant(_I32, 1), keep, ir.Constant(_V8, None)])
    return u8x64(arr, offset, count), codegen


@intrinsic
def load_i8(typingctx, arr, offset):
    """64 bytes of a C-contiguous int8 or uint8 array from element `offset`, as u8x64."""
    def codegen(context, builder, sig, args):
        return builder.load(_pointer(context, builder, sig.args[0], args[0], args[1], _V8), align=1)
    return u8x64(arr, offset), codegen


@intrinsic
def store_wide(typingctx, arr, offset, v):
    """Write v (u8x64, i32x16 or f32x16) to an array from element `offset` (a raw 64-byte copy)."""
    def codegen(context, builder, sig, args):
        builder.store(args[2], _pointer(context, builder, sig.args[0], args[0], args[1], _ir_of(sig.args[2])),
                      align=1)
        return context.get_dummy_value()
    return types.void(arr, offset, v), codegen


@intrinsic
def broadcast_dword(typingctx, arr, offset):
    """The 4 bytes of a uint8 array at `offset` repeated 16 times, as i32x16 (vpbroadcastd)."""
    def codegen(context, builder, sig, args):
        word = builder.load(_pointer(context, builder, sig.args[0], args[0], args[1], _I32), align=1)
        return _splat(builder, word, _V32)
    return i32x16(arr, offset), codegen


@intrinsic
def load_f32(typingctx, arr, offset):
    """16 float32 of a C-contiguous float32 array from element `offset`, as f32x16."""
    def codegen(context, builder, sig, args):
        return builder.load(_pointer(context, builder, sig.args[0], args[0], args[1], _F32), align=4)
    return f32x16(arr, offset), codegen


# -- byte decoding (VBMI) -------------------------------------------------------------

@intrinsic
def splat8(typingctx, value):
    """All 64 bytes equal to `value` (truncated to 8 bits)."""
    def codegen(context, builder, sig, args):
        return _splat(builder, builder.trunc(args[0], _I8), _V8)
    return u8x64(value), codegen


@intrinsic
def and8(typingctx, a, b):
    """Bitwise and of two u8x64."""
    def codegen(context, builder, sig, args):
        return builder.and_(args[0], args[1])
    return u8x64(a, b), codegen


@intrinsic
def xor8(typingctx, a, b):
    """Bitwise exclusive or of two u8x64."""
    def codegen(context, builder, sig, args):
        return builder.xor(args[0], args[1])
    return u8x64(a, b), codegen


def _generic_permute(builder, table, index, bits):
    """byte i = table[index[i] mod 2**bits] (table: 2**bits bytes, one or two vectors), in plain IR."""
    out = ir.Constant(_V8, ir.Undefined)
    for i in range(64):
        at = builder.and_(builder.extract_element(index, ir.Constant(_I32, i)), ir.Constant(_I8, (1 << bits) - 1))
        if bits == 6:
            val = builder.extract_element(table[0], builder.zext(at, _I32))
        else:   # 7 bits: the low half from the first vector, the high from the second
            lo = builder.extract_element(table[0], builder.zext(builder.and_(at, ir.Constant(_I8, 63)), _I32))
            hi = builder.extract_element(table[1], builder.zext(builder.and_(at, ir.Constant(_I8, 63)), _I32))
            val = builder.select(builder.icmp_unsigned(">=", at, ir.Constant(_I8, 64)), hi, lo)
        out = builder.insert_element(out, val, ir.Constant(_I32, i))
    return out


@intrinsic
def permute64(typingctx, table, index):
    """byte i = table[index[i] & 63]: one 64-entry table lookup of 64 bytes (vpermb)."""
    def codegen(context, builder, sig, args):
        if HAS_VBMI:
            return _call(builder, "llvm.x86.avx512.permvar.qi.512", _V8, [args[0], args[1]])
        return _generic_permute(builder, [args[0]], args[1], 6)
    return u8x64(table, index), codegen


@intrinsic
def permute128(typingctx, low, index, high):
    """byte i = (low ++ high)[index[i] & 127]: a 128-entry table lookup of 64 bytes (vpermi2b)."""
    def codegen(context, builder, sig, args):
        if HAS_VBMI:
            return _call(builder, "llvm.x86.avx512.vpermi2var.qi.512", _V8, [args[0], args[1], args[2]])
        return _generic_permute(builder, [args[0], args[2]], args[1], 7)
    return u8x64(low, index, high), codegen


@intrinsic
def select_high(typingctx, index, low, high):
    """byte i = high[i] where index[i] >= 128, else low[i] (vpmovb2m + vpblendmb)."""
    def codegen(context, builder, sig, args):
        top = builder.icmp_signed("<", args[0], ir.Constant(_V8, None))
        return builder.select(top, args[2], args[1])
    return u8x64(index, low, high), codegen


@intrinsic
def multishift(typingctx, shifts, data):
    """byte j of qword w = the 8 bits of data's qword w from bit shifts[8w + j] (mod 64): vpmultishiftqb."""
    def codegen(context, builder, sig, args):
        if HAS_VBMI:
            return _call(builder, "llvm.x86.avx512.pmultishift.qb.512", _V8, [args[0], args[1]])
        i64 = ir.IntType(64)
        words = builder.bitcast(args[1], ir.VectorType(i64, 8))
        out = ir.Constant(_V8, ir.Undefined)
        for i in range(64):
            w = builder.extract_element(words, ir.Constant(_I32, i // 8))
            s = builder.and_(builder.zext(builder.extract_element(args[0], ir.Constant(_I32, i)), i64),
                             ir.Constant(i64, 63))
            rot = builder.or_(builder.lshr(w, s), builder.shl(w, builder.sub(ir.Constant(i64, 64), s)))
            rot = builder.select(builder.icmp_unsigned("==", s, ir.Constant(i64, 0)), w, rot)
            out = builder.insert_element(out, builder.trunc(rot, _I8), ir.Constant(_I32, i))
        return out
    return u8x64(shifts, data), codegen


# -- integer dot products (VNNI) ---------------------------------------------------------

@intrinsic
def zero_i32(typingctx):
    """i32x16 of zeros."""
    def codegen(context, builder, sig, args):
        return ir.Constant(_V32, None)
    return i32x16(), codegen


def _generic_dot(builder, acc, a, b):
    ua = builder.zext(builder.bitcast(a, _V8), ir.VectorType(_I32, 64))
    sb = builder.sext(builder.bitcast(b, _V8), ir.VectorType(_I32, 64))
    prod = builder.mul(ua, sb)
    for t in range(4):
        acc = builder.add(acc, builder.shuffle_vector(prod, prod, _mask(builder, range(t, 64, 4), 16)))
    return acc


def _dot_intrinsic(kind: str):
    """acc[l] + sum_t unsigned[4l + t] * signed[4l + t] (t < 4) with the instruction of `kind`."""
    def typer(typingctx, acc, unsigned, signed):
        def codegen(context, builder, sig, args):
            a = builder.bitcast(args[1], _V32)
            b = builder.bitcast(args[2], _V32)
            if kind == "vnni512" and HAS_VNNI512:
                return _call(builder, "llvm.x86.avx512.vpdpbusd.512", _V32, [args[0], a, b])
            if kind == "vnni256" and HAS_VNNI256:
                v8 = ir.VectorType(_I32, 8)
                halves = []
                for h in range(2):
                    pick = _mask(builder, range(8 * h, 8 * h + 8), 8)
                    halves.append(_call(builder, "llvm.x86.avx512.vpdpbusd.256", v8,
                                        [builder.shuffle_vector(x, x, pick) for x in (args[0], a, b)]))
                return builder.shuffle_vector(halves[0], halves[1], _mask(builder, range(16), 16))
            return _generic_dot(builder, args[0], a, b)
        return i32x16(acc, unsigned, signed), codegen
    doc = (f"acc[l] + sum_t unsigned[4l + t] * signed[4l + t], t < 4: u8 x s8 products summed exactly in "
           f"int32 (no saturation, unlike vpmaddubsw); unsigned an i32x16 of four u8 a lane (e.g. "
           f"`broadcast_dword`), signed a u8x64 of int8 values. " +
           {"vnni512": "One vpdpbusd zmm with AVX512-VNNI.", "vnni256": "Two vpdpbusd ymm with AVX-VNNI.",
            "generic": "Plain IR, whatever the CPU."}[kind] + " Generic IR where the CPU lacks it.")
    return _named(typer, f"dot_{kind}", doc)


dot_vnni512 = _dot_intrinsic("vnni512")
dot_vnni256 = _dot_intrinsic("vnni256")
dot_generic = _dot_intrinsic("generic")


# -- float lanes ------------------------------------------------------------------------

@intrinsic
def to_float(typingctx, v):
    """i32x16 -> f32x16 (vcvtdq2ps; exact below 2**24)."""
    def codegen(context, builder, sig, args):
        return builder.sitofp(args[0], _F32)
    return f32x16(v), codegen


@intrinsic
def splat_f32(typingctx, value):
    """f32x16 with every lane `value`."""
    def codegen(context, builder, sig, args):
        return _splat(builder, context.cast(builder, args[0], sig.args[0], types.float32), _F32)
    return f32x16(value), codegen


def _float_binary(op, name):
    def typer(typingctx, a, b):
        def codegen(context, builder, sig, args):
            return getattr(builder, op)(args[0], args[1])
        return f32x16(a, b), codegen
    return _named(typer, name, f"Lanewise {op} of two f32x16.")


fadd = _float_binary("fadd", "fadd")
fmul = _float_binary("fmul", "fmul")


@intrinsic
def ge_mask(typingctx, a, b):
    """Bit l set where a[l] >= b[l] (f32x16, ordered: NaN never passes), as an int64 (vcmpps + kmovw)."""
    def codegen(context, builder, sig, args):
        bits = builder.bitcast(builder.fcmp_ordered(">=", args[0], args[1]), ir.IntType(16))
        return builder.zext(bits, ir.IntType(64))
    return types.int64(a, b), codegen


@intrinsic
def add_i32(typingctx, a, b):
    """Lanewise sum of two i32x16 (modulo 2**32)."""
    def codegen(context, builder, sig, args):
        return builder.add(args[0], args[1])
    return i32x16(a, b), codegen


@intrinsic
def as_i32(typingctx, v):
    """The 64 bytes of a u8x64 as i32x16 (no instruction)."""
    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], _V32)
    return i32x16(v), codegen


@intrinsic
def reduce_add(typingctx, v):
    """The sum of the 16 lanes of an i32x16, as int64 (modulo 2**32, sign-extended)."""
    def codegen(context, builder, sig, args):
        total = _call(builder, "llvm.vector.reduce.add.v16i32", _I32, [args[0]])
        return builder.sext(total, ir.IntType(64))
    return types.int64(v), codegen


@intrinsic
def fma(typingctx, a, b, c):
    """a * b + c on f32x16, rounded once (vfmadd; two ymm FMAs on AVX2)."""
    def codegen(context, builder, sig, args):
        return _call(builder, "llvm.fma.v16f32", _F32, list(args))
    return f32x16(a, b, c), codegen


@intrinsic
def fabs(typingctx, v):
    """|v| lanewise on f32x16 (clears the sign bits)."""
    def codegen(context, builder, sig, args):
        return _call(builder, "llvm.fabs.v16f32", _F32, [args[0]])
    return f32x16(v), codegen


@intrinsic
def split_sums(typingctx, full, odd):
    """The 16-bit sums of a fast-scan block as float lanes: (even lanes, odd lanes), two f32x16.

    full, odd: u8x32 of 16 lanes of 16 bits (see `kernels.fastscan`): lane i of
    full holds sum(byte 2i) + 256 * sum(byte 2i + 1) mod 2**16, odd holds
    sum(byte 2i + 1); so the even byte's sum is full - (odd << 8) mod 2**16.
    Exact while each sum is below 2**16.
    """
    def codegen(context, builder, sig, args):
        v16 = ir.VectorType(ir.IntType(16), 16)
        f = builder.bitcast(args[0], v16)
        o = builder.bitcast(args[1], v16)
        even = builder.sub(f, builder.shl(o, ir.Constant(v16, [8] * 16)))
        lanes = [builder.uitofp(even, _F32), builder.uitofp(o, _F32)]
        return context.make_tuple(builder, sig.return_type, lanes)
    return types.UniTuple(f32x16, 2)(full, odd), codegen
