"""Result types: plain dataclasses that serialise to dict / JSON."""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

ABSTAIN = -1
"""The predicted class of an abstention (the reference format's -1); its radius is 0.0 and it counts as wrong."""


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        return value.item()
    return value


class _ResultMixin:
    """Behaviour shared by Certificate and Prediction."""

    prediction: int

    @property
    def abstained(self) -> bool:
        return self.prediction == ABSTAIN

    def correct(self, label: int) -> bool:
        """True when the result predicts ``label`` (an abstention is never correct)."""
        return self.prediction != ABSTAIN and self.prediction == int(label)

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(asdict(self))

    def to_json(self, **kwargs) -> str:
        return json.dumps(self.to_dict(), **kwargs)


@dataclass
class Certificate(_ResultMixin):
    """A certified prediction of a smoothed classifier at one input.

    With probability at least 1 - alpha over the sampling, the smoothed classifier predicts
    ``prediction`` at every point within distance ``radius`` of the input, measured in ``norm``
    (no claim when ``prediction == ABSTAIN``; then ``radius == 0.0``): "l2" (Gaussian noise),
    "l1" (Laplace or uniform noise; the ball is open, distance < radius, as for l2) or "l0"
    (randomized ablation: any change of at most ``radius`` pixels). ``alpha_spending`` lists
    each bound used and the share of alpha it was given; the shares sum to ``alpha``. ``sigma``
    is the noise's per-coordinate standard deviation (None for ablation, which has no noise level).
    """

    prediction: int
    radius: float
    p_lower: float
    counts: list[int]
    n0: int
    n: int
    alpha: float
    sigma: float | None
    method: str
    seed: int | None
    index: int = 0
    alpha_spending: dict[str, float] = field(default_factory=dict)
    samples_used: int = 0
    time: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)
    norm: str = "l2"


@dataclass
class Prediction(_ResultMixin):
    """A prediction of a smoothed classifier (Cohen et al. 2019, PREDICT).

    With probability at least 1 - alpha, ``prediction`` is the smoothed classifier's class
    unless it is ``ABSTAIN``.
    """

    prediction: int
    counts: list[int]
    n: int
    alpha: float
    sigma: float
    method: str
    seed: int | None
    index: int = 0
    p_value: float = 1.0
    alpha_spending: dict[str, float] = field(default_factory=dict)
    samples_used: int = 0
    time: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)
