"""kernel_tools.compiled_for: the cheap check of whether a kernel is compiled for a call's argument types agrees
with Numba's own (typeof_pyval against the overloads), for arrays of every dtype, rank, layout and flag."""
import numba
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from nn import kernel_tools


@numba.njit
def _first(x, n):
    return x.ravel()[0] + n if x.size else n


ARRAYS = st.tuples(st.sampled_from([np.float32, np.float64]), st.integers(1, 2),
                   st.sampled_from(["C", "F", "strided"]), st.booleans())


def _array(dtype, ndim, layout, writeable):
    x = np.ones((3,) * ndim, dtype=dtype, order="F" if layout == "F" else "C")
    if layout == "strided":
        x = x[..., ::2]
    x.flags.writeable = writeable
    return x


def _numba_says(kernel, args):
    return tuple(kernel.typeof_pyval(a) for a in args) in kernel.overloads


@settings(max_examples=25, deadline=None)
@given(st.lists(ARRAYS, min_size=1, max_size=3), ARRAYS, st.sampled_from([1, 2.0]))
def test_compiled_for_agrees_with_numbas_types(compiled, asked, n):
    for spec in compiled:
        _first(_array(*spec), 1)
    args = (_array(*asked), n)
    # Asked twice: the second answer may come from the remembered keys.
    assert kernel_tools.compiled_for(_first, args) == _numba_says(_first, args)
    assert kernel_tools.compiled_for(_first, args) == _numba_says(_first, args)


def test_equal_types_give_equal_keys_and_others_differ():
    key = kernel_tools.argument_key
    assert key((np.zeros((2, 3), np.float32), 1, (2, 3))) == key((np.ones((5, 7), np.float32), 4, (1, 1)))
    assert key((np.zeros((2, 3), np.float32),)) != key((np.zeros((2, 3), np.float64),))
    assert key((np.zeros((2, 3), np.float32),)) != key((np.zeros((2, 3), np.float32, order="F"),))
    assert key((np.zeros((2, 3), np.float32),)) != key((np.zeros((2, 3, 1), np.float32),))
    assert key((1,)) != key((1.0,)) and key(((1, 2),)) != key(((1, 2.0),))


def test_vectorised_call_compiles_a_new_signature_and_then_calls_it():
    @numba.njit
    def twice(x):
        return 2 * x[0]

    x = np.arange(3, dtype=np.float32)
    assert not kernel_tools.compiled_for(twice, (x,))
    assert kernel_tools.vectorised_call(twice, x) == 0.0
    assert kernel_tools.compiled_for(twice, (x,))
    assert kernel_tools.vectorised_call(twice, x + 1) == 2.0
