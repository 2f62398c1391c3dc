"""An empirical adaptive attack on a smoothed agent, to hold attacked returns against the certificate.

Threat model of Kumar, Levine and Feizi (2022): perturbations eps_t of the per-step observations
with sqrt(sum_t ||eps_t||^2) <= B over the episode, chosen adaptively; the agent still adds its
own fresh noise after the perturbation (the rollout loop does that, and enforces the budget).

:class:`GradientAttack` spends the budget across the first ``attack_steps`` = H steps of each
episode, B / sqrt(H) per step (so that H full steps use exactly B), never more than what is left
of the budget (the remaining budget is tracked per episode by the loop). At each attacked step it
runs PGD in the l2 ball of that radius on the expectation over the agent's noise (EOT with
``eot_samples`` noise draws, fixed during the PGD iterations) of the logit margin

    m(eps) = logit_{a*}(agent input) - max_{a != a*} logit_a(agent input),

where a* is the action the policy takes on the clean, noise-free observation: minimising m
pushes the smoothed agent away from the action it would otherwise take. For continuous actions
(``discrete=False``: the module returns the action itself, e.g. Mountain Car's force) the
objective is the component of the action along the clean action's direction,
m(eps) = <f(agent input), a* / ||a*||>, so that minimising it pushes the action the other way.
The agent input is the frame stack of the previous noisy frames (known to an adaptive adversary)
and the new frame o_t + eps + delta (padded with it at the start of an episode): frames of any
shape (vectors, 84x84 Atari frames). Needs a differentiable policy module.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ..engine import model_device
from ..errors import check_budget, check_count, check_sigma


class GradientAttack:
    """Per-step EOT-PGD on the logit margin, budget B spread over the first H steps (see module docstring).

    Args:
        module: torch module mapping agent inputs (N, *agent_obs_shape) to action logits (N, A).
        sigma: the agent's smoothing noise (the attack averages over it).
        budget: total l2 budget B of an episode.
        attack_steps: H, the number of steps the budget is spread over (from the episode start).
        iterations: PGD iterations per step; eot_samples: noise draws averaged per iteration.
        seed: seed of the attack's own noise draws.
        discrete: the module returns action logits (True) or the continuous action itself (False).
    """

    def __init__(self, module: torch.nn.Module, sigma: float, budget: float, attack_steps: int = 200,
                 iterations: int = 10, eot_samples: int = 8, seed: int = 0, discrete: bool = True):
        self.module = module.eval()
        self.sigma = check_sigma(sigma)
        self.budget = check_budget(budget)
        self.attack_steps = check_count(attack_steps, "attack_steps")
        self.iterations = check_count(iterations, "iterations")
        self.eot_samples = check_count(eot_samples, "eot_samples")
        self.generator = torch.Generator().manual_seed(int(seed))
        self.device = model_device(module)
        self.discrete = bool(discrete)

    def step_radius(self, remaining: np.ndarray, step: np.ndarray) -> np.ndarray:
        """min(remaining budget, B / sqrt(H)) during the first H steps, 0 afterwards."""
        per_step = self.budget / math.sqrt(self.attack_steps)
        return np.minimum(remaining, np.where(step < self.attack_steps, per_step, 0.0))

    def _agent_input(self, frames: torch.Tensor, history: torch.Tensor | None, start: torch.Tensor) -> torch.Tensor:
        """Agent inputs for new frames (m, R, *shape): frame stacks (m*R, k, *shape) or frames (m*R, *shape)."""
        m, rows = frames.shape[:2]
        if history is None:
            return frames.reshape(m * rows, *frames.shape[2:])
        k = history.shape[1] + 1
        new = frames.unsqueeze(2)
        stacked = torch.cat([history.unsqueeze(0).expand(m, *history.shape), new], dim=2)
        padded = new.expand(m, rows, k, *frames.shape[2:])
        mask = start.view(1, rows, *([1] * (stacked.ndim - 2)))
        return torch.where(mask, padded, stacked).reshape(m * rows, k, *frames.shape[2:])

    def perturb(self, clean, history, start, remaining, step) -> np.ndarray:
        eps_out = np.zeros_like(clean, dtype=np.float32)
        radius = self.step_radius(np.asarray(remaining, dtype=np.float64), np.asarray(step))
        rows = np.nonzero(radius > 0)[0]
        if len(rows) == 0:
            return eps_out
        x = torch.as_tensor(clean[rows], dtype=torch.float32, device=self.device)
        hist = None if history is None else torch.as_tensor(history[rows], dtype=torch.float32, device=self.device)
        begin = torch.as_tensor(np.asarray(start)[rows], device=self.device)
        r = torch.as_tensor(radius[rows], dtype=torch.float32, device=self.device)
        view = (-1,) + (1,) * (x.ndim - 1)
        with torch.no_grad():
            clean_output = self.module(self._agent_input(x.unsqueeze(0), hist, begin))
            target = clean_output.argmax(dim=1) if self.discrete else clean_output / clean_output.norm(
                dim=1, keepdim=True).clamp_min(1e-12)
        delta = self.sigma * torch.randn((self.eot_samples, *x.shape), generator=self.generator).to(self.device)
        eps = torch.zeros_like(x)
        lr = 2.5 * r / self.iterations
        for _ in range(self.iterations):
            eps.requires_grad_(True)
            outputs = self.module(self._agent_input(x.unsqueeze(0) + eps.unsqueeze(0) + delta, hist, begin))
            margin = self._margin(outputs.view(self.eot_samples, len(rows), -1), target)
            (grad,) = torch.autograd.grad(margin.sum(), eps)
            with torch.no_grad():
                norms = grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(view)
                eps = eps - lr.view(view) * grad / norms
                scale = (r / eps.flatten(1).norm(dim=1).clamp_min(1e-12)).clamp(max=1.0)
                eps = eps * scale.view(view)
        eps_out[rows] = eps.detach().cpu().numpy()
        return eps_out

    def _margin(self, outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """EOT mean of the objective the attack minimises, per row (see the module docstring)."""
        if not self.discrete:
            return (outputs * target.unsqueeze(0)).sum(dim=2).mean(dim=0)
        index = target.view(1, -1, 1).expand(outputs.shape[0], -1, 1)
        chosen = outputs.gather(2, index).squeeze(2)
        others = outputs.scatter(2, index, float("-inf"))
        return (chosen - others.max(dim=2).values).mean(dim=0)
