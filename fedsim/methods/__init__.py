"""The mathematics of each method as plain functions of tensors (no Flower, no files)."""
