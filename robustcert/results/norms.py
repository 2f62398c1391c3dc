"""The norms radii are measured in: one registry (:data:`NORMS`) that tables, figures, the
l-infinity conversion and the command line's ``--norm`` choices all read.

A run's sidecar records the norm of its radii (``SmoothedClassifier.threat_model``); a file
without one (Cohen et al.'s reference files) is l2. Adding a norm is one :func:`register_norm`
call: its name, the label of a figure's radius axis and, when a radius in it bounds an
l-infinity one, the factor that converts it.

l-infinity radii from l2 and l1 ones: ||v||_2 <= sqrt(d) ||v||_inf and ||v||_1 <= d ||v||_inf, so
every v with ||v||_inf < R_2 / sqrt(d) (or R_1 / d) lies in the certified l2 (l1) ball. Valid and
weak: for d = 3072 (CIFAR-10) R_2 / sqrt(d) = R_2 / 55.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import pandas as pd

from ..errors import ResultsError
from ..files import read_sidecar
from .formats import is_certify_frame


@dataclass(frozen=True)
class Norm:
    """A norm certified radii can be measured in.

    Attributes:
        name: as sidecars, ``Certificate.norm`` and ``--norm`` spell it (``l2``).
        axis_label: the radius axis of a figure of radii in this norm.
        linf_divisor: d -> c with R_inf = R / c (a radius R in this norm certifies the
            l-infinity radius R / c in dimension d); None when it certifies none.
    """

    name: str
    axis_label: str
    linf_divisor: Callable[[int], float] | None = None


#: The registered norms by name (:func:`register_norm`); l2 is the default of files without a record.
NORMS: dict[str, Norm] = {}
DEFAULT_NORM = "l2"


def register_norm(norm: Norm) -> Norm:
    """Add (or replace) a norm: tables, figures and ``--norm`` know it from then on."""
    NORMS[norm.name] = norm
    return norm


register_norm(Norm("l2", "radius (l2, pixel units in [0,1])", math.sqrt))
register_norm(Norm("l1", "radius (l1, pixel units in [0,1])", float))
register_norm(Norm("linf", "radius (l-infinity, pixel units in [0,1])", lambda d: 1))
register_norm(Norm("l0", "pixels changed (l0)"))

LINF_NOTE = ("l-infinity radii converted from l2 (R / sqrt(d)) and l1 (R / d) certificates: valid lower bounds, "
             "but weak ones (an l-infinity certificate of its own would be larger)")


def get_norm(name: str, path=None) -> Norm:
    """The registered norm ``name`` (ResultsError naming ``path``'s sidecar when unknown)."""
    if name not in NORMS:
        where = f"{path}: its sidecar records an unknown norm" if path is not None else "unknown norm"
        raise ResultsError(f"{where} {name!r}; known: {', '.join(NORMS)}")
    return NORMS[name]


def result_norm(path: str | Path) -> str:
    """The norm of a result file's radii, from its sidecar; "l2" when the sidecar records none
    (Cohen et al.'s reference files, and runs of l2 methods made before norms were recorded)."""
    return get_norm(read_sidecar(path).get("norm", DEFAULT_NORM), path).name


def input_dimension(path: str | Path) -> int | None:
    """d, the number of input coordinates, from the sidecar's data section (None if unknown)."""
    shape = (read_sidecar(path).get("data") or {}).get("input_shape")
    return math.prod(int(v) for v in shape) if shape else None


def linf_radii(radii, norm: str, dimension: int):
    """The l-infinity radii that radii in ``norm`` certify in dimension d (module docstring).

    Args:
        radii: a number or an array of radii in ``norm``.
        norm: a registered norm with an l-infinity conversion.
        dimension: d, the number of input coordinates.

    Returns:
        The l-infinity radii (same type as ``radii``).
    """
    divisor = get_norm(norm).linf_divisor
    if divisor is None:
        raise ResultsError(f"{norm} radii do not convert to l-infinity radii")
    return radii / divisor(dimension)


def convert_radii(frame: pd.DataFrame, norm: str, target: str, path) -> pd.DataFrame:
    """``frame`` (a result file's rows, radii in ``norm``) with radii in ``target``: the same norm,
    or l-infinity from a norm that converts to it (:func:`linf_radii`)."""
    get_norm(target)
    if norm == target or not is_certify_frame(frame):
        return frame
    if target != "linf" or get_norm(norm).linf_divisor is None:
        convertible = [n for n, spec in NORMS.items() if spec.linf_divisor is not None and n != "linf"]
        raise ResultsError(f"{path} certifies {norm} radii, which do not convert to {target} radii "
                           f"(only {' and '.join(convertible)} radii convert, to linf)")
    dimension = input_dimension(path)
    if dimension is None:
        raise ResultsError(f"cannot convert {path} to l-infinity radii: its input dimension is unknown "
                           f"(no sidecar {Path(path).name}.json with the data's input shape)")
    converted = frame.copy()
    converted["radius"] = linf_radii(frame["radius"].to_numpy(dtype=float), norm, dimension)
    return converted


def norm_labels(paths, labels: Sequence[str], norms: Sequence[str], mixed_norms: bool) -> list[str]:
    """The labels, refusing files of different norms unless ``mixed_norms`` (then each label ends
    with its norm, e.g. ``sigma_0.25 [l1]``)."""
    if len(set(norms)) <= 1:
        return list(labels)
    if not mixed_norms:
        listed = ", ".join(f"{Path(p).name}: {n}" for p, n in zip(paths, norms))
        raise ResultsError(f"these files certify radii in different norms ({listed}), which are not comparable; "
                           f"pass --mixed-norms (mixed_norms=True) to show them together anyway, or --norm linf "
                           f"to convert l2 and l1 radii to (weak) l-infinity ones")
    return [f"{label} [{norm}]" for label, norm in zip(labels, norms)]


def name_norm_columns(table: pd.DataFrame, norm: str) -> pd.DataFrame:
    """Radius columns that say their norm (``l1 r=0.5``); l2 keeps the reference names (``r=0.5``)."""
    if norm == DEFAULT_NORM:
        return table
    return table.rename(columns={c: f"{norm} {c}" for c in table.columns if c.startswith("r=")})


def fine_radii(max_radius: float, max_columns: int = 9) -> list[float]:
    """A radius grid from 0 up to ``max_radius`` (not beyond, see
    :func:`robustcert.results.default_radii`) for small radii (l-infinity): the smallest step 1,
    2 or 5 x 10^e that needs at most ``max_columns`` points."""
    if not (math.isfinite(max_radius) and max_radius > 0):
        return [0.0]
    for exponent in range(-6, 7):
        for mantissa in (1, 2, 5):
            step = mantissa * 10.0 ** exponent
            count = int(math.floor(max_radius / step + 1e-9)) + 1
            if count <= max_columns:
                return [round(i * step, 12) for i in range(count)]
    return [0.0, max_radius]
