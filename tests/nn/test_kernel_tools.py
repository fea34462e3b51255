"""kernel_tools.compiled_for: the cheap check of whether a kernel is compiled for a call's argument types. Its key
must tell apart whatever Numba's types tell apart (else a call could skip vectorised_call's compilation), and for
arrays, the kernels' arguments, give equal keys to equal types (else a compiled kernel is looked up again)."""
import numba
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from nn import kernel_tools

ARRAYS = st.tuples(st.sampled_from([np.float32, np.float64, np.int64, np.bool_]), st.integers(0, 3),
                   st.sampled_from(["C", "F", "strided", "transposed"]), st.booleans(), st.integers(1, 4))
SCALARS = st.sampled_from([1, 2.0, True, np.float32(1), np.int64(3), None])


def _array(dtype, ndim, layout, writeable, side):
    x = np.ones((side,) * ndim, dtype=dtype, order="F" if layout == "F" else "C")
    if layout == "strided" and ndim:
        x = x[..., ::2]
    if layout == "transposed":
        x = x.T
    x.flags.writeable = writeable
    return x


ARGUMENTS = st.lists(st.one_of(ARRAYS.map(lambda spec: _array(*spec)), SCALARS,
                               st.tuples(SCALARS, SCALARS)), min_size=1, max_size=3)


def _numba_types(args):
    return tuple(numba.typeof(arg) for arg in args)


@settings(max_examples=200, deadline=None)
@given(ARGUMENTS, ARGUMENTS)
def test_equal_keys_mean_equal_numba_types(first, second):
    if kernel_tools.argument_key(first) == kernel_tools.argument_key(second):
        assert _numba_types(first) == _numba_types(second)


@settings(max_examples=200, deadline=None)
@given(st.lists(ARRAYS, min_size=1, max_size=3), st.lists(ARRAYS, min_size=1, max_size=3))
def test_arrays_of_equal_numba_types_have_equal_keys(first, second):
    first, second = [_array(*spec) for spec in first], [_array(*spec) for spec in second]
    same_key = kernel_tools.argument_key(first) == kernel_tools.argument_key(second)
    assert same_key == (_numba_types(first) == _numba_types(second))


def test_compiled_for_follows_the_kernels_overloads():
    @numba.njit
    def twice(x, n):
        return 2 * x[0] + n

    x32, x64 = np.arange(3, dtype=np.float32), np.arange(3, dtype=np.float64)
    assert not kernel_tools.compiled_for(twice, (x32, 1))
    assert kernel_tools.vectorised_call(twice, x32, 1) == 1.0
    assert kernel_tools.compiled_for(twice, (x32 + 1, 5))  # found in the overloads, then remembered
    assert kernel_tools.compiled_for(twice, (x32 + 1, 5))
    assert not kernel_tools.compiled_for(twice, (x64, 1)) and not kernel_tools.compiled_for(twice, (x32, 1.0))
    assert kernel_tools.vectorised_call(twice, x64 + 1, 1.5) == 3.5
    assert kernel_tools.compiled_for(twice, (x64, 2.5))


def test_an_array_contiguous_both_ways_has_the_key_of_a_c_array():
    key = kernel_tools.argument_key
    assert key((np.ones((1, 1), np.float32),)) == key((np.ones((2, 2), np.float32),))  # Numba: both 'C'
    assert key((np.ones((2, 2), np.float32).T[:, ::-1],)) != key((np.ones((2, 2), np.float32),))  # 'A'
