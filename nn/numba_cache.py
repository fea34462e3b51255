"""Numba's on-disk kernel cache (cache=True), made safe for several processes and for kill -9.

Numba keeps, per jitted function, an index file (signature -> data file) and numbered data files. Its
IndexDataCacheFile.save gives a new signature the first free number *in the index it just read*, and
writes the index before the data file. So:
  - two processes compiling different signatures of one kernel at once (two runs started together, or
    the test suite beside its train.py subprocesses) both take number 1: the index says "float64 ->
    file 1" while file 1 holds the float32 code;
  - a process killed between the two writes leaves the index naming a file that holds other code.
A later process then runs the wrong machine code for that signature: at best the crash
"In 'NRT_adapt_ndarray_to_python', 'descr' is NULL", at worst wrong numbers. (Numba's own tracker has
relatives of this race open, e.g. numba/numba#10128.)

`install()` replaces that save: a signature's data file is named after a hash of its key, so two
signatures never share a file, and it is written (atomically, as before) before the index that names it.
A race can still drop one process's index entry; that costs a recompilation, never a wrong kernel.
If Numba's cache class does not have the expected shape (another Numba version), nothing is changed.
"""
import hashlib

try:
    from numba.core.caching import IndexDataCacheFile
except ImportError:  # pragma: no cover - a Numba without this class: its own save is used
    IndexDataCacheFile = None

_NEEDED = ("save", "_load_index", "_save_index", "_save_data", "_data_name", "_dump")


def data_number(cache_file, key):
    """A number for `key`'s data file: the same in every process, different for different keys
    (up to a 64-bit hash collision)."""
    return int.from_bytes(hashlib.sha256(cache_file._dump(key)).digest()[:8], "big")


def save(self, key, data):
    """IndexDataCacheFile.save, in the safe order: data under a name of its own, then the index."""
    data_name = self._data_name(data_number(self, key))
    self._save_data(data_name, data)
    overloads = self._load_index()  # read as late as possible: keeps what others saved meanwhile
    if overloads.get(key) != data_name:
        overloads[key] = data_name
        self._save_index(overloads)


def install():
    """Use `save` for every cache Numba writes from now on (idempotent)."""
    if IndexDataCacheFile is None or not all(hasattr(IndexDataCacheFile, name) for name in _NEEDED):
        return False
    IndexDataCacheFile.save = save
    return True


installed = install()


def variant(**constants):
    """Decorator, under @njit(cache=True), for a kernel that a factory makes per value of the constants it
    closes over (`constants`): gives each variant a qualified name of its own, e.g. `paired_sums__c8`.

    Numba names a compiled function after its module and qualified name, and tells closures of one
    definition apart only by a per-process counter. Two variants first compiled by two processes (a test
    run, then a training) can therefore carry the same linkage name, and a process that loads both from the
    cache links one to the other's code or environment: the "'descr' is NULL" crash, or wrong numbers.
    With the constants in the name, every variant's name is the same in every process and unique."""
    suffix = "_".join(f"{name}{int(value) if isinstance(value, bool) else value}" for name, value in constants.items())

    def rename(function):
        function.__name__ = f"{function.__name__}__{suffix}"
        function.__qualname__ = f"{function.__qualname__}__{suffix}"
        return function

    return rename
