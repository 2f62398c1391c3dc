"""Base-model architectures, the normalisation layer and checkpoint loading."""
from .checkpoint import (
    ARCHITECTURES, DEFAULT_ARCHITECTURES, LoadedModel, build_model, bundled_names, default_architecture,
    load_checkpoint, load_model,
)
from .cifar_resnet import CifarResNet
from .digits import DigitsCNN
from .mnist import MnistCNN
from .normalize import NormalizeLayer
from .provenance import provenance, record_provenance

__all__ = [
    "ARCHITECTURES", "CifarResNet", "DEFAULT_ARCHITECTURES", "DigitsCNN", "LoadedModel", "MnistCNN",
    "NormalizeLayer", "build_model", "bundled_names", "default_architecture", "load_checkpoint", "load_model",
    "provenance", "record_provenance",
]
