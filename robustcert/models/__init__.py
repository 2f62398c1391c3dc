"""Base-model architectures, the normalisation layer and checkpoint loading."""
from .checkpoint import (
    ARCHITECTURES, LoadedModel, build_model, bundled_names, load_checkpoint, load_model,
)
from .cifar_resnet import CifarResNet
from .digits import DigitsCNN
from .normalize import NormalizeLayer
from .provenance import provenance, record_provenance

__all__ = [
    "ARCHITECTURES", "CifarResNet", "DigitsCNN", "LoadedModel", "NormalizeLayer",
    "build_model", "bundled_names", "load_checkpoint", "load_model", "provenance", "record_provenance",
]
