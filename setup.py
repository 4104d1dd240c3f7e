"""Package layout: one import package, ``fedsim``.

The ``clients/`` and ``edge/`` folders stay at the repository's root (the layout users know)
but install inside the fedsim namespace, as ``fedsim.clients`` and ``fedsim.edge``, so a wheel
holds exactly one top-level package and never shadows the unrelated ``clients`` or ``edge``
distributions on the package index. Everything else is in pyproject.toml.
"""

from setuptools import find_namespace_packages, setup

#: import package -> folder at the repository's root
MAPPED = {"fedsim.clients": "clients", "fedsim.edge": "edge"}
SKIP = ["*__pycache__*", "*.egg-info*"]

packages = find_namespace_packages(include=["fedsim", "fedsim.*"], exclude=SKIP)
for name, folder in MAPPED.items():
    packages += [name, *(f"{name}.{p}" for p in find_namespace_packages(where=folder, exclude=SKIP))]

setup(
    packages=packages,
    package_dir=MAPPED,
    package_data={"fedsim.edge.proto": ["*.proto"], "fedsim.edge.trace_data": ["*.csv"]},
)
