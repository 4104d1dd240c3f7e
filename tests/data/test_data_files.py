"""Loaders of the user's own data: CIFAR python batches and image-folder trees."""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fedsim.data import load_dataset
from fedsim.errors import UserError

CIFAR10_HINT = "expected the 'cifar-10-batches-py' folder"
CIFAR100_HINT = "expected the 'cifar-100-python' folder"


def dump(path: Path, obj: object, protocol: int = 2) -> None:
    path.write_bytes(pickle.dumps(obj, protocol=protocol))


def fake_images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 3072), dtype=np.uint8)


@pytest.fixture
def cifar10(tmp_path: Path) -> Path:
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer"]
    names += [b"dog", b"frog", b"horse", b"ship", b"truck"]
    dump(root / "batches.meta", {b"label_names": names, b"num_vis": 3072})
    for i in range(1, 6):
        labels = [(i + j) % 10 for j in range(4)]
        dump(root / f"data_batch_{i}", {b"data": fake_images(4, i), b"labels": labels})
    dump(root / "test_batch", {b"data": fake_images(3, 9), b"labels": [0, 5, 9]}, protocol=5)
    return root


@pytest.fixture
def cifar100(tmp_path: Path) -> Path:
    root = tmp_path / "cifar-100-python"
    root.mkdir()
    dump(root / "meta", {"fine_label_names": [f"c{i}" for i in range(100)]})
    train = {b"data": fake_images(6, 1), b"fine_labels": [0, 1, 2, 97, 98, 99]}
    dump(root / "train", {**train, b"coarse_labels": [0] * 6})
    dump(root / "test", {b"data": fake_images(2, 2), b"fine_labels": [50, 51]})
    return root


def test_cifar10_loads_with_the_right_shapes_and_labels(cifar10: Path) -> None:
    d = load_dataset("cifar10", {"path": str(cifar10)}, 0)
    assert d.input_shape == (3, 32, 32)
    assert (len(d.y_train), len(d.y_test)) == (20, 3)
    assert d.y_train[:4].tolist() == [1, 2, 3, 4] and d.y_test.tolist() == [0, 5, 9]
    assert d.num_classes == 10 and d.class_names[3] == "cat"
    assert load_dataset("cifar10", {"path": cifar10}, 5) is d  # the seed plays no part
    # Pixels: row-major CHW from the 3072-byte rows, scaled then normalised.
    raw = fake_images(4, 1)[0].reshape(3, 32, 32) / 255.0
    mean, std = torch.tensor(d.mean)[:, None, None], torch.tensor(d.std)[:, None, None]
    assert torch.allclose(d.x_train[0].double() * std + mean, torch.from_numpy(raw), atol=1e-5)


def test_cifar100_uses_fine_labels(cifar100: Path) -> None:
    d = load_dataset("cifar100", {"path": cifar100}, 0)
    assert d.num_classes == 100 and d.class_names[99] == "c99"
    assert d.y_train.tolist() == [0, 1, 2, 97, 98, 99] and d.y_test.tolist() == [50, 51]


def test_cifar_reads_python2_era_numpy_pickles(cifar10: Path) -> None:
    # Pickles written under numpy 1 name numpy.core; the safe unpickler maps them.
    blob = pickle.dumps({b"data": fake_images(3, 9), b"labels": [0, 5, 9]}, protocol=2)
    blob = blob.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert b"numpy.core.multiarray" in blob
    (cifar10 / "test_batch").write_bytes(blob)
    d = load_dataset("cifar10", {"path": cifar10}, 1)
    assert d.y_test.tolist() == [0, 5, 9]


def test_cifar_missing_folder_or_file_names_the_layout(tmp_path: Path, cifar10: Path) -> None:
    with pytest.raises(
        UserError, match=re.escape(str(tmp_path / "nope")) + " does not exist.*" + CIFAR10_HINT
    ):
        load_dataset("cifar10", {"path": tmp_path / "nope"}, 0)
    with pytest.raises(UserError, match=f"cifar100: .* has no meta; {CIFAR100_HINT}"):
        load_dataset("cifar100", {"path": cifar10}, 0)
    (cifar10 / "data_batch_3").unlink()
    with pytest.raises(UserError, match=f"has no data_batch_3; {CIFAR10_HINT}") as err:
        load_dataset("cifar10", {"path": cifar10}, 0)
    assert "\n" not in str(err.value)


def test_cifar_malformed_pickle_names_the_layout(cifar10: Path) -> None:
    (cifar10 / "data_batch_2").write_bytes(b"this is not a pickle")
    with pytest.raises(UserError, match=f"data_batch_2 is not a readable .*{CIFAR10_HINT}"):
        load_dataset("cifar10", {"path": cifar10}, 0)


def test_cifar_wrong_contents_are_user_errors(cifar10: Path) -> None:
    dump(cifar10 / "data_batch_1", {b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]})
    with pytest.raises(UserError, match="not N x 3072 uint8 images"):
        load_dataset("cifar10", {"path": cifar10}, 0)
    dump(cifar10 / "data_batch_1", {b"labels": [0, 1]})
    with pytest.raises(UserError, match="data_batch_1 has no 'data' entry"):
        load_dataset("cifar10", {"path": cifar10}, 0)


def test_cifar_refuses_pickles_that_would_run_code(cifar10: Path, tmp_path: Path) -> None:
    class Evil:
        def __reduce__(self) -> tuple:
            return (Path.touch, (tmp_path / "pwned",))

    dump(cifar10 / "test_batch", {b"data": Evil(), b"labels": []})
    with pytest.raises(UserError, match="not a readable CIFAR pickle"):
        load_dataset("cifar10", {"path": cifar10}, 0)
    assert not (tmp_path / "pwned").exists()


# ------------------------------------------------------------------ imagefolder

COLOURS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255)}


def write_images(folder: Path, colour: str, n: int, ext: str = "png") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        mode = "L" if i == 0 else "RGB"  # a greyscale file is converted to RGB
        value = 128 if mode == "L" else COLOURS[colour]
        Image.new(mode, (20 + i, 12), value).save(folder / f"{i}.{ext}")


def test_imagefolder_with_train_and_test_folders(tmp_path: Path) -> None:
    for name in COLOURS:
        write_images(tmp_path / "train" / name, name, 4)
        write_images(tmp_path / "test" / name, name, 2, ext="jpg")
    (tmp_path / "train" / "red" / "notes.txt").write_text("ignored")
    d = load_dataset("imagefolder", {"path": tmp_path, "image_size": 16}, 0)
    assert d.class_names == ("blue", "green", "red")
    assert d.input_shape == (3, 16, 16)
    assert np.bincount(d.y_train.numpy()).tolist() == [4, 4, 4]
    assert np.bincount(d.y_test.numpy()).tolist() == [2, 2, 2]
    raw = d.x_train * torch.tensor(d.std)[:, None, None] + torch.tensor(d.mean)[:, None, None]
    red = raw[d.y_train == 2][1:].mean(dim=(0, 2, 3))  # skip the greyscale one
    assert torch.allclose(red, torch.tensor([1.0, 0.0, 0.0]), atol=1e-3)


def test_imagefolder_flat_layout_is_split_stratified(tmp_path: Path) -> None:
    for name in COLOURS:
        write_images(tmp_path / name, name, 5)
    opts = {"path": tmp_path, "image_size": 8, "test_fraction": 0.4}
    d = load_dataset("imagefolder", opts, 0)
    assert np.bincount(d.y_train.numpy()).tolist() == [3, 3, 3]
    assert np.bincount(d.y_test.numpy()).tolist() == [2, 2, 2]
    assert d.input_shape == (3, 8, 8)


def test_imagefolder_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist or is not a folder; expected root/"):
        load_dataset("imagefolder", {"path": tmp_path / "missing"}, 0)
    with pytest.raises(UserError, match="has no class folders"):
        load_dataset("imagefolder", {"path": tmp_path}, 0)
    write_images(tmp_path / "red", "red", 3)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=r"class folder .*empty has no images"):
        load_dataset("imagefolder", {"path": tmp_path}, 0)
    (tmp_path / "empty").rmdir()
    bad = tmp_path / "red" / "broken.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(UserError, match="cannot read image " + re.escape(str(bad))):
        load_dataset("imagefolder", {"path": tmp_path, "test_fraction": 0.5}, 0)
