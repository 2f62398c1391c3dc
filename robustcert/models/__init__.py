"""Base-model architectures, the normalisation layer, model sources and checkpoint loading."""
from .checkpoint import (
    ARCHITECTURES, DEFAULT_ARCHITECTURES, FILE_FORMATS, MODEL_SOURCES, FileFormat, LoadedModel, ModelSource,
    build_model, bundled_names, default_architecture, load_checkpoint, load_model, load_model_file, model_spec_help,
    register_file_format, register_model_source,
)
from . import exported, zoo  # noqa: F401  (they register their file formats and model sources)
from .cifar_resnet import CifarResNet
from .digits import DigitsCNN
from .mnist import MnistCNN
from .normalize import NormalizeLayer
from .provenance import provenance, record_provenance

__all__ = [
    "ARCHITECTURES", "CifarResNet", "DEFAULT_ARCHITECTURES", "DigitsCNN", "FILE_FORMATS", "FileFormat", "LoadedModel",
    "MODEL_SOURCES", "MnistCNN", "ModelSource", "NormalizeLayer", "build_model", "bundled_names",
    "default_architecture", "load_checkpoint", "load_model", "load_model_file", "model_spec_help", "provenance",
    "record_provenance", "register_file_format", "register_model_source",
]
