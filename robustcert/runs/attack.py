"""Empirical robustness of a smoothed classifier: PGD on it, then PREDICT at the adversarial point.
What ``robustcert attack`` calls.

    from robustcert import Smooth, load_model
    from robustcert.results import attack_summary
    from robustcert.runs.attack import attack_dataset
    smoothed = Smooth(load_model("bundled:digits-0.25"), num_classes=10, sigma=0.25)
    frame = attack_dataset(smoothed, "digits", "attack.tsv", eps=0.5, steps=10, m=16, n=1000, max_inputs=20)
    attack_summary(frame)          # empirical robust accuracy at eps: an UPPER bound, not a certificate

For each input x with label y: PREDICT (Cohen et al. 2019, may abstain) at x; the SmoothAdv PGD
attack (Salman et al. 2019, :mod:`robustcert.methods.attack`) finds x_adv within eps of x (l2,
inside [0,1]) on m fixed noise draws of its own; PREDICT at x_adv on the run's prediction
samples, which the attack never saw. ``correct_adv = 1`` when PREDICT at x_adv returns y.

An input is *broken* when PREDICT at x_adv returns a class other than y; an abstention (-1), at
x or at x_adv, shows nothing and is counted apart. The fraction of inputs neither broken nor
misclassified at x is an empirical robust accuracy: every input it excludes is (up to PREDICT's
error alpha) really not robust, but an input the attack fails to break may still be breakable by a
stronger attack. So it is an UPPER bound on the robust accuracy at eps, to set beside the
certified accuracy at radius eps (a lower bound), never a certificate
(:func:`robustcert.results.attack_summary`; ``robustcert table ATTACK.tsv CERTIFY.tsv``). The
fraction with ``correct_adv`` counts abstentions as wrong: it is neither bound.

Files: the attack TSV ``idx label predict_clean predict_adv correct_adv distance time`` and its
JSON sidecar, with the rules of every dataset run (:mod:`robustcert.runs.files`: never overwrite
without ``resume``, one flushed row per input, resume checks the parameters and the model).
"""
from __future__ import annotations

import time
from pathlib import Path

import torch

from ..errors import InvalidArgumentError, check_count
from ..methods.attack import SmoothedPGD
from ..methods.cohen import PREDICT_TEST, Smooth
from ..results import attack_row
from .dataset import _run

#: The PREDICT decisions of an attack run: each is a binomial test at alpha of its own.
PREDICT_CLAIMS = "each PREDICT (at x and at x_adv) separately"


def attack_dataset(smoothed, data, out: str | Path | None = None, *, eps: float, steps: int = 20, m: int = 32,
                   step_size: float | None = None, n: int = 100_000, alpha: float = 0.001,
                   batch_size: int | str = 1000, seed: int | None = 0, skip: int = 1, max_inputs: int = -1,
                   resume: bool = False, progress: bool = True, split: str = "test", threads: int | None = None,
                   command: str | None = None):
    """Attack every ``skip``-th input of a dataset (at most ``max_inputs``) and PREDICT at the
    adversarial point; see the module docstring.

    Args:
        smoothed: a :class:`robustcert.Smooth` (additive noise; not the floating-point-sound mode,
            whose inputs must stay on a grid).
        eps: the attack's l2 radius.
        steps: its number of steps k.
        m: noise draws per input.
        step_size: the step (default 2 eps / k).
        n: PREDICT's samples.
        alpha: PREDICT's test level.
        batch_size: as for :func:`robustcert.certify_dataset` (so are the other arguments).
        seed: seeds PREDICT and the attack's own draws (stage "attack", independent of PREDICT's).

    Returns:
        A DataFrame: the TSV's columns, ``p_value_clean``, ``p_value_adv`` and ``samples_used``.
    """
    if not isinstance(smoothed, Smooth):
        raise InvalidArgumentError(f"the attack runs on Cohen et al.'s smoothed classifier (--method cohen), "
                                   f"not on {type(smoothed).__name__}")
    if smoothed.sound_float:
        raise InvalidArgumentError("the attack moves inputs off the grid of the floating-point-sound mode: "
                                   "attack without --sound-float")
    _, n, alpha, batch_size = smoothed.check_certify_args(1, n, alpha, batch_size)
    attack = SmoothedPGD(smoothed.model, eps=eps, steps=steps, samples=m, step_size=step_size,
                         noise=smoothed.make_noise(smoothed.sigma))
    samples_per_input = 2 * n + attack.steps * attack.samples  # PREDICT at x and at x_adv, the attack's draws

    def compute(batch, seed):
        def results_for(xs, batch_indices, labels):
            started = time.perf_counter()
            xs = smoothed.prepare(xs)
            clean = smoothed.predict_batch(xs, n, alpha, batch, seed, batch_indices)
            with torch.enable_grad():
                found = attack.attack_batch(xs, labels, seed, batch_indices)
            adversarial = smoothed.predict_batch(found.adversarial, n, alpha, batch, seed, batch_indices)
            seconds = (time.perf_counter() - started) / len(batch_indices)
            rows = []
            for p, q, y, distance in zip(clean, adversarial, labels, found.distance):
                rows.append((attack_row(p.index, y, p.prediction, q.prediction, distance, seconds),
                             {"idx": p.index, "label": y, "predict_clean": p.prediction, "predict_adv": q.prediction,
                              "correct_adv": int(q.correct(y)), "distance": distance, "time": seconds,
                              "p_value_clean": p.p_value, "p_value_adv": q.p_value,
                              "samples_used": samples_per_input}))
            return rows
        return results_for

    parameters = {"sigma": smoothed.sigma, **attack.settings(), "n": n, "alpha": alpha,
                  "alpha_spending": {PREDICT_TEST: alpha}, "alpha_applies_to": PREDICT_CLAIMS,
                  "claim": "empirical, not a certificate: the inputs neither broken (PREDICT at x_adv returns "
                           "another class) nor wrong at x bound the robust accuracy at eps from above; an "
                           "abstention shows nothing"}
    return _run("attack", smoothed, data, out, samples_per_input=samples_per_input,
                batch_size=batch_size, seed=seed, skip=skip, max_inputs=max_inputs, resume=resume, progress=progress,
                split=split, threads=threads, distributed=False, command=command, parameters=parameters, options={},
                compute=compute, per_call=lambda batch: max(1, check_count(batch, "batch_size") // attack.samples))
