"""Where a base model came from: its specification and a hash of its weights.

:func:`robustcert.models.load_checkpoint` (and the diffusion denoiser loader) record the
specification and the file's sha256 of every model they load; a dataset run writes them into
its sidecar and compares them when it is resumed. A model built in Python has no file: its
record is a sha256 over its state_dict (names, dtypes, shapes and values), so a resumed run
still notices changed weights.
"""
from __future__ import annotations

import hashlib
import weakref
from typing import Callable

import torch

_RECORDS: "weakref.WeakKeyDictionary[object, dict]" = weakref.WeakKeyDictionary()


def record_provenance(model: Callable, spec: str, sha256: str | None, arch: str | None = None, **extra) -> None:
    """Remember where ``model`` came from (silently skipped for objects that cannot be weakly referenced)."""
    try:
        _RECORDS[model] = {"spec": spec, "arch": arch, "sha256": sha256, **extra}
    except TypeError:
        pass


def recorded(model: Callable) -> dict:
    """What was recorded when ``model`` was loaded ({} for a model built in Python; nothing is hashed)."""
    try:
        return dict(_RECORDS.get(model) or {})
    except TypeError:
        return {}


def state_dict_sha256(model: torch.nn.Module) -> str:
    """sha256 over a module's state_dict: parameter names, dtypes, shapes and values."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.view(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def provenance(model: Callable) -> dict:
    """``{"spec", "arch", "sha256", ...}`` of a model: as recorded when it was loaded, else a
    description of the Python object and the hash of its state_dict (None for a plain callable)."""
    try:
        record = _RECORDS.get(model)
    except TypeError:
        record = None
    if record is not None:
        return dict(record)
    name = type(model).__name__
    if isinstance(model, torch.nn.Module):
        return {"spec": f"python:{name}", "arch": None, "sha256": state_dict_sha256(model)}
    return {"spec": f"python:{name}", "arch": None, "sha256": None}
