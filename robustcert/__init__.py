"""robustcert: certified adversarial robustness by randomized smoothing.

Public API (small and stable)::

    from robustcert import Smooth, load_model, load_dataset
    model = load_model("bundled:digits-0.25")
    smoothed = Smooth(model, num_classes=10, sigma=0.25)
    cert = smoothed.certify(x, n0=100, n=100_000, alpha=0.001, batch_size=1000, seed=0)
"""
from .certificate import ABSTAIN, Certificate, Prediction
from .data import CertDataset, load_dataset
from .engine import MonteCarloEngine, VoteCounter
from .errors import (
    CheckpointError, DataError, InvalidArgumentError, ModelOutputError, RobustCertError, ShapeError,
)
from .methods.cohen import Smooth
from .methods.diffusion import DiffusionDenoiser, denoised_classifier, load_denoiser  # diffusers imported lazily
from .models import NormalizeLayer, build_model, load_checkpoint, load_model

__version__ = "0.1.0"

__all__ = [
    "ABSTAIN", "CertDataset", "Certificate", "CheckpointError", "DataError", "InvalidArgumentError",
    "ModelOutputError", "MonteCarloEngine", "NormalizeLayer", "Prediction", "RobustCertError",
    "ShapeError", "Smooth", "VoteCounter", "build_model", "load_checkpoint", "load_dataset", "load_model",
    "__version__",
]
__all__ += ["DiffusionDenoiser", "denoised_classifier", "load_denoiser"]
from .methods.lipschitz import LipschitzSmooth  # Lipschitz-variance-margin smoothing (Delattre et al. 2024)
__all__ += ["LipschitzSmooth"]
from .methods.policy import PolicySmooth, certify_returns  # gymnasium imported lazily
__all__ += ["PolicySmooth", "certify_returns"]
from .methods.dual import DualSmooth  # dual randomized smoothing (Xia et al. 2024)
from .splits import SPLITS, get_split
__all__ += ["DualSmooth", "SPLITS", "get_split"]
from .methods.sequential import SequentialSmooth  # anytime-valid early stopping (Smooth.certify(sequential=True))
__all__ += ["SequentialSmooth"]
