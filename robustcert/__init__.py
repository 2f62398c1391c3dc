"""robustcert: certified adversarial robustness by randomized smoothing.

Public API (small and stable)::

    from robustcert import Smooth, certify_dataset, load_dataset, load_model
    model = load_model("bundled:digits-0.25")
    smoothed = Smooth(model, num_classes=10, sigma=0.25)
    x, label = load_dataset("digits")[0]
    cert = smoothed.certify(x, n0=100, n=100_000, alpha=0.001, batch_size=1000, seed=0)
    frame = certify_dataset(smoothed, "digits", "out.tsv", n=10_000)   # TSV + sidecar, resumable

A new method subclasses :class:`SmoothedClassifier` (the abstract contract the runs use); every
error robustcert raises on purpose is a :class:`RobustCertError` with a one-line message.

Internals stay importable from their modules (robustcert.engine, robustcert.stats, ...).
"""
from .certificate import ABSTAIN, Certificate, Prediction
from .data import CertDataset, load_dataset
from .errors import (
    CheckpointError, CLIError, DataError, InvalidArgumentError, ModelOutputError, ResourceError, ResultsError,
    RobustCertError, RobustCertWarning, RunError, ShapeError,
)
from .methods.ablation import AblationSmooth
from .methods.attack import AttackResult, SmoothedPGD, pgd_on_smoothed
from .methods.base import SmoothedClassifier
from .methods.cohen import Smooth
from .methods.diffusion import (  # diffusers imported lazily
    DiffusionDenoiser, MissingDependencyError, denoised_classifier, load_denoiser,
)
from .methods.dual import DualSmooth
from .methods.lipschitz import LipschitzSmooth
from .methods.policy import PolicySmooth, certify_returns  # gymnasium imported lazily
from .methods.sequential_smooth import SequentialSmooth
from .models import NormalizeLayer, build_model, load_checkpoint, load_model
from .results import certificates_frame, read_results, results_table, table_from_files
from .runs import build_smoothed, certify_dataset, predict_dataset, select_lvm
from .runs.attack import attack_dataset
from .runs.train import TrainingResult, train_model
from .version import __version__

__all__ = [
    "ABSTAIN", "AblationSmooth", "AttackResult", "CLIError", "CertDataset", "Certificate", "CheckpointError",
    "DataError", "DiffusionDenoiser", "DualSmooth", "InvalidArgumentError", "LipschitzSmooth",
    "MissingDependencyError", "ModelOutputError", "NormalizeLayer", "PolicySmooth", "Prediction", "ResourceError",
    "ResultsError", "RobustCertError", "RobustCertWarning", "RunError", "SequentialSmooth", "ShapeError", "Smooth", "SmoothedClassifier",
    "SmoothedPGD", "TrainingResult", "__version__", "attack_dataset", "build_model", "build_smoothed",
    "certificates_frame", "certify_dataset", "certify_returns", "denoised_classifier", "load_checkpoint",
    "load_dataset", "load_denoiser", "load_model", "pgd_on_smoothed", "predict_dataset", "read_results",
    "results_table", "select_lvm", "table_from_files", "train_model",
]
