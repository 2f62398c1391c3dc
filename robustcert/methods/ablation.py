"""Randomized ablation: l0 certificates, the number of pixels an attacker may change (Levine and
Feizi, AAAI 2020, "Robustness certificates for sparse adversarial attacks by randomized ablation").

Smoothed classifier g(x) = argmax_c P(f(ablate(x, T)) = c), T a uniformly random set of k of the d
pixels of x; ablate keeps the pixels in T and marks the others absent (:class:`AblationNoise`: an
input (C, H, W) becomes (2C, H, W), a kept pixel (x, 1 - x), an ablated one all zeros), so the base
model f takes 2C channels and is trained on ablated inputs (experiments/weights/train_ablation.py).

CERTIFY(f, k, x, n0, n, alpha): Cohen et al.'s algorithm with ablation in place of noise:
    counts0 <- votes of f on n0 ablated copies of x;  cA <- top index     # selection samples
    counts  <- votes of f on n fresh ablated copies                        # estimation samples
    pA      <- LowerConfBound(counts[cA], n, 1 - alpha)                    # one-sided Clopper-Pearson
    if pA <= 1/2: ABSTAIN                                                  # as CERTIFY (methods/cohen.py)
    else: return cA, rho = max { r : pA - Delta(r) > 1/2 },  Delta(r) = 1 - C(d - r, k) / C(d, k)

If x' differs from x in r pixels, the same kept set T misses all of them with probability
1 - Delta(r), and then f sees the same input at x and x'; so every class probability moves by at
most Delta(r) (derivation: :func:`robustcert.radius.ablation_radius`). alpha is spent on the one
Clopper-Pearson bound; PREDICT is Cohen et al.'s binomial test on ablated samples. The certificate
holds for any change of at most rho pixels, of any size, within [0, 1].

Published settings (the paper's code): k = 45 of 784 pixels for MNIST, 75 of 1024 for CIFAR-10,
1000 for ImageNet; n0 = 1000, n = 10000, alpha = 0.05.

Example::

    from robustcert import AblationSmooth, load_model
    smoothed = AblationSmooth(load_model("bundled:digits-ablation-k16"), num_classes=10, keep=16)
    cert = smoothed.certify(x, n0=100, n=10_000, alpha=0.001, seed=0)
    cert.radius   # pixels; cert.norm == "l0"
"""
from __future__ import annotations

from ..engine import AblationNoise
from ..errors import check_count
from ..radius import ablation_radius
from .cohen import VoteSmoothing


class AblationSmooth(VoteSmoothing):
    """Randomized ablation keeping ``keep`` pixels (Levine and Feizi 2020); see the module docstring.

    Cohen et al.'s CERTIFY and PREDICT (:class:`robustcert.methods.cohen.VoteSmoothing`) with
    ablation in place of noise: no noise level (``sigma`` is None in every certificate).

    Args:
        model: the base model; it receives the ablated encoding (2C, H, W) of inputs (C, H, W).
        num_classes: number of classes.
        keep: pixels kept in each ablated sample (k).
        options: ``device``, ``input_shape`` (of the inputs, (C, H, W); checked on every call),
            ``precision``, ``channels_last``, ``compile`` as for :class:`~robustcert.SmoothedClassifier`.
    """

    method = "ablation"
    norm = "l0"
    needs_sigma = False

    def __init__(self, model, num_classes, keep: int, **options):
        super().__init__(model, num_classes, None, **options)
        self.keep = check_count(keep, "keep")
        if self.input_shape is not None:
            AblationNoise(self.keep, self.input_shape)  # refuse keep > pixels now, not at the first input

    def make_noise(self, sigma=None):
        return AblationNoise(self.keep)

    def describe_noise(self) -> str:
        return "randomized ablation"

    def settings(self):
        return {"keep": self.keep}

    def certified_radius(self, p_a_lower: float, input_shape) -> int:
        return ablation_radius(p_a_lower, AblationNoise.pixels(tuple(input_shape)), self.keep)

    def certificate_details(self, input_shape) -> dict:
        return {"keep": self.keep, "pixels": AblationNoise.pixels(tuple(input_shape))}
