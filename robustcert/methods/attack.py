"""PGD on the smoothed classifier (Salman et al., NeurIPS 2019, "Provably robust deep learning via
adversarially trained smoothed classifiers", SmoothAdv).

The attack targets the *soft* smoothed classifier G(x) = E_delta[softmax(f(x + delta))], estimated
with m noise draws delta_1, ..., delta_m ~ N(0, sigma^2 I) (their eq. (S)), and maximises its
cross-entropy at the label y over the l2 ball of radius eps around x, inside the image box:

    x_adv = argmax_{||x' - x||_2 <= eps, x' in [0,1]^d}  -log( (1/m) sum_i softmax(f(x' + delta_i))_y )

with k steps of normalised-gradient ascent from x' = x (their PGD_L2 attack):

    g      <- grad_{x'} of the objective above (the draws delta_i fixed for all k steps)
    x'     <- x' + a * g / ||g||_2,            a = 2 eps / k (default step size)
    x'     <- clip(x', 0, 1)                   (stay an image)
    x'     <- x + (x' - x) * min(1, eps / ||x' - x||_2)   (project back onto the ball)

This is the order of the paper's public code (``PGD_L2`` in Salman et al.'s smoothing-adversarial
repository: after the SGD step on the normalised gradient, ``delta`` is clamped so that x + delta
is in [0, 1], then ``renorm`` scales it to l2 norm at most eps): clip first, then renormalise.
Scaling x' - x towards 0 keeps x' in [0, 1] (the box is convex and holds x), so the result is in
both sets; it is not the exact projection onto their intersection. log (1/m) sum_i softmax_i is
computed as logsumexp_i(log_softmax_i) - log m, so the gradient does not vanish where a softmax
rounds to 1.

The noise draws are seeded per input (``input_generator(device, seed, index, "attack")``, one
draw of m samples through the engine's noise object), so an attack is reproducible and its noise
is independent of the samples a later PREDICT or CERTIFY draws (other stage names).

What the attack shows: if PREDICT at x_adv (on fresh noise) returns a class other than y, the
smoothed classifier is not robust at x within eps (up to PREDICT's error rate alpha). An
abstention shows nothing (g(x_adv) may well be y), so it is not a success of the attack. The
fraction of inputs not shown non-robust (PREDICT returned no wrong class, at x or at x_adv) is an
*empirical* robust accuracy: an UPPER bound on the true robust accuracy (a stronger attack can
only lower it), never a certificate (:func:`robustcert.results.attack_summary`).

SmoothAdv training (:mod:`robustcert.runs.train`, ``adversarial=eps``) replaces each clean training
batch by this attack's output on the current model (eval mode) with the batch's own noise draws,
then trains on x_adv + delta_i (Salman et al., Algorithm 1 with their fixed-noise PGD).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from ..engine import AdditiveNoise, GaussianNoise, input_generator
from ..errors import InvalidArgumentError, check_count, check_sigma

ATTACK_STAGE = "attack"
PAPER = "Salman et al., NeurIPS 2019 (SmoothAdv PGD on the soft smoothed classifier)"


def check_eps(eps) -> float:
    """eps: the l2 radius of the attack, a finite number > 0."""
    return check_sigma(eps, "eps")


def smoothed_log_probability(model: Callable, points: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """log G(x') = log (1/m) sum_i softmax(f(x' + delta_i)): (B, K) for points (B, *shape) and
    noise (m, B, *shape) (copy-major, as the training loop lays out noisy copies)."""
    copies = noise.shape[0]
    noisy = (points.unsqueeze(0) + noise).reshape(copies * len(points), *points.shape[1:])
    log_p = torch.log_softmax(model(noisy).float(), dim=-1).view(copies, len(points), -1)
    return torch.logsumexp(log_p, dim=0) - math.log(copies)


def pgd_on_smoothed(model: Callable, xs: torch.Tensor, labels: torch.Tensor, noise: torch.Tensor, eps: float,
                    steps: int, step_size: float | None = None) -> torch.Tensor:
    """The attack of the module docstring with given noise draws (m, B, *shape); returns x_adv
    (B, *shape), detached. Gradients flow to the inputs only: the model's parameters get none."""
    eps, steps = check_eps(eps), check_count(steps, "steps")
    step = 2.0 * eps / steps if step_size is None else check_sigma(step_size, "step_size")
    xs = xs.detach()
    noise = noise.detach()
    view = (-1,) + (1,) * (xs.ndim - 1)
    adversarial = xs.clone()
    for _ in range(steps):
        adversarial.requires_grad_(True)
        loss = -smoothed_log_probability(model, adversarial, noise).gather(1, labels.view(-1, 1)).sum()
        (gradient,) = torch.autograd.grad(loss, adversarial)
        with torch.no_grad():
            norms = gradient.flatten(1).norm(dim=1).clamp_min(1e-12).view(view)
            adversarial = (adversarial + step * gradient / norms).clamp_(0.0, 1.0)
            offset = adversarial - xs
            scale = (eps / offset.flatten(1).norm(dim=1).clamp_min(1e-12)).clamp(max=1.0).view(view)
            adversarial = xs + offset * scale
    return adversarial.detach()


@dataclass
class AttackResult:
    """The adversarial points of a batch and their l2 distances to the clean inputs."""

    adversarial: torch.Tensor   # (B, *shape), in [0, 1], within eps of the inputs
    distance: list[float]        # ||x_adv - x||_2 per input


class SmoothedPGD:
    """SmoothAdv's PGD attack on the smoothed classifier of ``model`` (see the module docstring).

    Args:
        model: the base classifier (a torch module; put it in eval mode for batch norm).
        sigma: the smoothing noise level, or ``noise``: an additive engine noise (GaussianNoise,
            LaplaceNoise, UniformNoise) of the smoothed classifier.
        eps: l2 radius of the attack (pixel units); steps: k; samples: m noise draws per input;
            step_size: default 2 eps / k.
    """

    def __init__(self, model: Callable, sigma: float | None = None, eps: float = 0.5, steps: int = 20,
                 samples: int = 32, step_size: float | None = None, noise: AdditiveNoise | None = None):
        if noise is None:
            noise = GaussianNoise(check_sigma(sigma))
        if not isinstance(noise, AdditiveNoise):
            raise InvalidArgumentError(f"the PGD attack needs additive noise (gaussian, laplace, uniform), got "
                                       f"{getattr(noise, 'name', type(noise).__name__)}")
        self.model, self.noise = model, noise
        self.eps = check_eps(eps)
        self.steps = check_count(steps, "steps")
        self.samples = check_count(samples, "m (noise samples of the attack)")
        self.step_size = None if step_size is None else check_sigma(step_size, "step_size")

    def settings(self) -> dict:
        """What a run records about the attack (compared when it is resumed)."""
        return {"attack": "smoothadv-pgd", "eps": self.eps, "steps": self.steps, "attack_samples": self.samples,
                "step_size": 2.0 * self.eps / self.steps if self.step_size is None else self.step_size,
                "attack_noise": f"{self.noise.name}, {self.samples} draws per input fixed over the steps, "
                                f"stage '{ATTACK_STAGE}'"}

    def draw_noise(self, xs: torch.Tensor, seed: int, indices: Sequence[int]) -> torch.Tensor:
        """(m, B, *shape): m draws per input from its own generator (seed, index, "attack")."""
        noise = torch.empty((len(xs), self.samples, *xs.shape[1:]), device=xs.device, dtype=xs.dtype)
        for row, index in enumerate(indices):
            self.noise.draw(noise[row].view(self.samples, -1), input_generator(xs.device, seed, index, ATTACK_STAGE))
        return noise.transpose(0, 1)

    def attack_batch(self, xs: torch.Tensor, labels, seed: int = 0, indices: Sequence[int] | None = None
                     ) -> AttackResult:
        """Attack a batch of inputs (B, *shape) in [0, 1] with true labels."""
        indices = list(range(len(xs))) if indices is None else [int(i) for i in indices]
        if len(indices) != len(xs):
            raise InvalidArgumentError(f"got {len(indices)} indices for {len(xs)} inputs")
        labels = torch.as_tensor(labels, device=xs.device, dtype=torch.long).view(-1)
        noise = self.draw_noise(xs, seed, indices)
        adversarial = pgd_on_smoothed(self.model, xs, labels, noise, self.eps, self.steps, self.step_size)
        distance = (adversarial - xs).flatten(1).norm(dim=1).tolist()
        return AttackResult(adversarial, distance)
