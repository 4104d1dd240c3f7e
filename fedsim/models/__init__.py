"""Models: every model is a ``SplitModel`` (``features`` + linear ``head``).

``MODELS`` maps names to builders; ``build_model`` validates parameters and
builds a deterministically initialised model for a seed. Importing the
architecture modules (``cnn``, ``mlp``, ``resnet``) registers them.
"""

from fedsim.models import cnn, efficientnet, mlp, multimodal, resnet, timm_vit, vit
from fedsim.models.base import SplitModel
from fedsim.models.zoo import MODELS, InputShape, ModelBuilder, build_model

__all__ = [
    "MODELS",
    "InputShape",
    "ModelBuilder",
    "SplitModel",
    "build_model",
    "cnn",
    "efficientnet",
    "mlp",
    "multimodal",
    "resnet",
    "timm_vit",
    "vit",
]
