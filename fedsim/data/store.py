"""Generated data cached on disk once, then memory-mapped by every process that reads it.

A stored entry is a folder ``$FEDSIM_CACHE/data/KIND-DIGEST`` of ``.npy`` files (and a
JSON file of small values), where the digest hashes everything the content depends on.
It is written under a temporary name and renamed into place, so a reader never sees half
of one, and two processes that build the same entry at once both end with the same
folder. Images are read as read-only memory maps: a process touches only the rows it
reads, and processes on one machine share the pages of the same file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fedsim.cache import cache_dir

logger = logging.getLogger(__name__)

#: Bump when the content of stored entries changes for the same key.
STORE_VERSION = 1
META_FILE = "meta.json"


def entry_path(kind: str, key: dict[str, Any]) -> Path:
    """Where the entry of ``kind`` for ``key`` lives (whether or not it exists yet)."""
    text = json.dumps({"kind": kind, "version": STORE_VERSION, **key}, sort_keys=True)
    return cache_dir() / "data" / f"{kind}-{hashlib.sha256(text.encode()).hexdigest()[:20]}"


def stored(kind: str, key: dict[str, Any], build: Callable[[Path], None]) -> Path | None:
    """The folder of an entry, built by ``build(folder)`` the first time.

    Returns None when the cache folder cannot be written (the caller then builds in
    memory); the reason is logged once per call.
    """
    folder = entry_path(kind, key)
    if (folder / META_FILE).is_file():
        return folder
    tmp = folder.with_name(f".{folder.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        tmp.mkdir(parents=True, exist_ok=True)
        build(tmp)
        try:
            os.rename(tmp, folder)
        except OSError:  # another process stored it first
            if not (folder / META_FILE).is_file():
                raise
    except OSError as exc:
        logger.warning("cannot cache %s data in %s (%s); keeping it in memory", kind, folder.parent, exc)
        return None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def write_meta(folder: Path, meta: dict[str, Any]) -> None:
    """The entry's small values, written last: an entry with this file is complete."""
    (folder / META_FILE).write_text(json.dumps(meta, sort_keys=True))


def read_meta(folder: Path) -> dict[str, Any]:
    """The small values of an entry."""
    return dict(json.loads((folder / META_FILE).read_text()))


def write_rows(path: Path, shape: Sequence[int], dtype: np.dtype, chunks: Iterable[np.ndarray]) -> None:
    """An ``.npy`` file of ``shape`` written chunk by chunk along its first axis (no chunk is
    kept after it is written)."""
    descr = np.lib.format.dtype_to_descr(np.dtype(dtype))
    header = {"descr": descr, "fortran_order": False, "shape": tuple(shape)}
    done = 0
    with open(path, "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, header)
        for chunk in chunks:
            fh.write(np.ascontiguousarray(chunk, dtype=dtype).tobytes())
            done += len(chunk)
    if done != shape[0]:
        raise ValueError(f"{path.name}: wrote {done} rows; expected {shape[0]}")


class RowFile:
    """The rows of an ``.npy`` file, read on demand (``rows[index]``, as on an array).

    Reads go through the operating system's page cache with ``pread``: nothing is mapped,
    so a process holds only the rows it asked for, while every process on the machine
    shares the one cached copy of the file.
    """

    def __init__(self, path: Path) -> None:
        with open(path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            if version != (1, 0):
                raise ValueError(f"{path}: .npy version {version}; expected (1, 0)")
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
            self.offset = fh.tell()
        if fortran:
            raise ValueError(f"{path}: Fortran order; expected C order")
        self.path, self.shape, self.dtype = path, tuple(shape), np.dtype(dtype)
        self.row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: np.ndarray | slice) -> np.ndarray:
        """Rows ``index`` (an integer array or a slice with step 1), as a new array."""
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            if step != 1:
                raise ValueError("RowFile slices take step 1")
            starts, lengths = np.array([start]), np.array([max(0, stop - start)])
        else:
            idx = np.asarray(index, dtype=np.int64).reshape(-1)
            if len(idx) and (idx.min() < 0 or idx.max() >= len(self)):
                raise IndexError(f"row index out of range for {len(self)} rows")
            # runs of consecutive rows are read at once
            breaks = np.flatnonzero(np.diff(idx) != 1) + 1
            starts = idx[np.concatenate([[0], breaks])] if len(idx) else idx
            lengths = np.diff(np.concatenate([[0], breaks, [len(idx)]])) if len(idx) else idx
        out = np.empty((int(lengths.sum()), *self.shape[1:]), dtype=self.dtype)
        view = out.reshape(-1).view(np.uint8).data
        fd = os.open(self.path, os.O_RDONLY)
        try:
            at = 0
            for first, count in zip(starts.tolist(), lengths.tolist(), strict=True):
                size = count * self.row_bytes
                got = os.preadv(fd, [view[at : at + size]], self.offset + first * self.row_bytes)
                if got != size:
                    raise OSError(f"{self.path}: short read ({got} of {size} bytes)")
                at += size
        finally:
            os.close(fd)
        return out


def row_reader(path: Path) -> Callable[[int, int], np.ndarray]:
    """``(start, stop) -> rows`` of an ``.npy`` file, each call one read."""
    rows = RowFile(path)
    return lambda start, stop: rows[start:stop]
