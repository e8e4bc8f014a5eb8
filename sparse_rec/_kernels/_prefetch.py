"""A cache prefetch hint for CPU kernels (``llvm.prefetch``).

BPR steps read rows at random addresses, so a plain loop waits for main
memory several times per sample. Hinting the rows of samples a few steps
ahead lets those misses overlap with the work of the current one. A hint
never changes a result, and LLVM drops it on targets without prefetch.
"""

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic


@intrinsic
def prefetch(typingctx, arr, idx):
    """Hint that row ``idx`` of the C-contiguous array ``arr`` will be read soon.

    ``idx`` is not bounds-checked: it only forms an address, and prefetching
    an address outside the array cannot fault.
    """
    if not isinstance(arr, types.Array) or not isinstance(idx, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        aryty, idxty = sig.args
        ary = context.make_array(aryty)(context, builder, args[0])
        stride = cgutils.unpack_tuple(builder, ary.strides, aryty.ndim)[0]
        i = context.cast(builder, args[1], idxty, types.intp)
        base = builder.ptrtoint(ary.data, cgutils.intp_t)
        i8p = ir.IntType(8).as_pointer()
        ptr = builder.inttoptr(builder.add(base, builder.mul(i, stride)), i8p)
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
        # read, high temporal locality, data cache
        builder.call(fn, [ptr, i32(0), i32(3), i32(1)])
        return context.get_dummy_value()

    return types.void(arr, idx), codegen
