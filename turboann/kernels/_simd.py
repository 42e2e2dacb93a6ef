"""The few SIMD operations the fast-scan kernels need, as Numba intrinsics, and CPU detection.

Numba has no vector type. Here one is declared, `u8x32`, whose data model is
the LLVM vector <32 x i8> (one AVX2 register), with intrinsics that emit
LLVM IR directly: loads and stores from array pointers, a 16-byte broadcast
load, bitwise and, byte adds, 16-bit lane shifts and adds, and the byte shuffle
`llvm.x86.avx2.pshuf.b`, which compiles to `vpshufb`. Variables of this type
live in registers once LLVM has optimised the function.

On a CPU without AVX2, `pshufb` compiles to equivalent generic IR (slow, and
never run there: dispatch picks the portable kernel), so one compiled
function can hold both paths behind a runtime flag and Numba's on-disk cache
keeps working; a first-class function argument would defeat that cache.

Dispatch: `AVAILABLE` lists the kernels this CPU runs natively, best first:
"avx512" (64-byte `vpshufb` on zmm registers) with AVX-512BW, "avx2" with
AVX2, and always "portable". The environment variable TURBOANN_SIMD
("auto" | "avx512" | "avx2" | "portable") or an explicit argument forces
one. "avx512" may also be forced on an AVX2 CPU: there its 64-byte
vectors are lowered to pairs of ymm instructions, so the kernel's logic is
tested on every AVX2 machine, and only the instruction selection needs
AVX-512 hardware.
"""
from __future__ import annotations

import os

import llvmlite.binding as _llvm
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, models, register_model

KERNELS = ("avx512", "avx2", "portable")
ENV_VAR = "TURBOANN_SIMD"


def _host_features() -> set[str]:
    try:
        flat = _llvm.get_host_cpu_features().flatten()
    except RuntimeError:   # LLVM cannot tell on some hosts: assume nothing
        return set()
    return {f[1:] for f in flat.split(",") if f.startswith("+")}


CPU_FEATURES = frozenset(_host_features())
HAS_AVX2 = "avx2" in CPU_FEATURES
HAS_AVX512BW = "avx512bw" in CPU_FEATURES
AVAILABLE = (("avx512",) if HAS_AVX512BW else ()) + (("avx2",) if HAS_AVX2 else ()) + ("portable",)
# Kernels that run here, natively or (avx512 on AVX2) in ymm halves: what tests cover.
RUNNABLE = (("avx512", "avx2") if HAS_AVX2 else ()) + ("portable",)
LEVELS = {"portable": 0, "avx2": 1, "avx512": 2}


def kernel_choice(kernel: str | None = None) -> str:
    """The kernel to run: `kernel`, else $TURBOANN_SIMD, else the best this CPU has.

    Raises ValueError naming the source when the choice is unknown or this
    CPU cannot run it.
    """
    source = "kernel"
    if kernel is None:
        kernel, source = os.environ.get(ENV_VAR, "auto") or "auto", ENV_VAR
    if kernel == "auto":
        return AVAILABLE[0]
    if kernel not in KERNELS:
        raise ValueError(f"{source} must be one of 'auto', {', '.join(map(repr, KERNELS))}, got {kernel!r}")
    if kernel not in RUNNABLE:
        raise ValueError(f"{source} {kernel!r} needs a CPU with AVX2; this one runs only "
                         f"{', '.join(map(repr, RUNNABLE))}")
    return kernel


# -- the vector types -----------------------------------------------------------

class U8Vector(types.Type):
    """`width` unsigned bytes in one register (32: AVX2 ymm, 64: AVX-512 zmm)."""

    def __init__(self, width: int):
        self.width = width
        super().__init__(name=f"u8x{width}")


u8x32 = U8Vector(32)
u8x64 = U8Vector(64)
_H8 = ir.VectorType(ir.IntType(8), 16)
_I32 = ir.IntType(32)


def _v8(width: int) -> ir.VectorType:
    return ir.VectorType(ir.IntType(8), width)


def _v16(width: int) -> ir.VectorType:
    return ir.VectorType(ir.IntType(16), width // 2)


@register_model(U8Vector)
class _U8VectorModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, _v8(fe_type.width))


def _pointer(context, builder, arr_type, arr, offset, vtype):
    """Pointer to element `offset` of a C-contiguous array, cast to a vector pointer."""
    data = context.make_array(arr_type)(context, builder, arr).data
    return builder.bitcast(builder.gep(data, [offset]), vtype.as_pointer())


def _loader(vtype: U8Vector):
    def typer(typingctx, arr, offset):
        def codegen(context, builder, sig, args):
            return builder.load(_pointer(context, builder, sig.args[0], args[0], args[1], _v8(vtype.width)),
                                align=1)
        return vtype(arr, offset), codegen
    typer.__name__ = typer.__qualname__ = f"load{vtype.width}"
    typer.__doc__ = f"The {vtype.width} bytes of a uint8 array from element `offset` (no alignment needed)."
    return intrinsic(typer)


load = _loader(u8x32)
load64 = _loader(u8x64)


@intrinsic
def load_broadcast16(typingctx, arr, offset):
    """16 bytes of a uint8 array from `offset`, repeated in both 128-bit halves (vbroadcasti128)."""
    def codegen(context, builder, sig, args):
        half = builder.load(_pointer(context, builder, sig.args[0], args[0], args[1], _H8), align=1)
        mask = ir.Constant(ir.VectorType(_I32, 32), [i % 16 for i in range(32)])
        return builder.shuffle_vector(half, ir.Constant(_H8, ir.Undefined), mask)
    return u8x32(arr, offset), codegen


def _table_pair_loader(odd: int):
    """Intrinsic: the tables of sub-codes 4i + odd and 4i + 2 + odd, each in two 128-bit lanes."""
    def typer(typingctx, arr, offset):
        def codegen(context, builder, sig, args):
            four = builder.load(_pointer(context, builder, sig.args[0], args[0], args[1], _v8(64)), align=1)
            # 128-bit lanes [t, t, t + 2, t + 2] of the four 16-byte tables t = 0..3 (vshufi64x2)
            mask = [16 * (2 * (i // 32) + odd) + i % 16 for i in range(64)]
            return builder.shuffle_vector(four, ir.Constant(_v8(64), ir.Undefined),
                                          ir.Constant(ir.VectorType(_I32, 64), mask))
        return u8x64(arr, offset), codegen
    typer.__name__ = typer.__qualname__ = f"load_tables_{'odd' if odd else 'even'}"
    typer.__doc__ = ("The 64 bytes of four 16-byte tables T0..T3 from `offset`, arranged as "
                     + ("[T1, T1, T3, T3]" if odd else "[T0, T0, T2, T2]")
                     + ": the tables of two block rows' " + ("high" if odd else "low") + " nibbles.")
    return intrinsic(typer)


load_tables_even = _table_pair_loader(0)
load_tables_odd = _table_pair_loader(1)


@intrinsic
def store(typingctx, arr, offset, v):
    """Write the bytes of v (u8x32 or u8x64) to an array from element `offset` (any dtype: a raw byte copy)."""
    def codegen(context, builder, sig, args):
        builder.store(args[2], _pointer(context, builder, sig.args[0], args[0], args[1], _v8(sig.args[2].width)),
                      align=1)
        return context.get_dummy_value()
    return types.void(arr, offset, v), codegen


def _splatter(vtype: U8Vector):
    def typer(typingctx, value):
        def codegen(context, builder, sig, args):
            byte = builder.trunc(args[0], ir.IntType(8))
            undef = ir.Constant(_v8(vtype.width), ir.Undefined)
            one = builder.insert_element(undef, byte, ir.Constant(_I32, 0))
            return builder.shuffle_vector(one, undef, ir.Constant(ir.VectorType(_I32, vtype.width),
                                                                  [0] * vtype.width))
        return vtype(value), codegen
    typer.__name__ = typer.__qualname__ = "splat" if vtype.width == 32 else f"splat{vtype.width}"
    typer.__doc__ = f"All {vtype.width} bytes equal to `value` (an integer, truncated to 8 bits)."
    return intrinsic(typer)


splat = _splatter(u8x32)
splat64 = _splatter(u8x64)


def _lanewise(op: str, lanes16: bool, name: str, doc: str):
    """An intrinsic applying the LLVM binary instruction `op` to two vectors of one width, bytewise or on
    16-bit lanes."""
    def typer(typingctx, a, b):
        def codegen(context, builder, sig, args):
            x, y = args
            width = sig.args[0].width
            if lanes16:
                x, y = builder.bitcast(x, _v16(width)), builder.bitcast(y, _v16(width))
            out = getattr(builder, op)(x, y)
            return builder.bitcast(out, _v8(width)) if lanes16 else out
        return a(a, b), codegen
    typer.__name__ = typer.__qualname__ = name
    typer.__doc__ = doc
    return intrinsic(typer)


def _shift16(op: str, name: str, doc: str):
    """An intrinsic shifting each 16-bit lane of a vector by an integer (LLVM `op`: lshr or shl)."""
    def typer(typingctx, v, n):
        def codegen(context, builder, sig, args):
            width = sig.args[0].width
            count = builder.trunc(args[1], ir.IntType(16))
            undef = ir.Constant(_v16(width), ir.Undefined)
            one = builder.insert_element(undef, count, ir.Constant(_I32, 0))
            counts = builder.shuffle_vector(one, undef, ir.Constant(ir.VectorType(_I32, width // 2),
                                                                    [0] * (width // 2)))
            return builder.bitcast(getattr(builder, op)(builder.bitcast(args[0], _v16(width)), counts), _v8(width))
        return v(v, n), codegen
    typer.__name__ = typer.__qualname__ = name
    typer.__doc__ = doc
    return intrinsic(typer)


and_ = _lanewise("and_", False, "and_", "Bitwise and.")
add8 = _lanewise("add", False, "add8", "Sum of the bytes, modulo 2**8.")
add16 = _lanewise("add", True, "add16", "Sum of the 16-bit lanes, modulo 2**16.")
sub16 = _lanewise("sub", True, "sub16", "Difference of the 16-bit lanes, modulo 2**16.")
shift_right16 = _shift16("lshr", "shift_right16", "Each 16-bit lane (bytes 2i, 2i+1) shifted right by an integer.")
shift_left16 = _shift16("shl", "shift_left16", "Each 16-bit lane shifted left by an integer.")


@intrinsic
def fold_halves16(typingctx, v):
    """A u8x64's two 32-byte halves added as 16-bit lanes, into a u8x32."""
    def codegen(context, builder, sig, args):
        undef = ir.Constant(_v8(64), ir.Undefined)
        lo = builder.shuffle_vector(args[0], undef, ir.Constant(ir.VectorType(_I32, 32), list(range(32))))
        hi = builder.shuffle_vector(args[0], undef, ir.Constant(ir.VectorType(_I32, 32), list(range(32, 64))))
        out = builder.add(builder.bitcast(lo, _v16(32)), builder.bitcast(hi, _v16(32)))
        return builder.bitcast(out, _v8(32))
    return u8x32(v), codegen


@intrinsic
def pshufb(typingctx, table, index):
    """Byte i = table[index[i] & 15] within each 128-bit lane (0 where index bit 7 is set): vpshufb.

    u8x32: one AVX2 vpshufb. u8x64: one AVX-512BW vpshufb on a zmm register,
    or on an AVX2 CPU two ymm vpshufb on its halves (so the 64-byte kernel
    runs, and is tested, there too).
    """
    def codegen(context, builder, sig, args):
        width = sig.args[0].width
        if not HAS_AVX2:
            return _generic_pshufb(builder, args[0], args[1], width)
        if width == 64 and HAS_AVX512BW:
            fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_v8(64), [_v8(64), _v8(64)]),
                                                "llvm.x86.avx512.pshuf.b.512")
            return builder.call(fn, [args[0], args[1]])
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_v8(32), [_v8(32), _v8(32)]),
                                            "llvm.x86.avx2.pshuf.b")
        if width == 32:
            return builder.call(fn, [args[0], args[1]])
        undef = ir.Constant(_v8(64), ir.Undefined)
        halves = []
        for h in range(2):
            pick = ir.Constant(ir.VectorType(_I32, 32), list(range(32 * h, 32 * h + 32)))
            halves.append(builder.call(fn, [builder.shuffle_vector(args[0], undef, pick),
                                            builder.shuffle_vector(args[1], undef, pick)]))
        return builder.shuffle_vector(halves[0], halves[1], ir.Constant(ir.VectorType(_I32, 64), list(range(64))))
    return table(table, index), codegen


def _generic_pshufb(builder, table, index, width):
    """The semantics of vpshufb in target-independent IR, one byte at a time."""
    i8 = ir.IntType(8)
    out = ir.Constant(_v8(width), ir.Undefined)
    for i in range(width):
        idx = builder.extract_element(index, ir.Constant(_I32, i))
        pos = builder.add(builder.zext(builder.and_(idx, ir.Constant(i8, 15)), _I32), ir.Constant(_I32, i & ~15))
        val = builder.extract_element(table, pos)
        zero = builder.icmp_signed("<", idx, ir.Constant(i8, 0))
        out = builder.insert_element(out, builder.select(zero, ir.Constant(i8, 0), val), ir.Constant(_I32, i))
    return out


@intrinsic
def prefetch(typingctx, arr, offset):
    """Hint the cache line holding element `offset` of a C-contiguous array into cache (any CPU:
    llvm.prefetch, read, high locality); no effect on results."""
    def codegen(context, builder, sig, args):
        ptr = _pointer(context, builder, sig.args[0], args[0], args[1], ir.IntType(8))
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [ir.IntType(8).as_pointer(), _I32, _I32, _I32]),
            "llvm.prefetch.p0i8")
        builder.call(fn, [ptr, ir.Constant(_I32, 0), ir.Constant(_I32, 3), ir.Constant(_I32, 1)])
        return context.get_dummy_value()
    return types.void(arr, offset), codegen
