"""Are the named pretrained checkpoints good features? A linear probe, in one process run.

For each image checkpoint of ``fedsim list pretrained`` (installed by ``make pretrained``),
the frozen encoder's features of a training set are standardised and a logistic regression
is fitted on them; its accuracy on the test set is printed next to the same architecture at
random initialisation (the baseline, measured in the same run) and fedsim's own small ViT
pretrained here on a disjoint public split of the same data (Adam 3e-3, 40 epochs, as the
pFedPG scenarios do). Datasets: shapes (10 classes, random colours, sizes, positions,
textured backgrounds) at 56 and 112 px, and sklearn's 8x8 digits upsampled to 56 px.
Run:

    python benchmarks/pretrained_probe.py [--train 2000] [--test 1000] [--sizes 56 112]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from fedsim.data.datasets import load_dataset
from fedsim.methods.backbone import PretrainRecipe, pretrain
from fedsim.models import SplitModel, build_model
from fedsim.pretrained import CATALOG, load_pretrained

#: fedsim's own small ViT (as in scenarios/pfedpg_shapes.yaml), patch 8 at 56 px and up.
SMALL_VIT = {"dim": 64, "depth": 2, "heads": 4}


def images(name: str, size: int, n_train: int, n_test: int, n_public: int) -> tuple[torch.Tensor, ...]:
    """Train, test and public images and labels (RGB, ``size`` px, normalised per channel)."""
    if name == "shapes":
        ds = load_dataset(
            "shapes", {"image_size": size, "num_train": n_train + n_public, "num_test": n_test}, 0
        )
    else:
        ds = load_dataset(name, {}, 0)
    x_all, y_all = ds.train.rows(np.arange(len(ds.y_train))), ds.y_train
    x_te, y_te = ds.test.rows(np.arange(min(n_test, len(ds.y_test)))), ds.y_test[:n_test]

    def rgb(x: torch.Tensor) -> torch.Tensor:
        x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
        return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)

    pub = min(n_public, len(y_all) // 3)
    return (
        rgb(x_all[pub : pub + n_train]),
        y_all[pub : pub + n_train],
        rgb(x_te),
        y_te,
        rgb(x_all[:pub]),
        y_all[:pub],
    )


def features(model: SplitModel, x: torch.Tensor) -> np.ndarray:
    """Frozen features in batches of 100."""
    model.eval()
    with torch.no_grad():
        return torch.cat([model.features(x[i : i + 100]) for i in range(0, len(x), 100)]).numpy()


def probe(model: SplitModel, data: tuple[torch.Tensor, ...]) -> float:
    """Test accuracy of a logistic regression on standardised frozen features."""
    x_tr, y_tr, x_te, y_te = data[:4]
    scaler = StandardScaler().fit(f_tr := features(model, x_tr))
    clf = LogisticRegression(max_iter=3000).fit(scaler.transform(f_tr), y_tr.numpy())
    return float(clf.score(scaler.transform(features(model, x_te)), y_te.numpy()))


def encoders(size: int, data: tuple[torch.Tensor, ...]) -> dict[str, dict[str, SplitModel]]:
    """name -> {"pretrained", "random"} models; the small ViT pretrained on the public split."""
    shape = (3, size, size)
    out: dict[str, dict[str, SplitModel]] = {}
    for name in ("dinov2-vits14", "efficientnet-lite0"):
        named = CATALOG[name]
        if named.path() is None:
            print(f"{name}: not installed (make pretrained); skipped")
            continue
        loaded = build_model(named.model, named.params, shape, 10, 0)
        load_pretrained(loaded.features, name)
        out[name] = {"pretrained": loaded, "random": build_model(named.model, named.params, shape, 10, 0)}
    small = build_model("vit", {**SMALL_VIT, "patch_size": size // 7}, shape, 10, 0)
    x_pub, y_pub = data[4], data[5]
    pretrain(small, x_pub, y_pub, PretrainRecipe(epochs=40, lr=3e-3), seed=0)
    out["fedsim vit (pretrained here)"] = {
        "pretrained": small,
        "random": build_model("vit", {**SMALL_VIT, "patch_size": size // 7}, shape, 10, 0),
    }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train", type=int, default=2000)
    parser.add_argument("--test", type=int, default=1000)
    parser.add_argument("--public", type=int, default=3000, help="images the small ViT is pretrained on")
    parser.add_argument("--sizes", type=int, nargs="+", default=[56, 112])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cases = [("shapes", s) for s in args.sizes] + [("digits", 56)]
    print("| data | px | encoder | pretrained | random init | ratio | seconds |")
    print("|---|---|---|---|---|---|---|")
    for dataset, size in cases:
        data = images(dataset, size, args.train, args.test, args.public)
        for name, models in encoders(size, data).items():
            start = time.perf_counter()
            pre, rnd = probe(models["pretrained"], data), probe(models["random"], data)
            secs = time.perf_counter() - start
            print(f"| {dataset} | {size} | {name} | {pre:.3f} | {rnd:.3f} | {pre / rnd:.2f}x | {secs:.0f} |")


if __name__ == "__main__":
    main()
