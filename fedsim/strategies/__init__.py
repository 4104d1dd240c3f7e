"""Server halves of the algorithms (Flower strategies), registered in :mod:`fedsim.algorithms`."""
