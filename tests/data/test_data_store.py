"""The on-disk data store: generated data cached once, read row by row, split cached too."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

import fedsim.data.base as base
import fedsim.data.federated as federated
import fedsim.data.shapes as shapes
from fedsim.data import (
    DATASETS,
    Images,
    build_federated,
    clear_dataset_cache,
    clear_federated_cache,
    load_dataset,
)
from fedsim.data.base import channel_stats
from fedsim.data.federated import Ragged
from fedsim.data.store import RowFile, entry_path, stored, write_meta, write_rows

SMALL = {"num_train": 300, "num_test": 40, "image_size": 16}


def test_row_file_reads_rows_as_an_array_would(tmp_path: Path) -> None:
    x = np.arange(20 * 3 * 2 * 2, dtype=np.float32).reshape(20, 3, 2, 2)
    write_rows(tmp_path / "x.npy", x.shape, x.dtype, [x[:7], x[7:]])
    rows = RowFile(tmp_path / "x.npy")
    assert (len(rows), rows.shape, rows.dtype) == (20, x.shape, np.float32)
    assert np.array_equal(np.load(tmp_path / "x.npy"), x)
    for index in ([5, 6, 7, 2, 3, 19, 0], [4], [], np.array([3, 3, 1])):
        assert np.array_equal(rows[np.asarray(index, dtype=np.int64)], x[np.asarray(index, dtype=np.int64)])
    assert np.array_equal(rows[2:9], x[2:9]) and np.array_equal(rows[:], x)
    with pytest.raises(IndexError, match="out of range for 20 rows"):
        rows[np.array([20])]
    with pytest.raises(ValueError, match="step 1"):
        rows[::2]
    with pytest.raises(ValueError, match="wrote 7 rows; expected 20"):
        write_rows(tmp_path / "y.npy", x.shape, x.dtype, [x[:7]])


def test_an_entry_is_built_once_and_renamed_into_place(tmp_path: Path) -> None:
    calls = []

    def build(folder: Path) -> None:
        calls.append(folder)
        np.save(folder / "a.npy", np.arange(3))
        write_meta(folder, {"n": 3})

    first = stored("demo", {"k": 1}, build)
    assert first == entry_path("demo", {"k": 1}) and first is not None
    assert stored("demo", {"k": 1}, build) == first and len(calls) == 1
    assert calls[0] != first and not calls[0].exists()  # built under a temporary name
    assert stored("demo", {"k": 2}, build) != first and len(calls) == 2
    assert sorted(p.name for p in first.iterdir()) == ["a.npy", "meta.json"]


def test_a_failed_build_leaves_nothing_behind() -> None:
    def build(folder: Path) -> None:
        (folder / "half.npy").write_bytes(b"x")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        stored("broken", {"k": 1}, build)
    parent = entry_path("broken", {"k": 1}).parent
    assert not [p for p in parent.iterdir() if p.name.startswith((".broken", "broken"))]


def test_channel_stats_equal_numpy_in_one_chunk_and_float32_in_many(monkeypatch: pytest.MonkeyPatch) -> None:
    x = np.random.default_rng(0).random((500, 3, 8, 8)).astype(np.float32)
    mean, std = channel_stats(lambda a, b: x[a:b], x.shape, 1.0)
    assert np.array_equal(mean, x.mean(axis=(0, 2, 3), dtype=np.float64))
    assert np.array_equal(std, x.std(axis=(0, 2, 3), dtype=np.float64))
    reads = []
    monkeypatch.setattr(base, "CHUNK_VALUES", 64 * 3 * 7)
    many = channel_stats(lambda a, b: reads.append((a, b)) or x[a:b], x.shape, 1.0)
    assert reads[:2] == [(0, 7), (7, 14)] and len(reads) == 2 * 72  # two passes of 72 chunks
    assert np.allclose(many[0], mean, rtol=0, atol=1e-12) and np.allclose(many[1], std, rtol=0, atol=1e-12)
    assert np.array_equal(many[0].astype(np.float32), mean.astype(np.float32))


def test_uint8_images_stay_uint8_and_read_as_before() -> None:
    raw = np.random.default_rng(1).integers(0, 256, size=(30, 3, 4, 4), dtype=np.uint8)
    ds = base.make_dataset(
        "u8", raw, np.arange(30) % 3, raw[:5], np.arange(5) % 3, ("a", "b", "c"), divisor=255.0
    )
    assert ds.train.raw.dtype == np.uint8 and ds.train.raw is raw
    unit = raw / np.float32(255)
    m = unit.mean(axis=(0, 2, 3), dtype=np.float64).astype(np.float32).reshape(1, -1, 1, 1)
    s = unit.std(axis=(0, 2, 3), dtype=np.float64).astype(np.float32).reshape(1, -1, 1, 1)
    assert np.array_equal(ds.x_train.numpy(), (unit - m) / s)
    assert np.array_equal(ds.train.rows(np.array([4, 2])).numpy(), ds.x_train.numpy()[[4, 2]])
    same = Images.normalised(ds.x_test)
    assert np.array_equal(same.all.numpy(), ds.x_test.numpy())


def test_parallel_generation_equals_one_process(monkeypatch: pytest.MonkeyPatch) -> None:
    alone = shapes.generate_shapes(90, 16, np.random.default_rng(4), chunk_pixels=20 * 256)
    smaller_chunks = shapes.generate_shapes(90, 16, np.random.default_rng(4), chunk_pixels=7 * 256)
    monkeypatch.setattr(shapes, "PARALLEL_PIXELS", 1)
    pooled = shapes.generate_shapes(90, 16, np.random.default_rng(4), chunk_pixels=20 * 256)
    for other in (smaller_chunks, pooled):
        assert np.array_equal(alone[0], other[0]) and np.array_equal(alone[1], other[1])
        assert list(alone[2]) == list(other[2])


def test_cached_shapes_equal_shapes_made_in_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    cached = load_dataset("shapes", SMALL, 3)
    assert isinstance(cached.train.raw, RowFile)
    monkeypatch.setattr("fedsim.data.datasets.stored", lambda *a: None)  # as with no writable cache
    memory = DATASETS.get("shapes")(DATASETS.params_of("shapes", SMALL), 3)
    assert isinstance(memory.train.raw, np.ndarray)
    assert np.array_equal(cached.x_train.numpy(), memory.x_train.numpy())
    assert np.array_equal(cached.x_test.numpy(), memory.x_test.numpy())
    assert (cached.mean, cached.std) == (memory.mean, memory.std)
    assert cached.attributes_train == memory.attributes_train and len(cached.attributes_test) == 40


def test_an_unwritable_cache_keeps_the_data_in_memory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the cache folder should be")
    monkeypatch.setenv("FEDSIM_CACHE", str(blocked))
    clear_dataset_cache()
    ds = load_dataset("shapes", SMALL, 5)
    assert isinstance(ds.train.raw, np.ndarray) and ds.x_train.shape == (300, 3, 16, 16)
    clear_dataset_cache()


def test_ragged_items_are_read_only_views() -> None:
    r = Ragged.of([np.array([3, 4]), np.array([], dtype=np.int64), np.array([9])])
    assert len(r) == 3 and r.sizes().tolist() == [2, 0, 1]
    assert [x.tolist() for x in r] == [[3, 4], [], [9]] and r[-1].tolist() == [9]
    assert [x.tolist() for x in r[1:]] == [[], [9]]
    with pytest.raises(IndexError):
        r[3]
    with pytest.raises(ValueError, match="read-only"):
        r[0][0] = 1


def test_the_split_is_computed_once_per_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    args = ("shapes", SMALL, "dirichlet", {"alpha": 0.3}, 12, 0, None)
    first = build_federated(*args)
    clear_federated_cache()

    def fail(*_: object) -> None:
        raise AssertionError("the split should come from the store")

    monkeypatch.setattr(federated, "_split", fail)
    again = build_federated(*args)
    assert again is not first
    for a, b in ((first.train_indices, again.train_indices), (first.test_indices, again.test_indices)):
        assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert np.array_equal(first.train_class_counts, again.train_class_counts)
    split_files = list(entry_path("split", {}).parent.glob("split-*"))
    assert split_files and os.path.isfile(split_files[0] / "counts.npy")
