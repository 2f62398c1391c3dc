"""Train the bundled Mountain Car policies: DAgger of the energy-pumping controller into a noisy-observation MLP.

Environment: robustcert's ``mountaincar`` (MountainCarContinuous-v0, 999 steps, return 1 if the
car reaches the flag, else 0: robustcert.rl.envs.PAPER_ENVS). The learner is a PolicyMLP
2k -> 32 -> 32 -> 1 (tanh hidden layers) whose output is the force (the environment clips it to
[-1, 1]); it sees a stack of its last k = 10 noisy observations (position, velocity) + N(0, sigma^2 I),
noise added to each observation before stacking, as at certification. With sigma = 0.2 the noise
is ~3x the largest velocity (0.07), so one observation says almost nothing about the direction
of motion: the stack lets the policy average it out (with k = 1 the learner never reached the
flag in our trials, with k = 5 it needed ~3x longer than with k = 10).

Expert (reads the true state, never part of the agent): push in the direction of motion,
a* = +1 if velocity >= 0 else -1, which pumps energy into the swing and reaches the flag in
~100-120 steps. DAgger (robustcert.rl.imitation) with the logistic loss
log(1 + exp(-a* f(stack))), so f is a logit of the direction and its sign is the force's.

    python experiments/weights/train_mountaincar_policy.py > results/policy/train_mountaincar.log

Writes robustcert/rl/weights/mountaincar-<sigma>.pt (arch policy_mlp, with the training record).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from robustcert.rl.imitation import Demonstrations, dagger, validate_and_save
from robustcert.rl.policies import WEIGHTS_DIR, PolicyMLP

ENV, FRAME_STACK, HIDDEN = "mountaincar", 10, (32, 32)


class PumpingExpert:
    """Force +1 when the car moves right (or stands still), -1 when it moves left."""

    def __init__(self, env):
        self.env = env.unwrapped

    def reset(self):
        pass

    def __call__(self) -> float:
        return 1.0 if self.env.state[1] >= 0 else -1.0


def logistic_loss(outputs: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.softplus(-directions.float() * outputs.squeeze(1)).mean()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sigmas", default="0.2,0.4")
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--steps", type=int, default=8000, help="agent steps collected per iteration")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--eval-episodes", type=int, default=64)
    parser.add_argument("--validation-episodes", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out-dir", type=Path, default=WEIGHTS_DIR)
    args = parser.parse_args()
    torch.set_num_threads(1)
    for sigma in (float(s) for s in args.sigmas.split(",")):
        start = time.time()
        torch.manual_seed(args.seed)
        model = PolicyMLP(2 * FRAME_STACK, 1, HIDDEN)
        data = Demonstrations()
        history = dagger(ENV, PumpingExpert, model, logistic_loss, sigma=sigma, frame_stack=FRAME_STACK,
                         iterations=args.iterations, steps=args.steps, epochs=args.epochs, batch_size=args.batch_size,
                         lr=args.lr, eval_episodes=args.eval_episodes, seed=args.seed, data=data, discrete=False,
                         log=lambda line: print(line, flush=True))
        path = args.out_dir / f"{ENV}-{sigma:g}.pt"
        check = validate_and_save(
            ENV, model, path, sigma=sigma, frame_stack=FRAME_STACK, observation_shape=[2], history=history,
            episodes=args.validation_episodes, seed=args.seed, discrete=False,
            training=(f"DAgger of the energy-pumping controller (force = sign of the true velocity), {args.iterations} "
                      f"iterations x {args.steps} steps, {args.epochs} epochs each, logistic loss, Adam lr {args.lr}, "
                      f"batch {args.batch_size}, seed {args.seed}; experiments/weights/train_mountaincar_policy.py"))
        print(f"{ENV} sigma {sigma:g}: validation mean return {check.mean():.3f} over {len(check)} episodes "
              f"(seed {20_000 + args.seed}); {time.time() - start:.0f} s; saved {path} ({path.stat().st_size} bytes)",
              flush=True)

if __name__ == "__main__":
    main()
