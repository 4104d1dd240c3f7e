"""The embedded datasets (digits, shapes), the registry and the cached loader."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from fedsim.data import DATASETS, SHAPES, Dataset, load_dataset, stratified_split
from fedsim.data.shapes import BACKGROUNDS, COLOURS, MIN_CONTRAST, generate_shapes, shape_mask
from fedsim.errors import UserError

SMALL_SHAPES = {"num_train": 200, "num_test": 50}
ATTRIBUTE_KEYS = {"shape", "colour", "size", "position", "background", "texture"}


def test_registry_names() -> None:
    assert DATASETS.names() == ["cifar10", "cifar100", "digits", "imagefolder", "shapes"]
    with pytest.raises(UserError, match="unknown dataset 'mnist'; expected one of: cifar10"):
        load_dataset("mnist", {}, 0)


def test_digits_shapes_classes_and_normalisation() -> None:
    d = load_dataset("digits", {}, 0)
    assert isinstance(d, Dataset)
    assert d.input_shape == (1, 8, 8)
    assert (len(d.y_train), len(d.y_test)) == (1437, 360)
    assert d.num_classes == 10 and d.class_names == tuple(str(i) for i in range(10))
    assert d.x_train.dtype == torch.float32 and d.y_train.dtype == torch.int64
    assert set(d.y_train.tolist()) == set(range(10)) == set(d.y_test.tolist())
    assert abs(d.x_train.mean().item()) < 1e-4 and abs(d.x_train.std().item() - 1) < 1e-3
    assert d.attributes_train is None
    # Stratified: every class is about 20% test.
    share = np.bincount(d.y_test.numpy()) / np.bincount(np.concatenate([d.y_train.numpy(), d.y_test.numpy()]))
    assert np.all(np.abs(share - 0.2) < 0.01)


def test_digits_split_depends_on_the_seed() -> None:
    a, b = load_dataset("digits", {}, 0), load_dataset("digits", {}, 1)
    assert not torch.equal(a.x_test, b.x_test)
    assert load_dataset("digits", {"test_fraction": 0.5}, 0).y_test.shape == (899,)


def test_load_dataset_caches_on_validated_options() -> None:
    a = load_dataset("digits", {}, 3)
    assert load_dataset("digits", {"test_fraction": 0.2}, 3) is a
    assert load_dataset("digits", {}, 4) is not a


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("digits", {"test_fraction": 1.0}),
        ("digits", {"test_fraction": 0}),
        ("digits", {"fraction": 0.2}),
        ("shapes", {"image_size": 8}),
        ("shapes", {"image_size": 512}),
        ("shapes", {"num_train": 0}),
        ("cifar10", {}),
        ("imagefolder", {"path": "/x", "image_size": 0}),
    ],
)
def test_bad_dataset_options_are_validation_errors(name: str, options: dict) -> None:
    with pytest.raises(ValidationError):
        load_dataset(name, options, 0)


def test_shapes_are_deterministic_for_a_seed() -> None:
    a = load_dataset("shapes", SMALL_SHAPES, 0)
    b = DATASETS.get("shapes")(DATASETS.params_of("shapes", SMALL_SHAPES), 0)  # uncached
    c = load_dataset("shapes", SMALL_SHAPES, 1)
    assert a is not b
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.x_test, b.x_test)
    assert a.attributes_train == b.attributes_train
    assert not torch.equal(a.x_train, c.x_train)


def test_shapes_layout_balance_and_attributes() -> None:
    d = load_dataset("shapes", {"image_size": 24, "num_train": 200, "num_test": 50}, 0)
    assert d.input_shape == (3, 24, 24)
    assert d.class_names == SHAPES and len(SHAPES) == 10
    assert np.bincount(d.y_train.numpy()).tolist() == [20] * 10
    assert np.bincount(d.y_test.numpy()).tolist() == [5] * 10
    for attrs, labels in ((d.attributes_train, d.y_train), (d.attributes_test, d.y_test)):
        assert attrs is not None and len(attrs) == len(labels)
        for a, y in zip(attrs, labels.tolist(), strict=True):
            assert set(a) == ATTRIBUTE_KEYS
            assert a["shape"] == SHAPES[y]
            assert a["colour"] in COLOURS and a["background"] in BACKGROUNDS
            assert a["colour"] != a["background"]
            gap = np.subtract(COLOURS[a["colour"]], BACKGROUNDS[a["background"]])
            assert np.linalg.norm(gap) >= MIN_CONTRAST
            assert a["size"] in {"small", "medium", "large"}
            assert a["texture"] in {"solid", "striped", "dotted"}
    positions = {a["position"] for a in d.attributes_train}
    assert {"top left", "center", "bottom right"} <= positions and len(positions) == 9


def test_shapes_pixels_match_their_attributes() -> None:
    images, labels, attrs = generate_shapes(60, 32, np.random.default_rng(5))
    assert images.dtype == np.float32 and images.min() >= 0 and images.max() <= 1
    for img, a in zip(images, attrs, strict=True):
        bg = np.array(BACKGROUNDS[a["background"]])
        far = [img[:, :3, :3], img[:, :3, -3:], img[:, -3:, :3], img[:, -3:, -3:]]
        # At least one corner is plain background (the shape cannot cover all four).
        assert min(np.abs(c.reshape(3, -1).mean(axis=1) - bg).max() for c in far) < 0.05
        fg = np.array(COLOURS[a["colour"]])
        share_fg = (np.abs(img - fg[:, None, None]).max(axis=0) < 0.15).mean()
        assert share_fg > 0.005, "some pixels carry the foreground colour"
    assert labels.tolist() == [SHAPES.index(a["shape"]) for a in attrs]


def test_shape_masks_differ_from_each_other() -> None:
    g = (np.arange(64) + 0.5) / 32 - 1.0
    u, v = g[None, :], g[:, None]
    masks = {s: shape_mask(s, u, v) for s in SHAPES}
    for i, s in enumerate(SHAPES):
        assert masks[s].mean() > 0.1
        for t in SHAPES[i + 1 :]:
            assert (masks[s] != masks[t]).mean() > 0.05, (s, t)


def test_stratified_split_sizes() -> None:
    labels = np.repeat(np.arange(3), [10, 20, 31])
    tr, te = stratified_split(labels, 0.25, np.random.default_rng(0))
    assert len(te) == 16 and len(tr) == 45  # ceil(0.25 * 61) = 16
    assert np.array_equal(np.sort(np.concatenate([tr, te])), np.arange(61))
    # Shares 2.62, 5.25, 8.13: floors 2, 5, 8 and the left-over one to the largest remainder.
    assert np.bincount(labels[te]).tolist() == [3, 5, 8]
