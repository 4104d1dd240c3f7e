"""The worker's and the tail server's measured requests run without full scans of the heap."""

from __future__ import annotations

import gc
import time

from fedsim.edge.quiet_gc import frozen_heap


def test_frozen_heap_moves_the_live_objects_out_of_collections_and_back() -> None:
    keep = [[i] for i in range(200_000)]  # a heap like the worker's (models, libraries)
    t0 = time.perf_counter()
    gc.collect()
    full = time.perf_counter() - t0
    with frozen_heap():
        assert gc.get_freeze_count() >= len(keep)
        t0 = time.perf_counter()
        gc.collect()
        frozen = time.perf_counter() - t0
    assert gc.get_freeze_count() == 0
    assert frozen < full / 5, (frozen, full)
    del keep
