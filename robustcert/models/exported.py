"""``torch.export`` programs (``.pt2``, ``torch.export.save``): the generic path for any model.

Any classifier can be handed to robustcert this way, its normalisation (and any resize) included
in the exported module, since the noise is added to the [0, 1] input before it::

    program = torch.export.export(model.eval(), (torch.rand(2, 3, 224, 224),),
                                  dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(program, "model.pt2")

The batch dimension must be dynamic (the engine's batches vary in size). The input shape and
the class count are read from the program's signature. (TorchScript, the other generic path,
is deprecated in the pinned torch.)

Security: ``torch.export.load`` unpickles some parts of an archive with full unpickling (weights
and constants stored as pickles, custom objects, and sample inputs that the ``weights_only``
unpickler refuses). Unless ``trust_checkpoint``, an archive is loaded only after checking that
it has none: its weights and constants are plain tensor payloads (the configs say
``use_pickle: false`` and hold no custom objects) and each pickle in it loads with
``weights_only=True``.
"""
from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import torch
from torch import nn

from ..engine import first_line
from ..errors import CheckpointError
from .checkpoint import FileFormat, LoadedModel, register_file_format


def is_exported_program(path: Path) -> bool:
    """True for a ``torch.export.save`` archive (it has an ``archive_format`` of ``pt2``, or the
    older ``serialized_exported_program.json``)."""
    if not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.rsplit("/", 1)[-1] in ("archive_format", "serialized_exported_program.json")
                       for name in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def pickled_parts(path: Path) -> list[str]:
    """The parts of a ``.pt2`` archive that ``torch.export.load`` would fully unpickle (empty: safe)."""
    found = []
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        if not any(name.rsplit("/", 1)[-1] == "archive_format" for name in names):
            return ["the archive is in torch's older export format (a pickled state_dict)"]
        for name in names:
            if name.endswith(("_weights_config.json", "_constants_config.json")):
                try:
                    entries = json.loads(archive.read(name)).get("config", {})
                except (ValueError, AttributeError):
                    found.append(f"{name} is not a JSON config")
                    continue
                for fqn, entry in entries.items():
                    if entry.get("use_pickle") or ("constants" in name and
                                                   not str(entry.get("path_name", "")).startswith("tensor_")):
                        found.append(f"{fqn} is stored as a pickled object")
            elif name.endswith(".pt"):
                try:
                    torch.load(io.BytesIO(archive.read(name)), map_location="cpu", weights_only=True)
                except Exception:
                    found.append(f"{name} needs full unpickling")
    return found


class ExportedModule(nn.Module):
    """An exported program's module as a plain classifier (exported modules refuse ``.eval()``;
    the program is already traced in the mode it was exported in)."""

    def __init__(self, program_module: nn.Module):
        super().__init__()
        self.program = program_module

    def train(self, mode: bool = True) -> "ExportedModule":
        self.training = mode
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.program(x)


def program_signature(program) -> tuple[tuple[int, ...] | None, int | None, bool]:
    """(input shape without the batch, class count, whether the batch dimension is dynamic) of a
    single-input, single-output program (None where the signature does not say)."""
    inputs = [node for node in program.graph.nodes
              if node.op == "placeholder" and node.name in program.graph_signature.user_inputs]
    outputs = [node for node in program.graph.nodes if node.op == "output"]
    if len(inputs) != 1:
        raise CheckpointError(f"the exported program takes {len(inputs)} inputs; a classifier takes one batch")
    value = inputs[0].meta.get("val")
    shape = None if value is None else tuple(value.shape)
    dynamic = shape is not None and not isinstance(shape[0], int)
    input_shape = None if shape is None or not all(isinstance(s, int) for s in shape[1:]) else shape[1:]
    result = outputs[0].meta.get("val") if outputs else None
    result = result[0] if isinstance(result, (tuple, list)) and len(result) == 1 else result
    classes = result.shape[-1] if isinstance(result, torch.Tensor) and result.ndim == 2 else None
    return input_shape, (int(classes) if isinstance(classes, int) else None), dynamic


def load_exported(path: Path, spec: str, arch: str | None = None, trust_checkpoint: bool = False) -> LoadedModel:
    """A ``.pt2`` classifier, with the input shape and class count of its signature (see the module docstring)."""
    if not trust_checkpoint:
        unsafe = pickled_parts(path)
        if unsafe:
            raise CheckpointError(f"exported program {path} needs full unpickling, which can run arbitrary code "
                                  f"({unsafe[0]}); pass --trust-checkpoint only if you trust its source")
    try:
        program = torch.export.load(str(path))
    except Exception as exc:
        raise CheckpointError(f"cannot read exported program {path}: {first_line(exc)}") from None
    input_shape, num_classes, dynamic = program_signature(program)
    if not dynamic:
        raise CheckpointError(f"exported program {path} has a fixed batch size; export it with a dynamic batch "
                              "dimension: dynamic_shapes=({0: torch.export.Dim('batch')},)")
    return LoadedModel(ExportedModule(program.module()), spec, arch, num_classes, input_shape)


register_file_format(FileFormat("torch.export", is_exported_program, load_exported, "a torch.export program (.pt2)"))
