"""robustcert: certified adversarial robustness by randomized smoothing.

Public API (small and stable)::

    from robustcert import Smooth, certify_dataset, load_dataset, load_model
    model = load_model("bundled:digits-0.25")
    smoothed = Smooth(model, num_classes=10, sigma=0.25)
    x, label = load_dataset("digits")[0]
    cert = smoothed.certify(x, n0=100, n=100_000, alpha=0.001, batch_size=1000, seed=0)
    frame = certify_dataset(smoothed, "digits", "out.tsv", n=10_000)   # TSV + sidecar, resumable

Internals stay importable from their modules (robustcert.engine, robustcert.stats, ...).
"""
from .certificate import ABSTAIN, Certificate, Prediction
from .data import CertDataset, load_dataset
from .errors import (
    CheckpointError, DataError, InvalidArgumentError, ModelOutputError, RobustCertError, RunError, ShapeError,
)
from .methods.ablation import AblationSmooth
from .methods.cohen import SequentialSmooth, Smooth
from .methods.diffusion import DiffusionDenoiser, denoised_classifier, load_denoiser  # diffusers imported lazily
from .methods.dual import DualSmooth
from .methods.lipschitz import LipschitzSmooth
from .methods.policy import PolicySmooth, certify_returns  # gymnasium imported lazily
from .models import NormalizeLayer, build_model, load_checkpoint, load_model
from .results import certificates_frame, read_results, results_table, table_from_files
from .runs import build_smoothed, certify_dataset, predict_dataset, select_lvm
from .runs.train import TrainingResult, train_model
from .version import __version__

__all__ = [
    "ABSTAIN", "AblationSmooth", "CertDataset", "Certificate", "CheckpointError", "DataError", "DiffusionDenoiser", "DualSmooth",
    "InvalidArgumentError", "LipschitzSmooth", "ModelOutputError", "NormalizeLayer", "PolicySmooth", "Prediction",
    "RobustCertError", "RunError", "SequentialSmooth", "ShapeError", "Smooth", "TrainingResult", "__version__", "build_model",
    "build_smoothed", "certificates_frame", "certify_dataset", "certify_returns", "denoised_classifier",
    "load_checkpoint", "load_dataset", "load_denoiser", "load_model", "predict_dataset", "read_results",
    "results_table", "select_lvm", "table_from_files", "train_model",
]
