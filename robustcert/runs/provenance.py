"""What a run records about itself: the command, package versions, device, model and data.

The record is the JSON sidecar written beside every result file (``FILE.json``); a resumed run
must match its parameters, model hash, data and kind (:func:`robustcert.runs.files.previous_runs`).
"""
from __future__ import annotations

import os
import platform
import shlex
import sys

import torch

from ..methods.diffusion import DenoisedClassifier
from ..models.provenance import provenance
from ..version import __version__
from ..files import timestamp


def package_versions() -> dict:
    import numpy
    import scipy

    return {"robustcert": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "numpy": numpy.__version__, "scipy": scipy.__version__}


def device_name(device: torch.device) -> str:
    """The device in words: the GPU's name, or the CPU's model (where the OS says it), architecture and cores."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = cpu_model()
    return f"cpu ({model + ', ' if model else ''}{platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), or "" where there is none: speed figures name their CPU."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def python_command() -> str:
    """The command of a run started from Python: the interpreter's arguments (the script and its options)."""
    return shlex.join(["python", *sys.argv]) if sys.argv and sys.argv[0] else "python"


def describe_models(smoothed) -> tuple[dict, dict]:
    """``(model record, parameters)`` of a smoothed classifier's base models.

    The record of the main base model (``{"spec", "arch", "sha256"}``, and for a pretrained zoo
    model its ``weights`` and ``preprocessing``: mean, std, size, interpolation, resize, crop) is
    the sidecar's ``model`` section; further models (dual's ``model2``) and a denoiser in front of the classifier
    (``denoiser``, t*, its weights hash) become run parameters, compared on resume.
    """
    record, parameters = {}, {}
    for role, model in smoothed.base_models().items():
        if isinstance(model, DenoisedClassifier):
            parameters.update(model.settings())
            model = model.classifier
        known = provenance(model)
        if role == "model":
            record = {"spec": known["spec"], "arch": known["arch"], "sha256": known["sha256"],
                      **{k: known[k] for k in ("weights", "preprocessing") if known.get(k) is not None}}
        else:
            parameters.update({role: known["spec"], f"{role}_sha256": known["sha256"]})
    return record, parameters


def run_record(kind: str, smoothed, dataset, parameters: dict, model: dict, device: torch.device,
               command: str) -> dict:
    """The JSON sidecar: command, parameters (incl. alpha spending), the noise and the norm of the
    radii, model, data, device, versions."""
    return {
        "command": command,
        "kind": kind,
        "method": smoothed.method,
        **smoothed.threat_model(),
        "parameters": parameters,
        "model": model,
        "data": {"spec": dataset.name, "num_classes": dataset.num_classes, "input_shape": list(dataset.input_shape),
                 **({"transform": dataset.transform} if getattr(dataset, "transform", None) else {})},
        "runs": [{"started": timestamp(), "command": command, "device": device_name(device),
                  "versions": package_versions()}],
    }
