"""Training objectives for base classifiers of randomized smoothing: pure functions of logits.

The smoothed classifier g(x) = argmax_c P(f(x + delta) = c) is only as good as the base model f
is on *noisy* inputs, so f is trained on them. With M noisy copies x + delta_1, ..., x + delta_M
of each input (delta_i ~ N(0, sigma^2 I), the certification noise) and logits z_i = f(x + delta_i),
F_i = softmax(z_i) and F_bar = (1/M) sum_i F_i:

* Gaussian noise augmentation (Cohen, Rosenfeld and Kolter, ICML 2019):
      L = (1/M) sum_i CE(z_i, y)
  (their recipe: one copy, M = 1);
* consistency regularization (Jeong and Shin, NeurIPS 2020, eq. (8)):
      L = (1/M) sum_i CE(z_i, y) + lambda * (1/M) sum_i KL(F_bar || F_i) + eta * H(F_bar)
  with H(p) = -sum_c p_c log p_c. The KL term pulls the predictions on different noise draws
  together (a consistent f makes p_A of the smoothed classifier large, hence the radius
  sigma Phi^-1(p_A)); the entropy term keeps F_bar confident. Published: M = 2, eta = 0.5,
  lambda = 10 or 20 (MNIST: 20).

Every term is averaged over the batch. ``logits`` are (M, B, K): copy-major, so ``logits[i]``
holds the i-th noisy copy of every input of the batch.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

from .errors import InvalidArgumentError, ShapeError


class TrainingLoss(NamedTuple):
    """The objective and its parts (scalar tensors; ``consistency`` and ``entropy`` are 0 for plain CE)."""

    total: torch.Tensor
    cross_entropy: torch.Tensor
    consistency: torch.Tensor  # (1/M) sum_i KL(F_bar || F_i), before the factor lambda
    entropy: torch.Tensor      # H(F_bar), before the factor eta


def _check(logits: torch.Tensor, labels: torch.Tensor) -> None:
    if logits.ndim != 3 or labels.ndim != 1 or logits.shape[1] != labels.shape[0]:
        raise ShapeError(f"logits must be (copies, batch, classes) and labels (batch,), got {tuple(logits.shape)} "
                         f"and {tuple(labels.shape)}")


def noisy_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(1/M) sum_i CE(z_i, y), averaged over the batch."""
    _check(logits, labels)
    copies, batch, classes = logits.shape
    return F.cross_entropy(logits.reshape(copies * batch, classes).float(), labels.repeat(copies))


def consistency_terms(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``((1/M) sum_i KL(F_bar || F_i), H(F_bar))``, each averaged over the batch.

    Computed in log space: log F_bar = logsumexp_i(log F_i) - log M, so no probability is
    clamped and 0 log 0 never occurs.
    """
    log_p = F.log_softmax(logits.float(), dim=-1)                          # (M, B, K)
    log_mean = torch.logsumexp(log_p, dim=0) - math.log(logits.shape[0])  # (B, K)
    mean = log_mean.exp()
    kl = (mean * (log_mean - log_p)).sum(-1).mean()   # mean over copies and batch
    entropy = -(mean * log_mean).sum(-1).mean()
    return kl, entropy


def gaussian_augmentation_loss(logits: torch.Tensor, labels: torch.Tensor) -> TrainingLoss:
    """Cohen et al. (2019): cross-entropy on the noisy copies."""
    cross_entropy = noisy_cross_entropy(logits, labels)
    zero = cross_entropy.new_zeros(())
    return TrainingLoss(cross_entropy, cross_entropy, zero, zero)


def consistency_loss(logits: torch.Tensor, labels: torch.Tensor, lam: float, eta: float = 0.5) -> TrainingLoss:
    """Jeong and Shin (2020): CE + lambda * (1/M) sum_i KL(F_bar || F_i) + eta * H(F_bar); needs M >= 2 copies."""
    _check(logits, labels)
    if logits.shape[0] < 2:
        raise InvalidArgumentError(f"consistency regularization needs at least 2 noisy copies, got {logits.shape[0]}")
    cross_entropy = noisy_cross_entropy(logits, labels)
    kl, entropy = consistency_terms(logits)
    return TrainingLoss(cross_entropy + lam * kl + eta * entropy, cross_entropy, kl, entropy)
