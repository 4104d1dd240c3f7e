"""Datasets, partitioners and the federated split that scenarios are built from.

Nothing in this package downloads anything: ``digits`` ships with scikit-learn,
``shapes`` is generated, and the CIFAR and image-folder loaders read local files.
"""

from fedsim.data import domains  # noqa: F401  registers the 'domains' partitioner
from fedsim.data.base import Dataset, Images, derive_rng, make_dataset, stratified_split
from fedsim.data.datasets import (
    DATASETS,
    CifarParams,
    DigitsParams,
    ImageFolderParams,
    ShapesParams,
    clear_dataset_cache,
    load_dataset,
)
from fedsim.data.federated import FederatedData, build_federated, clear_federated_cache
from fedsim.data.paired import PairedData, PairedSet, PrivateSet, build_paired
from fedsim.data.partition import (
    PARTITIONERS,
    DirichletParams,
    ShardsParams,
    class_groups,
    local_test_indices,
    long_tail_counts,
    long_tail_indices,
)
from fedsim.data.shapes import SHAPES, generate_shapes

__all__ = [
    "DATASETS",
    "PARTITIONERS",
    "SHAPES",
    "CifarParams",
    "Dataset",
    "DigitsParams",
    "DirichletParams",
    "FederatedData",
    "ImageFolderParams",
    "Images",
    "PairedData",
    "PairedSet",
    "PrivateSet",
    "ShapesParams",
    "ShardsParams",
    "build_federated",
    "build_paired",
    "class_groups",
    "clear_dataset_cache",
    "clear_federated_cache",
    "derive_rng",
    "generate_shapes",
    "load_dataset",
    "local_test_indices",
    "long_tail_counts",
    "long_tail_indices",
    "make_dataset",
    "stratified_split",
]
