"""The split interface every model exposes: a feature extractor and a linear head."""

from __future__ import annotations

import torch
from torch import nn


class SplitModel(nn.Module):
    """A classifier split into ``features`` and a linear ``head``.

    ``forward(x) == head(features(x))`` exactly. Algorithms that treat the two
    parts differently (a frozen classifier on detached features, generated
    per-client heads, a split point for edge offloading) rely on this split.

    Parameters
    ----------
    features : nn.Module
        Maps an input batch ``[B, C, H, W]`` to flat features ``[B, feature_dim]``
        (after any pooling). Builders in this package use an ``nn.Sequential`` of
        stages so that it can be sliced (``features[:k]``) at a stage boundary.
    feature_dim : int
        Width of the feature vector.
    num_classes : int
        Number of outputs of the head.

    Attributes
    ----------
    features : nn.Module
        The feature extractor.
    head : nn.Linear
        ``nn.Linear(feature_dim, num_classes)``.
    feature_dim : int
        Width of the feature vector.
    num_classes : int
        Number of classes.
    """

    def __init__(self, features: nn.Module, feature_dim: int, num_classes: int) -> None:
        super().__init__()
        if feature_dim < 1 or num_classes < 1:
            raise ValueError(
                f"feature_dim and num_classes must be positive, got {feature_dim} and {num_classes}"
            )
        self.features = features
        self.head = nn.Linear(feature_dim, num_classes)
        self.feature_dim = feature_dim
        self.num_classes = num_classes

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Flat features of ``x``.

        Parameters
        ----------
        x : torch.Tensor
            Input batch ``[B, C, H, W]``.

        Returns
        -------
        torch.Tensor
            Features ``[B, feature_dim]``.
        """
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of ``x``: ``head(features(x))``.

        Parameters
        ----------
        x : torch.Tensor
            Input batch ``[B, C, H, W]``.

        Returns
        -------
        torch.Tensor
            Logits ``[B, num_classes]``.
        """
        return self.head(self.features(x))
