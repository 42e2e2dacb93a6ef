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

Dispatch: `AVAILABLE` lists the kernels this CPU runs ("avx2" when it has
AVX2, always "portable"); the environment variable TURBOANN_SIMD
("auto" | "avx2" | "portable") or an explicit argument forces one.
AVX-512BW (`vpshufb` on 64 bytes) is detected and reported but has no kernel
of its own yet: such CPUs run the AVX2 kernel.
"""
from __future__ import annotations

import os

import llvmlite.binding as _llvm
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, models, register_model

KERNELS = ("avx2", "portable")
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
AVAILABLE = (("avx2",) if HAS_AVX2 else ()) + ("portable",)


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
    if kernel not in AVAILABLE:
        raise ValueError(f"{source} {kernel!r} needs a CPU with AVX2; this one runs only "
                         f"{', '.join(map(repr, AVAILABLE))}")
    return kernel


# -- the vector type ------------------------------------------------------------

class U8x32(types.Type):
    """32 unsigned bytes in one 256-bit register."""

    def __init__(self):
        super().__init__(name="u8x32")


u8x32 = U8x32()
_V8 = ir.VectorType(ir.IntType(8), 32)
_V16 = ir.VectorType(ir.IntType(16), 16)
_H8 = ir.VectorType(ir.IntType(8), 16)


@register_model(U8x32)
class _U8x32Model(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, _V8)


def _pointer(context, builder, arr_type, arr, offset, vtype):
    """Pointer to element `offset` of a C-contiguous array, cast to a vector pointer."""
    data = context.make_array(arr_type)(context, builder, arr).data
    return builder.bitcast(builder.gep(data, [offset]), vtype.as_pointer())


@intrinsic
def load(typingctx, arr, offset):
    """The 32 bytes of a uint8 array from element `offset` (no alignment needed)."""
    def codegen(context, builder, sig, args):
        return builder.load(_pointer(context, builder, sig.args[0], args[0], args[1], _V8), align=1)
    return u8x32(arr, offset), codegen


@intrinsic
def load_broadcast16(typingctx, arr, offset):
    """16 bytes of a uint8 array from `offset`, repeated in both 128-bit halves (vbroadcasti128)."""
    def codegen(context, builder, sig, args):
        half = builder.load(_pointer(context, builder, sig.args[0], args[0], args[1], _H8), align=1)
        mask = ir.Constant(ir.VectorType(ir.IntType(32), 32), [i % 16 for i in range(32)])
        return builder.shuffle_vector(half, ir.Constant(_H8, ir.Undefined), mask)
    return u8x32(arr, offset), codegen


@intrinsic
def store(typingctx, arr, offset, v):
    """Write the 32 bytes of v to an array from element `offset` (any dtype: a raw byte copy)."""
    def codegen(context, builder, sig, args):
        builder.store(args[2], _pointer(context, builder, sig.args[0], args[0], args[1], _V8), align=1)
        return context.get_dummy_value()
    return types.void(arr, offset, v), codegen


@intrinsic
def splat(typingctx, value):
    """Every byte equal to `value` (an integer, truncated to 8 bits)."""
    def codegen(context, builder, sig, args):
        byte = builder.trunc(args[0], ir.IntType(8))
        undef = ir.Constant(_V8, ir.Undefined)
        one = builder.insert_element(undef, byte, ir.Constant(ir.IntType(32), 0))
        return builder.shuffle_vector(one, undef, ir.Constant(ir.VectorType(ir.IntType(32), 32), [0] * 32))
    return u8x32(value), codegen


def _lanewise(op: str, lanes16: bool, name: str, doc: str):
    """An intrinsic applying the LLVM binary instruction `op` to two u8x32, bytewise or on 16-bit lanes."""
    def typer(typingctx, a, b):
        def codegen(context, builder, sig, args):
            x, y = args
            if lanes16:
                x, y = builder.bitcast(x, _V16), builder.bitcast(y, _V16)
            out = getattr(builder, op)(x, y)
            return builder.bitcast(out, _V8) if lanes16 else out
        return u8x32(a, b), codegen
    typer.__name__ = typer.__qualname__ = name
    typer.__doc__ = doc
    return intrinsic(typer)


def _shift16(op: str, name: str, doc: str):
    """An intrinsic shifting each 16-bit lane of a u8x32 by an integer (LLVM `op`: lshr or shl)."""
    def typer(typingctx, v, n):
        def codegen(context, builder, sig, args):
            count = builder.trunc(args[1], ir.IntType(16))
            undef = ir.Constant(_V16, ir.Undefined)
            one = builder.insert_element(undef, count, ir.Constant(ir.IntType(32), 0))
            counts = builder.shuffle_vector(one, undef, ir.Constant(ir.VectorType(ir.IntType(32), 16), [0] * 16))
            return builder.bitcast(getattr(builder, op)(builder.bitcast(args[0], _V16), counts), _V8)
        return u8x32(v, n), codegen
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
def pshufb(typingctx, table, index):
    """Byte i = table[index[i] & 15] within each 128-bit half (0 where index bit 7 is set): vpshufb."""
    def codegen(context, builder, sig, args):
        if not HAS_AVX2:
            return _generic_pshufb(builder, args[0], args[1])
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_V8, [_V8, _V8]),
                                            "llvm.x86.avx2.pshuf.b")
        return builder.call(fn, [args[0], args[1]])
    return u8x32(table, index), codegen


def _generic_pshufb(builder, table, index):
    """The semantics of vpshufb in target-independent IR, one byte at a time."""
    i8, i32 = ir.IntType(8), ir.IntType(32)
    out = ir.Constant(_V8, ir.Undefined)
    for i in range(32):
        idx = builder.extract_element(index, ir.Constant(i32, i))
        pos = builder.add(builder.zext(builder.and_(idx, ir.Constant(i8, 15)), i32), ir.Constant(i32, i & 16))
        val = builder.extract_element(table, pos)
        zero = builder.icmp_signed("<", idx, ir.Constant(i8, 0))
        out = builder.insert_element(out, builder.select(zero, ir.Constant(i8, 0), val), ir.Constant(i32, i))
    return out
