"""Policy smoothing on every environment of the seed paper (Kumar, Levine and Feizi 2022): Mountain Car,
Pong and Freeway beside CartPole. Environment specs (preprocessing, noise before stacking), the bundled
policies, a short certify-policy per environment, bad input, the attack on frame stacks, committed results."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

gym = pytest.importorskip("gymnasium")
pytest.importorskip("ale_py")
pytest.importorskip("cv2")
from robustcert import PolicySmooth, RobustCertError  # noqa: E402
from robustcert.cli import main  # noqa: E402
from robustcert.rl import GradientAttack, env_factory, load_policy, make_env, run_episodes  # noqa: E402
from robustcert.rl.envs import PAPER_ENVS, episode_seeds, make_clean_env  # noqa: E402
from robustcert.rl.policies import AtariCNN, NoopPolicy, bundled_policy_names, save_policy  # noqa: E402

RESULTS = Path(__file__).resolve().parents[1] / "results" / "policy"
SEED_ENVS = ("mountaincar", "pong", "freeway")


def bundled(env: str) -> str:
    return next(name for name in bundled_policy_names() if name.startswith(f"{env}-"))


# --------------------------------------------------------------------------- environment specs
def test_paper_env_specs_follow_the_papers_setting():
    shapes = {"cartpole": (4,), "mountaincar": (2,), "pong": (84, 84), "freeway": (84, 84)}
    floors = {"cartpole": 0.0, "mountaincar": 0.0, "pong": -1.0, "freeway": 0.0}
    for name, spec in PAPER_ENVS.items():
        env = make_clean_env(name)
        observation, _ = env.reset(seed=0)
        assert observation.shape == shapes[name] and observation.dtype == np.float32, name
        assert spec.return_lower_bound == floors[name]
        if spec.atari:  # AtariPreprocessing: 84x84 grey frames scaled to [0, 1]
            assert 0.0 <= observation.min() and observation.max() <= 1.0 and len(np.unique(observation)) > 2
        env.close()
    freeway = make_clean_env("freeway")
    assert freeway.unwrapped._game_difficulty == 1  # the paper's "hard" Freeway
    sticky = freeway
    while not isinstance(sticky, gym.wrappers.StickyAction):  # sticky actions per emulator frame
        sticky = sticky.env
    assert sticky.repeat_action_probability == 0.25 and isinstance(sticky.env.unwrapped, type(freeway.unwrapped))
    assert freeway.unwrapped.ale.getFloat("repeat_action_probability") == 0.0  # not drawn twice
    assert make_clean_env("mountaincar").spec.max_episode_steps == 999


def test_pong_is_one_round_and_mountaincar_returns_reaching_the_goal():
    noop = NoopPolicy()
    pong = run_episodes(env_factory("pong"), noop, 0.05, 2, seed=0, frame_stack=4)
    assert pong.returns.tolist() == [-1.0, -1.0] and np.all(pong.lengths < 200)  # the first point ends it
    # the energy-pumping controller on (almost) clean observations reaches the flag: return exactly 1
    def pump(observations):
        return np.where(observations[:, 1:2] >= 0, 1.0, -1.0).astype(np.float32)

    mountaincar = env_factory("mountaincar")
    reached = run_episodes(mountaincar, pump, 1e-6, 3, seed=0)
    assert reached.returns.tolist() == [1.0, 1.0, 1.0] and np.all(reached.lengths < 200)
    idle = run_episodes(mountaincar, NoopPolicy().for_env(make_clean_env("mountaincar").action_space, 0.0), 0.1, 2,
                        seed=0)
    assert idle.returns.tolist() == [0.0, 0.0] and idle.lengths.tolist() == [999, 999]


def test_atari_noise_is_added_to_each_frame_before_stacking():
    """The loop's agent inputs equal make_env's NoisyObservation -> FrameStackObservation chain, value for value;
    every frame carries its own fresh noise, and the first stack repeats the first NOISY frame."""
    recorded = []

    def recording(inputs):
        recorded.append(inputs[0].copy())
        return np.ones(len(inputs), dtype=np.int64)  # UP

    run_episodes(env_factory("freeway", max_episode_steps=6), recording, 0.1, 1, seed=7, frame_stack=4, num_envs=1)
    env = make_env("freeway", sigma=0.1, frame_stack=4, max_episode_steps=6)
    clean_env = make_clean_env("freeway", max_episode_steps=6)
    env_seed, noise_seed = episode_seeds(7, 0)
    observation, _ = env.reset(seed=env_seed, options={"noise_seed": noise_seed})
    clean, _ = clean_env.reset(seed=env_seed)
    assert len(recorded) == 6 and recorded[0].shape == (4, 84, 84)
    assert all(np.array_equal(recorded[0][0], frame) for frame in recorded[0])  # padded with z_0 itself
    noises = []
    for inputs in recorded:
        np.testing.assert_array_equal(observation, inputs)
        noises.append(inputs[-1] - clean)  # the newest frame = clean frame + its own noise
        assert abs(noises[-1].std() - 0.1) < 0.005 and abs(noises[-1].mean()) < 0.005
        observation, *_ = env.step(1)
        clean, *_ = clean_env.step(1)
    correlations = [np.corrcoef(a.ravel(), b.ravel())[0, 1] for a, b in zip(noises, noises[1:])]
    assert np.all(np.abs(correlations) < 0.05)  # a fresh draw at every step


def test_atari_episode_is_the_same_whatever_ran_before_it_in_the_emulator():
    """A seeded reset restores the emulator instead of reloading the ROM (ReseedWithoutReload): episode 1
    played after episode 0 in the same emulator gives the same frames as in a fresh one, sticky actions
    included (Freeway draws them per frame)."""
    def frames_of(num_envs):
        seen = []

        def policy(inputs):  # actions that vary, as a function of what the agent sees
            seen.append(inputs.copy())
            return (np.floor(inputs.reshape(len(inputs), -1).sum(axis=1) * 100) % 3).astype(np.int64)

        run_episodes(env_factory("freeway", max_episode_steps=12), policy, 0.05, 2, seed=3, num_envs=num_envs)
        return seen

    sequential, parallel = frames_of(1), frames_of(2)
    assert len(sequential) == 24 and len(parallel) == 12
    np.testing.assert_array_equal(np.stack(sequential[12:])[:, 0], np.stack(parallel)[:, 1])
    np.testing.assert_array_equal(np.stack(sequential[:12])[:, 0], np.stack(parallel)[:, 0])


# --------------------------------------------------------------------------- bundled policies
@pytest.mark.parametrize("env", SEED_ENVS)
def test_bundled_policy_loads_with_its_setting(env):
    name = bundled(env)
    loaded = load_policy(name)
    spec = PAPER_ENVS[env]
    assert loaded.metadata["env"] == env and float(name.split("-")[1]) == loaded.metadata["sigma"]
    assert loaded.metadata["max_episode_steps"] == spec.max_episode_steps
    assert tuple(loaded.metadata["observation_shape"]) == make_clean_env(env).observation_space.shape
    assert "DAgger" in loaded.metadata["training"] and loaded.metadata["validation_mean_return"] > spec.return_lower_bound
    assert (Path(load_policy.__code__.co_filename).parent / "weights" / f"{name}.pt").stat().st_size < 400_000
    if spec.atari:
        assert isinstance(loaded.module, AtariCNN) and loaded.frame_stack == 4
        frames = np.random.default_rng(0).random((3, 4, 84, 84), dtype=np.float32)
        assert loaded.policy(frames).shape == (3,)


def test_atari_cnn_checkpoint_round_trip(tmp_path):
    module = AtariCNN(4, 3, channels=(8, 8, 8), hidden=16)
    save_policy(module, tmp_path / "cnn.pt", frame_stack=4, env="freeway")
    loaded = load_policy(tmp_path / "cnn.pt")
    frames = np.random.default_rng(1).random((5, 4, 84, 84), dtype=np.float32)
    with torch.no_grad():
        np.testing.assert_array_equal(loaded.module(torch.as_tensor(frames)).numpy(),
                                      module(torch.as_tensor(frames)).numpy())
    assert loaded.frame_stack == 4
    broken = torch.load(tmp_path / "cnn.pt", weights_only=True)
    broken["hidden"] = 32  # the state_dict no longer fits the architecture it names
    torch.save(broken, tmp_path / "broken.pt")
    with pytest.raises(RobustCertError, match="does not fit AtariCNN"):
        load_policy(tmp_path / "broken.pt")


# --------------------------------------------------------------------------- certify-policy per environment
@pytest.mark.parametrize("env,steps", [("mountaincar", 300), ("pong", 40), ("freeway", 40)])
def test_short_certify_policy_per_environment(tmp_path, env, steps):
    name, spec = bundled(env), PAPER_ENVS[env]
    sigma = name.split("-")[1]
    outs = {}
    for policy in (name, "noop"):
        out = tmp_path / f"{policy}.tsv"
        result = CliRunner().invoke(main, ["certify-policy", "--env", env, "--policy", policy, "--sigma", sigma,
                                           "--episodes", "4", "--budgets", "0,0.05", "--max-episode-steps", str(steps),
                                           "--num-envs", "4", "--quiet", "--out", str(out)])
        assert result.exit_code == 0, result.output
        outs[policy] = pd.read_csv(out, sep="\t")
    table = outs[name]
    assert (table.return_lower_bound == spec.return_lower_bound).all()  # the env's known floor, not 0
    assert np.all(np.diff(table.certified_return) <= 0)
    assert spec.return_lower_bound <= table.certified_return[0] <= table.clean_mean[0]
    assert (outs["noop"].clean_mean == {"mountaincar": 0.0, "pong": -1.0, "freeway": 0.0}[env]).all() or \
        env == "pong"  # 40 steps may end Pong before the first point
    sidecar = json.loads((tmp_path / f"{name}.tsv.json").read_text())
    assert sidecar["parameters"]["env_setting"] == spec.setting
    assert sidecar["parameters"]["max_episode_steps"] == steps and sidecar["parameters"]["frame_stack"] >= 4


def test_noop_agent_plays_each_environments_no_op():
    for env, expected in (("pong", 0), ("freeway", 0), ("mountaincar", np.zeros(1, np.float32))):
        space = make_clean_env(env).action_space
        actions = NoopPolicy().for_env(space, PAPER_ENVS[env].noop_action)(np.zeros((3, 2), np.float32))
        assert actions.shape == (3, *space.shape) and np.all(actions == expected) and space.contains(actions[0])
    discrete_car = gym.make("MountainCar-v0").action_space
    assert NoopPolicy().for_env(discrete_car, 1)(np.zeros((2, 2))).tolist() == [1, 1]  # "don't accelerate"


@pytest.mark.parametrize("args,message", [
    (["--env", "atlantis-9"], "cannot make environment"),
    (["--policy", "pong-9.9"], "policy not found"),
    (["--policy", "PONG", "--env", "mountaincar"], "was trained on pong observations of shape (84, 84); "
                                                    "mountaincar gives observations of shape (2,)"),
    (["--policy", "PONG", "--env", "freeway"], "has 6 action outputs"),
    (["--return-lower-bound", "0"], "above pong's known lower bound -1"),
])
def test_bad_certify_policy_input_gives_one_error_line(tmp_path, args, message):
    options = {"--env": "pong", "--policy": "noop", "--sigma": "0.05"}
    args = [bundled("pong") if a == "PONG" else a for a in args]
    options.update(dict(zip(args[::2], args[1::2])))
    out = tmp_path / "x.tsv"
    command = ["certify-policy", *[x for item in options.items() for x in item], "--episodes", "2", "--budgets", "0",
               "--max-episode-steps", "5", "--quiet", "--out", str(out)]
    result = CliRunner().invoke(main, command)
    assert result.exit_code != 0 and message in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1 and not out.exists()


# --------------------------------------------------------------------------- attacks
def test_gradient_attack_on_a_cnn_frame_stack_stays_within_budget():
    loaded = load_policy(bundled("freeway"))
    sigma = loaded.metadata["sigma"]
    agent = PolicySmooth(loaded.module, sigma, frame_stack=4, num_envs=2)
    attack = GradientAttack(loaded.module, sigma, budget=0.5, attack_steps=4, iterations=2, eot_samples=2)
    episodes = agent.rollout(env_factory("freeway", max_episode_steps=8), 2, seed=0, adversary=attack)
    assert np.all(episodes.perturbation_norms <= 0.5 + 1e-6) and np.all(episodes.perturbation_norms > 0.45)


def test_continuous_attack_pushes_the_action_against_its_direction():
    """A linear force f(stack) = <w, stack>: the best perturbation of the new frame within radius r is
    -r w_last / ||w_last|| (w_last: the weights of the newest frame), whatever the noise draws."""
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(6, 1, bias=False))
    w_last = module[1].weight.detach()[0, 4:]
    attack = GradientAttack(module, sigma=0.2, budget=0.3, attack_steps=1, iterations=5, eot_samples=3,
                            discrete=False)
    clean = np.array([[0.5, 0.01]], np.float32)
    history = np.array([[[0.4, 0.0], [0.45, 0.01]]], np.float32)
    eps = attack.perturb(clean, history, np.array([False]), np.array([0.3]), np.array([0]))
    with torch.no_grad():
        force = float(module(torch.as_tensor(np.concatenate([history[0], clean]).reshape(1, 3, 2))))
    expected = -np.sign(force) * 0.3 * w_last.numpy() / np.linalg.norm(w_last.numpy())
    np.testing.assert_allclose(eps[0], expected, rtol=1e-4, atol=1e-6)


# --------------------------------------------------------------------------- the committed experiment
@pytest.mark.parametrize("env", SEED_ENVS)
def test_committed_results_certificate_attacks_and_noop(env):
    """results/policy/<env>-*: the certified return at B = 0 beats the noop agent, every attack stays above
    the certificate (DKW and CP) and within its budget."""
    files = sorted(RESULTS.glob(f"{env}-sigma*.tsv"))
    attacks = pd.read_csv(RESULTS / f"{env}-attack-all.tsv", sep="\t")
    noop = pd.read_csv(RESULTS / f"{env}-noop.tsv", sep="\t")
    assert files and len(attacks) >= 4
    for path in files:
        certificate = pd.read_csv(path, sep="\t")
        assert certificate.return_lower_bound[0] == PAPER_ENVS[env].return_lower_bound
        assert certificate.certified_return[0] > noop.clean_mean[0]
        merged = attacks.merge(certificate[["sigma", "budget", "certified_return"]], on=["sigma", "budget"])
        assert len(merged) == len(attacks[attacks.sigma == certificate.sigma[0]]), path.name
        assert (merged.attacked_mean >= merged.certified_return).all(), path.name
    assert (attacks.max_perturbation_norm <= attacks.budget + 1e-6).all()
