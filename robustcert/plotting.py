"""Figures from result files: certified accuracy against radius, one curve per file.

Headless by construction: figures are built with the object-oriented API
(``matplotlib.figure.Figure``, rendered by Agg for PNG, by the PDF/SVG backends for those files),
so no display is needed and pyplot's global backend is never touched (a notebook keeps its
inline backend). :func:`draw_certified_accuracy` draws on any Axes, e.g. one from
``plt.subplots()`` in a notebook.

Which curve a file gets is decided by its columns (:data:`CURVES`): a certify TSV
(``radius``, ``correct``) gives a certified-accuracy curve. Another kind of result (e.g. an RL
policy TSV with ``budget`` and ``certified_return``) plugs in with :func:`register_curve`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from .errors import ResultsError
from .files import check_derived_output, existing_result_kind, header_columns, read_sidecar, write_derived_file
from .radius import largest_gaussian_radius
from .results import (
    NORMS, certified_accuracy, checked_frame, convert_radii, default_labels, norm_labels, read_policy_certificate,
    read_results, result_norm, run_mode,
)

FORMATS = ("png", "pdf", "svg")


class PlotError(ResultsError):
    """A figure cannot be made from the given files or written to the given path."""


@dataclass(frozen=True)
class CurveKind:
    """How to plot one kind of result file.

    ``columns``: the header columns that identify the kind; ``read(path)`` returns a DataFrame;
    ``draw(ax, frame, label, options)`` adds one curve and returns the largest x it drew;
    ``xlabel``/``ylabel`` label the axes.
    """

    name: str
    columns: frozenset
    read: Callable[[Path], pd.DataFrame]
    draw: Callable
    xlabel: str
    ylabel: str
    ylim: tuple | None = (0, 1.02)  # None: from 0 to the data's top


CURVES: list[CurveKind] = []


def register_curve(kind: CurveKind) -> CurveKind:
    """Add a kind of result file to :func:`plot_files` (checked in registration order)."""
    CURVES[:] = [k for k in CURVES if k.name != kind.name] + [kind]
    return kind


def certified_accuracy_curve(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """The exact certified-accuracy step function of a certify DataFrame.

    Returns breakpoints ``radii`` (0 and every distinct certified radius of a correct row, sorted)
    and ``accuracy[k]`` = certified accuracy at ``radii[k]``. The function is constant on each
    interval (radii[k-1], radii[k]] (inclusive comparison) and 0 beyond the last radius.
    """
    if "radius" not in frame.columns:
        raise PlotError("certified accuracy needs a certify file with a radius column (this is a predict file)")
    correct = frame["correct"].to_numpy().astype(bool)
    radii = np.unique(np.concatenate([[0.0], frame["radius"].to_numpy(dtype=float)[correct]]))
    return radii, certified_accuracy(frame, radii)


def certification_limit(record: dict | None) -> float | None:
    """The largest radius a run could certify, from its sidecar: sigma * Phi^-1(alpha^(1/n)) for a
    fixed-n Gaussian CERTIFY run (``--method cohen`` without ``--sequential`` or ``--sound-float``;
    see :func:`robustcert.radius.largest_gaussian_radius`). None for other runs (sequential, sound,
    dual, lvm, l1 and l0 radii follow other bounds or formulas) and for files without a sidecar (the
    published ones)."""
    if not record or record.get("kind") != "certify" or record.get("method") != "cohen":
        return None
    parameters = record.get("parameters") or {}
    if parameters.get("sequential") or parameters.get("sound_float") or \
            record.get("noise", "gaussian") != "gaussian" or record.get("norm", "l2") != "l2":
        return None  # other bounds or radii: no closed-form limit drawn
    try:
        return largest_gaussian_radius(float(parameters["sigma"]), int(parameters["n"]), float(parameters["alpha"]))
    except (KeyError, TypeError, ValueError):
        return None


LIMIT_NOTE = "dotted: largest radius its n and alpha can certify"


def draw_certified_accuracy(ax, frame: pd.DataFrame, label: str, options: dict | None = None) -> float:
    """Draw one certified-accuracy curve (a step function, see certified_accuracy_curve) on ``ax``.

    ``options['max_radius']`` extends the last step to that radius; ``options['limit']`` (see
    :func:`certification_limit`) draws a dotted vertical line in the curve's colour where the run
    could certify no further: the drop of the curve there is a property of n and alpha, not of the
    model. Returns the largest radius drawn.
    """
    options = options or {}
    radii, accuracy = certified_accuracy_curve(frame)
    limit = options.get("limit")
    end = max(float(options.get("max_radius") or 0.0), float(radii[-1]) * 1.05, (limit or 0.0) * 1.05, 1e-3)
    # left-continuous steps: value accuracy[k] on (radii[k-1], radii[k]], then 0 up to `end`
    xs = np.concatenate([radii, [end]])
    ys = np.concatenate([accuracy, [0.0]])
    (line,) = ax.step(xs, ys, where="pre", label=label)
    if limit is not None:
        ax.axvline(limit, color=line.get_color(), linestyle=":", linewidth=1.2)
    return end


CERTIFIED_ACCURACY = register_curve(CurveKind(
    name="certified accuracy",
    columns=frozenset({"idx", "label", "predict", "radius", "correct"}),
    read=read_results,
    draw=draw_certified_accuracy,
    xlabel="radius (l2, pixel units in [0,1])",
    ylabel="certified accuracy",
))


def curve_kind(path: str | Path) -> CurveKind:
    """The registered kind whose columns the file's header holds."""
    columns = header_columns(path)
    for kind in CURVES:
        if kind.columns <= columns:
            return kind
    if existing_result_kind(path) == "attack":
        raise PlotError(f"{path} is an attack TSV (robustcert attack): it has one radius, the attack's eps, so "
                        f"there is no curve to plot; 'robustcert table {path} CERTIFY.tsv' sets its empirical "
                        "accuracy beside the certified accuracy at r = eps")
    if {"idx", "label", "predict", "correct"} <= columns:
        raise PlotError(f"{path} is a predict file (no radius column): there is no curve to plot")
    raise PlotError(f"{path}: no plot for a TSV with columns {sorted(columns)}")


def radius_axis(paths: Sequence[str | Path], labels: Sequence[str], mixed_norms: bool,
                norm: str | None = None) -> tuple[str, list[str]]:
    """The radius axis label of certify files and their curve labels: one norm (read from the
    sidecars, or ``norm`` when the radii are converted to it), or with ``mixed_norms`` several,
    each label then naming its own."""
    norms = [norm or result_norm(path) for path in paths]
    labels = norm_labels(paths, labels, norms, mixed_norms)
    if len(set(norms)) > 1:
        return "radius (norm in each label; not comparable across norms)", labels
    return NORMS[norms[0]].axis_label, labels


def curve_labels(paths: Sequence[str | Path]) -> list[str]:
    """Default legend entries: the shortest distinct file name ends (:func:`default_labels`), with
    the noise level from each file's sidecar when it has one (``run, sigma=0.25``)."""
    labels = []
    for label, path in zip(default_labels(paths), paths):
        sigma = ((read_sidecar(path) or {}).get("parameters") or {}).get("sigma")
        labels.append(f"{label}, sigma={sigma:g}" if isinstance(sigma, (int, float)) else label)
    return labels


def draw_files(ax, paths: Sequence[str | Path], labels: Sequence[str] | None = None,
               max_radius: float | None = None, mixed_norms: bool = False, norm: str | None = None) -> CurveKind:
    """Draw one curve per result file on ``ax`` (all files of one kind, and for certify files of
    one norm unless ``mixed_norms``), with axes labels and legend. ``norm="linf"`` converts l2 and
    l1 radii to l-infinity ones (:func:`robustcert.results.convert_radii`). A file with duplicated
    rows, an unfinished run or missing rows draws with a warning, as in tables
    (:mod:`robustcert.results.integrity`); a sequential target-radius run's label says so.

    Legend entries: ``labels``, or :func:`curve_labels`. Certified-accuracy curves of fixed-n
    CERTIFY runs get a dotted line at the largest radius their n and alpha allow
    (:func:`certification_limit`, read from the sidecar), explained in the legend
    (:data:`LIMIT_NOTE`). Returns the kind of curve drawn.
    """
    if not paths:
        raise PlotError("no result files given")
    if labels is None:
        labels = curve_labels(paths)
    elif len(labels) != len(paths):
        raise PlotError(f"got {len(labels)} labels for {len(paths)} files")
    kinds = {kind.name: kind for kind in map(curve_kind, paths)}
    if len(kinds) > 1:
        raise PlotError(f"cannot plot different kinds of result files together: {', '.join(kinds)}")
    kind = next(iter(kinds.values()))
    xlabel = kind.xlabel
    frames = [checked_frame(path, kind.read(path)) if kind is CERTIFIED_ACCURACY else kind.read(path)
              for path in paths]
    if kind is CERTIFIED_ACCURACY:
        modes = [run_mode(read_sidecar(path)) for path in paths]
        labels = [f"{label} [{mode}]" if mode else label for label, mode in zip(labels, modes)]
        if norm is not None:
            frames = [convert_radii(frame, result_norm(path), norm, path) for frame, path in zip(frames, paths)]
        xlabel, labels = radius_axis(paths, labels, mixed_norms, norm)
    limits = [certification_limit(read_sidecar(path)) if kind is CERTIFIED_ACCURACY and norm in (None, "l2")
              else None for path in paths]
    right = max(kind.draw(ax, frame, label, {"max_radius": max_radius, "limit": limit})
                for frame, label, limit in zip(frames, labels, limits))
    ax.set_xlim(0, max_radius if max_radius else right)
    if kind.ylim is not None:
        ax.set_ylim(*kind.ylim)
    else:  # e.g. returns: from 0 (or the lowest value drawn) up to the data
        ax.set_ylim(bottom=min(0.0, ax.get_ylim()[0]))
    if kind is CERTIFIED_ACCURACY and not mixed_norms and (norm or result_norm(paths[0])) == "l0":
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # l0 radii count pixels
    ax.set_xlabel(xlabel)
    ax.set_ylabel(kind.ylabel)
    ax.grid(alpha=0.3)
    handles = ax.get_legend_handles_labels()[0]
    if any(limit is not None for limit in limits):
        from matplotlib.lines import Line2D

        handles.append(Line2D([], [], color="grey", linestyle=":", linewidth=1.2, label=LIMIT_NOTE))
    ax.legend(handles=handles, loc="best", fontsize="small")
    return kind


def plot_files(paths: Sequence[str | Path], out: str | Path, labels: Sequence[str] | None = None,
               max_radius: float | None = None, title: str | None = None, mixed_norms: bool = False,
               norm: str | None = None, force: bool = False) -> Path:
    """Plot one curve per result file into ``out`` (.png, .pdf or .svg): :func:`draw_files` on a
    new figure. ``out`` may not be one of the inputs, a result file, or a file that is not an
    earlier figure of this function (``force``: any file robustcert knows nothing about;
    :func:`robustcert.files.check_derived_output`).

    Returns the path written. The image is written to a temporary file and moved into place, so a
    failure never leaves a truncated figure behind.
    """
    from matplotlib.figure import Figure

    out = Path(out)
    fmt = out.suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        raise PlotError(f"cannot write a figure to {out}: use a .png, .pdf or .svg file name")
    if not out.parent.is_dir():
        raise PlotError(f"output folder does not exist: {out.parent}")
    if not paths:
        raise PlotError("no result files given")
    check_derived_output(out, paths, "figure", "figure", force)
    figure = Figure(figsize=(5.5, 3.8), layout="constrained")
    ax = figure.add_subplot()
    draw_files(ax, paths, labels, max_radius, mixed_norms, norm)
    if title:
        ax.set_title(title)
    return write_derived_file(out, lambda temporary: figure.savefig(temporary, format=fmt, dpi=150), paths,
                              "figure", force=force)


# --------------------------------------------------------------------------- policy smoothing (RL)
def draw_certified_return(ax, frame: pd.DataFrame, label: str, options: dict | None = None) -> float:
    """Certified expected return (Kumar et al. 2022) against the episode budget B, one line per file."""
    ax.plot(frame["budget"], frame["certified_return"], marker="o", markersize=3, label=label)
    return max(float(frame["budget"].max()), 1e-3)


CERTIFIED_RETURN = register_curve(CurveKind(
    name="certified return",
    columns=frozenset({"budget", "certified_return"}),
    read=read_policy_certificate,
    draw=draw_certified_return,
    xlabel="episode budget B (l2 over all steps, observation units)",
    ylabel="certified expected return",
    ylim=None,
))


def draw_certificate_against_attack(ax, certificates: dict[str, pd.DataFrame], attacked: pd.DataFrame) -> None:
    """One panel in the form of Kumar et al. (2022)'s figures: certified return beside attacked return.

    Args:
        ax: the matplotlib axes to draw on.
        certificates: bound name (``dkw``, ``clopper-pearson``) -> certify-policy table (columns
            ``budget``, ``certified_return``): the certified expected return against the episode
            budget B, one line per bound (DKW solid, the others dashed).
        attacked: the strongest attack per budget (columns ``budget``, ``attacked_mean``,
            ``attacked_sem``): its mean return with 2 standard errors, which must stay above the
            certificate.
    """
    for bound, frame in certificates.items():
        ax.plot(frame["budget"], frame["certified_return"], "-" if bound == "dkw" else "--", marker="o",
                markersize=3, label=f"certified E[R] ({bound})")
    ax.errorbar(attacked["budget"], attacked["attacked_mean"], yerr=2 * attacked["attacked_sem"], fmt="s",
                color="C3", markersize=4, capsize=2, label="strongest attack (mean, 2 s.e.)")
    ax.set_xlabel("episode budget B (l2 over all steps)")
    ax.set_ylabel("return")
    ax.grid(alpha=0.3)
