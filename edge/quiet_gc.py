"""Keeping Python's garbage collector out of measured requests.

A full collection scans every object alive: with torch, onnxruntime and gRPC loaded that is
about 190,000 objects and 95 ms on this host, and it comes every few dozen requests (after
enough allocations), at the same request in every run of a configuration. Measured, that
pause lands in whichever stage was allocating, as latency the device would not have.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def frozen_heap() -> Iterator[None]:
    """For the block, what is alive now (models, libraries) sits in the collector's permanent
    generation, which collections do not scan (about 95 ms to under a millisecond); it is
    handed back to the collector afterwards."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
