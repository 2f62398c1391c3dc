"""Train the bundled Pong and Freeway pixel policies: DAgger of a scripted expert into a small CNN.

The learner (robustcert.rl.AtariCNN, ~68k weights, 0.27 MB) sees only what the smoothed agent sees
at certification: a stack of its last 4 noisy preprocessed frames (84x84 grey in [0, 1],
N(0, sigma^2) added to each frame before stacking), in the paper's environment setting
(robustcert.rl.envs.PAPER_ENVS: Pong one round, Freeway hard with sticky actions, 250 steps).
The expert that labels the visited states reads the emulator and is never part of the agent:

* Pong: a paddle controller on the RAM (ball and paddle positions): it predicts where the ball
  crosses the paddle's column (bouncing off the walls), aims so that the ball meets the paddle
  off-centre, on the side away from the opponent's paddle, and damps the paddle's momentum
  (a bang-bang controller with a dead zone on position + 3 x velocity);
* Freeway: UP unless a short look-ahead in a copy of the emulator (UP for 3 agent steps) ends
  in a collision; then NOOP if waiting one step is safe, else DOWN.

DAgger (robustcert.rl.imitation): iteration 0 is pure expert play; iteration i acts with
the expert w.p. 0.5^i, else with the learner; every visited state is labelled by the expert and
the CNN is trained (cross-entropy, Adam) on all records so far, with fresh noise each epoch.
Pong adds an auxiliary head (discarded after training) that predicts the expert's RAM readings
(ball and paddle positions and velocities, the predicted crossing) from the CNN's hidden layer:
without it the learner's validation mean return was -0.50 after 4 iterations, with it -0.44 after
5 and 0.00 after 3 more (results/policy/train_pong-0.05.log, runs 1-3: the bundled pong-0.05).
Training seeds never overlap the certification seed 0.

    python experiments/weights/train_atari_policy.py --game pong --sigma 0.05 --iterations 5 --epochs 4 \
        --validation-episodes 50 --out-dir /tmp/pong-run2
    python experiments/weights/train_atari_policy.py --game pong --sigma 0.05 --iterations 3 --epochs 4 \
        --validation-episodes 50 --init /tmp/pong-run2/pong-0.05.pt --first-iteration 5
    python experiments/weights/train_atari_policy.py --game freeway --sigma 0.05 > results/policy/train_freeway-0.05.log

Writes robustcert/rl/weights/<game>-<sigma>.pt (arch atari_cnn, with the training record).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from robustcert.rl.envs import make_clean_env
from robustcert.rl.imitation import Demonstrations, collect, dagger, validate_and_save
from robustcert.rl.policies import WEIGHTS_DIR, AtariCNN, load_policy

FRAME_STACK = 4
NOOP, PONG_UP, PONG_DOWN = 0, 2, 3        # Pong's RIGHT moves the paddle up the screen, LEFT down
FREEWAY_NOOP, FREEWAY_UP, FREEWAY_DOWN = 0, 1, 2


class PongExpert:
    """Paddle control from the RAM (player paddle y: 51, ball x: 49, ball y: 54, opponent y: 50).

    Coordinates are the RAM's: y grows downwards, the ball bounces between y = 48 and 206, the
    player's paddle is at x = 188; ``aim`` shifts the contact point off the paddle's centre
    (7.5 below the RAM paddle y) towards the side away from the opponent.
    """

    TOP, BOTTOM, PADDLE_X, CENTRE = 48, 206, 188, 7.5

    def __init__(self, env, aim: float = -4.0, damping: float = 3.0, dead_zone: float = 14.0):
        self.ale = env.unwrapped.ale
        self.aim, self.damping, self.dead_zone = aim, damping, dead_zone
        self.previous, self.features = None, ()

    def reset(self):
        self.previous = None

    def crossing(self, x, y, vx, vy) -> float:
        """Where the ball crosses the paddle's column (folded at the walls); mid-court if it moves away."""
        if vx <= 0:
            return (self.TOP + self.BOTTOM) / 2
        span = self.BOTTOM - self.TOP
        folded = (y + vy * (self.PADDLE_X - x) / vx - self.TOP) % (2 * span)
        return self.TOP + (2 * span - folded if folded > span else folded)

    def __call__(self) -> int:
        ram = self.ale.getRAM()
        paddle, x, y, opponent = int(ram[51]), int(ram[49]), int(ram[54]), int(ram[50])
        moving = self.previous is not None and y != 0 and self.previous[2] != 0
        v_paddle, vx, vy = ((paddle - self.previous[0], x - self.previous[1], y - self.previous[2]) if moving
                            else (0, 0, 0))
        self.previous = (paddle, x, y)
        offset = self.CENTRE + (self.aim if opponent < (self.TOP + self.BOTTOM) / 2 else -self.aim)
        crossing = self.crossing(x, y, vx, vy)
        error = crossing - offset - (paddle + self.damping * v_paddle) if y != 0 else 0.0
        # what the learner's auxiliary head predicts (scaled to about [-1, 1])
        self.features = (x / 100 - 1, y / 100 - 1, vx / 4, vy / 8, paddle / 100 - 1, v_paddle / 16,
                         crossing / 100 - 1, error / 30, opponent / 100 - 1, float(y != 0))
        if y == 0:  # no ball in play
            return NOOP
        return PONG_DOWN if error > self.dead_zone else PONG_UP if error < -self.dead_zone else NOOP


class FreewayExpert:
    """UP unless a look-ahead in a copy of the emulator says UP collides (RAM 14: chicken y, 103: score)."""

    def __init__(self, env, horizon: int = 3, frame_skip: int = 4):
        self.env, self.ale = env.unwrapped, env.unwrapped.ale
        self.horizon, self.frame_skip = horizon, frame_skip

    def reset(self):
        pass

    def safe(self, plan) -> bool:
        ram = self.ale.getRAM()
        y, score = int(ram[14]), int(ram[103])
        for action in plan:
            for _ in range(self.frame_skip):
                self.ale.act(self.env._action_set[action])
            ram = self.ale.getRAM()
            if int(ram[103]) != score:
                return True                         # crossed
            if int(ram[14]) < y and action != FREEWAY_DOWN:
                return False                        # hit: pushed back to the bottom
            y = int(ram[14])
        return True

    def __call__(self) -> int:
        state = self.ale.cloneState()
        try:
            for first in (FREEWAY_UP, FREEWAY_NOOP):
                self.ale.restoreState(state)
                if self.safe([first] + [FREEWAY_UP] * (self.horizon - 1)):
                    return first
            return FREEWAY_DOWN
        finally:
            self.ale.restoreState(state)


EXPERTS = {"pong": PongExpert, "freeway": FreewayExpert}
AUXILIARY_FEATURES = {"pong": 10, "freeway": 0}  # what the expert's ``features`` hold


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--game", choices=sorted(EXPERTS), required=True)
    parser.add_argument("--sigma", type=float, required=True, help="smoothing noise (frames in [0, 1])")
    parser.add_argument("--iterations", type=int, default=4, help="DAgger iterations")
    parser.add_argument("--steps", type=int, default=10000, help="agent steps collected per iteration")
    parser.add_argument("--epochs", type=int, default=5, help="epochs over all records per iteration")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--eval-episodes", type=int, default=32)
    parser.add_argument("--validation-episodes", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out-dir", type=Path, default=WEIGHTS_DIR)
    parser.add_argument("--init", type=Path, default=None,
                        help="continue from this checkpoint (with --first-iteration: where its DAgger run stopped)")
    parser.add_argument("--first-iteration", type=int, default=0)
    parser.add_argument("--expert-only", type=int, default=0,
                        help="just play N episodes with the expert and print its returns")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    start = time.time()
    if args.expert_only:
        data = Demonstrations(scale=255.0, dtype=np.uint8)
        stats = collect(args.game, EXPERTS[args.game], None, args.sigma, FRAME_STACK, args.expert_only, 1.0,
                        args.seed, 8, data)
        print(f"expert: {stats}")
        return
    probe = make_clean_env(args.game)
    num_actions, shape = int(probe.action_space.n), probe.observation_space.shape
    probe.close()
    model = AtariCNN(FRAME_STACK, num_actions)
    if args.init is not None:
        model.load_state_dict(load_policy(args.init).module.state_dict())
    data = Demonstrations(scale=255.0, dtype=np.uint8)
    history = dagger(args.game, EXPERTS[args.game], model, torch.nn.functional.cross_entropy, sigma=args.sigma,
                     frame_stack=FRAME_STACK, iterations=args.iterations, steps=args.steps, epochs=args.epochs,
                     batch_size=args.batch_size, lr=args.lr, eval_episodes=args.eval_episodes, seed=args.seed,
                     data=data, auxiliary_features=AUXILIARY_FEATURES[args.game], first_iteration=args.first_iteration,
                     log=lambda line: print(line, flush=True))
    path = args.out_dir / f"{args.game}-{args.sigma:g}.pt"
    check = validate_and_save(
        args.game, model, path, sigma=args.sigma, frame_stack=FRAME_STACK, observation_shape=shape, history=history,
        episodes=args.validation_episodes, seed=args.seed,
        training=(f"DAgger of a scripted RAM expert ({EXPERTS[args.game].__name__}), {args.iterations} iterations x "
                  f"{args.steps} steps, {args.epochs} epochs each, Adam lr {args.lr}, batch {args.batch_size}, seed "
                  f"{args.seed}; experiments/weights/train_atari_policy.py"
                  + (f", continuing {args.init.name} from DAgger iteration {args.first_iteration}" if args.init else "")))
    print(f"{args.game} sigma {args.sigma:g}: validation mean return {check.mean():.3f} over {len(check)} episodes "
          f"(seed {20_000 + args.seed}); {time.time() - start:.0f} s; saved {path} ({path.stat().st_size} bytes)",
          flush=True)

if __name__ == "__main__":
    main()
