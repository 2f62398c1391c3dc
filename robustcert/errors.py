"""Exceptions and argument checks shared by every robustcert module.

Every problem a user can cause (bad sigma, alpha, sample counts, shapes, checkpoints, data)
raises a :class:`RobustCertError` subclass whose message names the problem in one line. The
CLI prints that line and exits non-zero; nothing is certified from invalid input.
"""
from __future__ import annotations

import math
import numbers
import warnings


class RobustCertError(Exception):
    """Base class of every error robustcert raises on purpose."""


class InvalidArgumentError(RobustCertError, ValueError):
    """An argument is outside its valid range (sigma <= 0, alpha outside (0,1), n < 1, ...)."""


class ShapeError(RobustCertError, ValueError):
    """An input or a model output has the wrong shape (or the wrong number of classes)."""


class ModelOutputError(RobustCertError, ValueError):
    """The base model returned NaN or infinite values (or, in the floating-point-sound mode, outputs
    that depend on the other rows of the batch)."""


class CheckpointError(RobustCertError):
    """A checkpoint is missing, unreadable, of an unknown format or needs unsafe unpickling."""


class DataError(RobustCertError):
    """A dataset specification is unknown or its files are missing or unreadable."""


class CLIError(RobustCertError):
    """A bad command-line argument or argument combination."""


class RunError(RobustCertError):
    """A dataset run cannot start or resume: its output exists, does not match, or cannot be written."""


class ResultsError(RobustCertError):
    """A result file is missing, unreadable or not in the expected format, or a table or figure
    cannot be written where asked."""


class ResourceError(RobustCertError):
    """The device ran out of memory even at the smallest batch (one sample per forward pass)."""


def check_sigma(sigma: float, name: str = "sigma") -> float:
    """Return sigma as a float, or raise if it is not a finite number > 0."""
    try:
        value = float(sigma)
    except (TypeError, ValueError):
        raise InvalidArgumentError(f"{name} must be a number > 0, got {sigma!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise InvalidArgumentError(f"{name} must be a finite number > 0, got {sigma!r}")
    return value


def check_alpha(alpha: float, name: str = "alpha") -> float:
    """Return alpha as a float, or raise if it is not strictly between 0 and 1."""
    try:
        value = float(alpha)
    except (TypeError, ValueError):
        raise InvalidArgumentError(f"{name} must be a number in (0, 1), got {alpha!r}") from None
    if not (0.0 < value < 1.0):
        raise InvalidArgumentError(f"{name} must be in the open interval (0, 1), got {alpha!r}")
    return value


def check_budget(budget: float, name: str = "budget") -> float:
    """Return an attack budget as a float, or raise if it is not a finite number >= 0."""
    try:
        value = float(budget)
    except (TypeError, ValueError):
        raise InvalidArgumentError(f"{name} must be a number >= 0, got {budget!r}") from None
    if not math.isfinite(value) or value < 0:
        raise InvalidArgumentError(f"{name} must be a finite number >= 0, got {budget!r}")
    return value


def check_count(value: int, name: str, minimum: int = 1) -> int:
    """Return value as an int, or raise if it is not a whole number >= minimum."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InvalidArgumentError(f"{name} must be a whole number >= {minimum}, got {value!r}")
    if value < minimum:
        raise InvalidArgumentError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def renamed_argument(value, old_value, old: str, new: str, owner: str):
    """The value of an argument renamed from ``old`` to ``new``: ``value``, or ``old_value`` (with a
    FutureWarning) when only the old name was given; InvalidArgumentError when both were."""
    if old_value is None:
        return value
    if value is not None:
        raise InvalidArgumentError(f"{owner}: give {new} only ({old} is its deprecated name)")
    warnings.warn(f"{owner}: the argument {old} is deprecated, call it {new}", FutureWarning, stacklevel=3)
    return old_value


def note_interruption(exc: BaseException, note: str) -> None:
    """Attach to an interruption (Ctrl-C, a termination signal) what the interrupted run leaves
    behind, in one clause (``"3 of 40 rows are in out.tsv; --resume continues"``); the command
    line prints it instead of the command's general note."""
    if isinstance(exc, KeyboardInterrupt):
        exc.interrupted_note = note


class RobustCertWarning(UserWarning):
    """Something a user must know about a run or a result file that does not stop the command (a
    result file with duplicated rows, an interrupted run, a noise level other than the one a model
    was trained at). The command line prints it as one line ``robustcert: warning: ...``."""


def warn(message: str) -> None:
    """Issue a :class:`RobustCertWarning` (shown once per message)."""
    warnings.warn(message, RobustCertWarning, stacklevel=3)


class MissingDependencyError(RobustCertError, ImportError):
    """An optional dependency (an extra: diffusion, rl, ...) is not installed."""


def install_hint(extra: str) -> str:
    """How to install an extra, from a checkout first (robustcert is installed from its source
    folder) and from a package index."""
    return f'pip install -e ".[{extra}]" in the robustcert checkout (pip install "robustcert[{extra}]" from a package index)'


def require_extra(module: str, extra: str, needed_for: str):
    """Import ``module`` of the optional ``extra``, or raise MissingDependencyError in one line."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingDependencyError(f"{needed_for} needs the {extra} extra ({module} is not installed): "
                                     f"{install_hint(extra)}") from None
