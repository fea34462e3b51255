"""What the Numba kernels of nn/ share: a zeroed stack array the kernel keeps in registers, and a call that
compiles a kernel with LLVM's SLP vectoriser on (conv_kernels.py says why both)."""
import contextlib
import functools

import numba
import numpy as np
from numba import njit, types
from numba.core import cgutils
from numba.core.compiler_lock import global_compiler_lock
from numba.extending import intrinsic
from numba.np.arrayobj import make_array, populate_array


@njit(cache=True, nogil=True)
def reflect_index(index, length):
    """Mirror a pixel index into [0, length) without repeating the edge (period 2 (length - 1)), as numpy's
    np.pad mode="reflect": the one rule for patches past an image's edge and reflect-padded convolutions."""
    if length == 1:
        return 0
    period = 2 * (length - 1)
    index = index % period  # Python's modulo: non-negative for negative indices too
    return index if index < length else period - index


@intrinsic
def _stack_zeros(typingctx, rows, cols, dtype):
    """A zeroed (rows, cols) array on the stack of the calling kernel; rows and cols are literal ints."""
    if not (isinstance(rows, types.IntegerLiteral) and isinstance(cols, types.IntegerLiteral)):
        return None
    shape = (rows.literal_value, cols.literal_value)
    array_type = types.Array(dtype.dtype, 2, "C")

    def codegen(context, builder, signature, args):
        element = context.get_data_type(dtype.dtype)
        itemsize = context.get_abi_sizeof(element)
        # alloca_once places the allocation in the function's entry block, so a call inside a loop
        # reuses one buffer instead of growing the stack; the memset re-zeroes it on every call.
        data = cgutils.alloca_once(builder, element, size=shape[0] * shape[1])
        cgutils.memset(builder, data, context.get_constant(types.intp, shape[0] * shape[1] * itemsize), 0)
        array = make_array(array_type)(context, builder)
        intp = functools.partial(context.get_constant, types.intp)
        populate_array(array, data=data, shape=[intp(shape[0]), intp(shape[1])],
                       strides=[intp(shape[1] * itemsize), intp(itemsize)], itemsize=intp(itemsize), meminfo=None)
        return array._getvalue()

    return array_type(rows, cols, dtype), codegen


@contextlib.contextmanager
def _slp_vectorize():
    """Compile with LLVM's SLP vectoriser on (read by Numba when it builds each module's passes)."""
    previous = numba.config.SLP_VECTORIZE
    numba.config.SLP_VECTORIZE = 1
    try:
        yield
    finally:
        numba.config.SLP_VECTORIZE = previous


# (kernel, argument_key(args)) of every call found compiled: Numba's typeof_pyval takes about 40 us an argument
# in Python, 3 ms of a 20 ms prediction that asked it of every kernel call (docs/performance.md, "Inference").
_compiled = set()


def _key(arg):
    if isinstance(arg, np.ndarray):
        flags = arg.flags
        layout = "C" if flags.c_contiguous else "F" if flags.f_contiguous else "A"  # as Numba's typeof
        return arg.dtype.str, arg.ndim, layout, flags.writeable, flags.aligned
    if isinstance(arg, tuple):
        return tuple(_key(a) for a in arg)
    return type(arg)


def argument_key(args):
    """A cheap stand-in for the Numba types of `args`: equal keys mean equal types, and arrays of equal types get
    equal keys (arrays by dtype, rank, layout and flags; tuples element by element; anything else by its Python
    type, so an int and a NumPy int64, one Numba type, get two keys: one lookup more, never a wrong answer)."""
    return tuple(_key(arg) for arg in args)


def compiled_for(kernel, args):
    """Whether the dispatcher `kernel` holds a compiled overload for `args`. A key once found compiled is
    remembered (a kernel is never uncompiled); a wrong answer could only cost speed (a call compiled without
    vectorised_call's switch), never a result."""
    key = (kernel, argument_key(args))
    if key in _compiled:
        return True
    if tuple(kernel.typeof_pyval(arg) for arg in args) in kernel.overloads:
        _compiled.add(key)
        return True
    return False


def vectorised_call(kernel, *args):
    """kernel(*args), compiled with the SLP vectoriser on if this call compiles it. The switch is
    process-wide, so it is thrown only for a call with argument types the kernel has not been compiled
    for, and under Numba's compiler lock: no other thread (the data loader's kernels) compiles while it
    is on, and an ordinary call leaves it alone."""
    if compiled_for(kernel, args):
        return kernel(*args)
    with global_compiler_lock, _slp_vectorize():
        return kernel(*args)
