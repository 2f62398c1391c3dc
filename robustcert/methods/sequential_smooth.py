"""Cohen et al.'s smoothed classifier that certifies sequentially by default.

``SequentialSmooth(model, num_classes, sigma, target_radius=0.5)`` fixes the options of
SEQUENTIAL-CERTIFY (:mod:`robustcert.methods.sequential`) at construction, so that
``certify`` / ``certify_batch`` and :func:`robustcert.certify_dataset` run it without further
options; ``Smooth(...).certify_batch(..., sequential=True, target_radius=0.5)`` is the same call.
"""
from __future__ import annotations

from .base import DEFAULT_ALPHA, DEFAULT_BATCH, DEFAULT_N, DEFAULT_N0
from .cohen import Smooth
from .sequential import check_sequential_options


class SequentialSmooth(Smooth):
    """:class:`~robustcert.Smooth` whose ``certify`` / ``certify_batch`` run SEQUENTIAL-CERTIFY by default.

    Args:
        model: as for :class:`~robustcert.Smooth` (Gaussian noise only).
        num_classes: as for :class:`~robustcert.Smooth`.
        sigma: as for :class:`~robustcert.Smooth`.
        target_radius: a sequential option (:func:`robustcert.methods.sequential.certify_sequential`
            documents them all), checked now; so are the next eight.
        tolerance: a sequential option.
        n_max: a sequential option.
        growth: a sequential option.
        n_first: a sequential option.
        final_share: a sequential option.
        stop_alpha: a sequential option.
        stop_test: a sequential option.
        selection_lead_votes: a sequential option.
        smooth_options: the other options of :class:`~robustcert.Smooth`.
    """

    def __init__(self, model, num_classes, sigma, target_radius: float | None = None,
                 tolerance: float | None = None, n_max: int | None = None, growth: float | None = None,
                 n_first: int | None = None, final_share: float | None = None, stop_alpha: float | None = None,
                 stop_test: str | None = None, selection_lead_votes: int | None = None, **smooth_options):
        super().__init__(model, num_classes, sigma, **smooth_options)
        self.check_sequential()
        self.sequential_options = {"target_radius": target_radius, "tolerance": tolerance, "n_max": n_max,
                                   "growth": growth, "n_first": n_first, "final_share": final_share,
                                   "stop_alpha": stop_alpha, "stop_test": stop_test,
                                   "selection_lead_votes": selection_lead_votes}
        check_sequential_options(self.sigma, **self.given_options())  # refuse bad options now, not at the first input

    def given_options(self) -> dict:
        """The sequential options given at construction (None: the default)."""
        return {k: v for k, v in self.sequential_options.items() if v is not None}

    def alpha_spending(self, alpha, sequential=True, **certify_options):
        return super().alpha_spending(alpha, sequential)

    def settings(self):
        return {**super().settings(), "sequential": True, **self.given_options()}

    def certify_inputs_per_call(self, n0, n, batch_size, sequential=True, **options):
        return super().certify_inputs_per_call(n0, n, batch_size, sequential=sequential,
                                               **{**self.given_options(), **options})

    def certify_batch(self, xs, n0=DEFAULT_N0, n=DEFAULT_N, alpha=DEFAULT_ALPHA, batch_size=DEFAULT_BATCH, seed=0,
                      indices=None, sequential=True, **options):
        if not sequential:
            return super().certify_batch(xs, n0, n, alpha, batch_size, seed, indices)
        return super().certify_batch(xs, n0, n, alpha, batch_size, seed, indices, sequential=True,
                                     **{**self.given_options(), **options})
