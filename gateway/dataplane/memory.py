"""Give freed heap memory back to the operating system between bursts of traffic.

glibc keeps memory freed by Python (request bodies, usage batches) in its arenas; a
long-running worker's resident size then creeps up with the size of its largest bursts.
`malloc_trim(0)` returns the free pages at the top and inside each arena. It costs about
a millisecond, so it runs only when the usage writer goes idle, never per request.
Measured in docs/benchmarks.md (experiment 12).
"""

import ctypes
import ctypes.util
import logging

log = logging.getLogger("bonito.gateway.memory")

_trim = None
try:
    _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    _trim = _libc.malloc_trim
    _trim.argtypes = [ctypes.c_size_t]
    _trim.restype = ctypes.c_int
except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to trim
    _trim = None


def release_free_memory() -> bool:
    """Return free heap pages to the OS; False where the C library cannot."""
    if _trim is None:
        return False
    return bool(_trim(0))
