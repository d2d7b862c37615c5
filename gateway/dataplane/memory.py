"""Give freed heap memory back to the operating system between bursts of traffic.

glibc keeps memory freed by Python (request bodies, usage batches) in its arenas; a
long-running worker's resident size then creeps up with the size of its largest bursts.
`malloc_trim(0)` returns the free pages at the top and inside each arena. It costs about
a millisecond, so it runs only when the usage writer goes idle, never per request.
Measured in docs/benchmarks.md (experiment 12).
"""

import ctypes
import ctypes.util
import gc
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


def settle_long_lived() -> None:
    """Take what is alive now out of the cyclic garbage collector's sight (``gc.freeze``).

    A full snapshot is hundreds of thousands of objects that live until the next full
    snapshot (~240,000 at 100k keys). Left in the collector's oldest generation, every full
    collection walks them all: 60–80 ms holding the GIL, so the event loop stalls that long
    a few times a minute under traffic (docs/benchmarks.md). Frozen, a collection walks only
    what came later. The snapshot is acyclic, so when it is replaced reference counting
    still frees it; only a cycle among the frozen objects would outlive them, and the
    collection just before the freeze leaves none that is already garbage. Called after a
    full build and when the key table is compacted, off the request path.
    """
    gc.collect()
    gc.freeze()
