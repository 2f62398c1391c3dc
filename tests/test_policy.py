"""Policy smoothing (Kumar, Levine and Feizi 2022): bounds, bands, rollout loop, attack, CLI."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from scipy.stats import norm

import robustcert.stats as stats
from robustcert import PolicySmooth, RobustCertError, certify_returns
from robustcert.radius import attacked_probability_lower
from robustcert.stats import _cached_clopper_pearson_lower as cached_clopper_pearson_lower
from robustcert.stats import clopper_pearson_survival_lower, dkw_epsilon, dkw_survival_lower, empirical_survival

gym = pytest.importorskip("gymnasium")
from robustcert.rl import (  # noqa: E402
    GradientAttack, PolicyMLP, TorchPolicy, env_factory, load_policy, make_env, run_episodes, save_policy,
)
from robustcert.rl.envs import episode_seeds  # noqa: E402
from robustcert.rl.policies import cartpole_pd, constant_action  # noqa: E402

RESULTS = Path(__file__).resolve().parents[1] / "results" / "policy"
TINY = np.array([1, 1, 2, 2, 2, 3, 3, 3], dtype=float)  # n = 8, levels 1 < 2 < 3, S_n = 1, 6/8, 3/8


@pytest.fixture(scope="module")
def cartpole():
    return env_factory("CartPole-v1", max_episode_steps=200)


# --------------------------------------------------------------------------- the bound, by hand
def test_bound_matches_hand_computation_on_tiny_distribution():
    # DKW at alpha = 0.1, n = 8: eps = sqrt(ln(10) / 16) = 0.3793567823
    eps = math.sqrt(math.log(10) / 16)
    assert dkw_epsilon(8, 0.1) == pytest.approx(eps, abs=1e-12)
    # p_1 = 1 - eps = 0.6206432, p_2 = 0.75 - eps = 0.3706432, p_3 = max(0.375 - eps, 0) = 0
    table = certify_returns(TINY, [0.0, 0.5], sigma=1.0, alpha=0.1, return_lower_bound=0.0, quantiles=[0.4, 0.7])
    assert table.attrs["levels"] == [1.0, 2.0, 3.0]
    np.testing.assert_allclose(table.attrs["p_lower"], [0.6206432176537133, 0.3706432176537134, 0.0], atol=1e-12)
    # B = 0: 0 + (1-0)*0.6206432 + (2-1)*0.3706432 + (3-2)*0 = 0.9912864
    assert table.certified_return[0] == pytest.approx(0.9912864353074267, abs=1e-12)
    # B = 0.5, sigma = 1: Phi(Phi^-1(0.6206432) - 0.5) + Phi(Phi^-1(0.3706432) - 0.5) = 0.42366 + 0.20311
    assert table.certified_return[1] == pytest.approx(0.6267731864593271, abs=1e-9)
    # quantiles at B = 0: P(R >= 1) >= 0.6206 >= 0.6 (q = 0.4); P(R >= 2) >= 0.3706 >= 0.3 (q = 0.7)
    assert table["certified_q40"][0] == 1.0 and table["certified_q70"][0] == 2.0
    # at B = 0.5 the level-2 probability drops to 0.203 < 0.3: the 70%-quantile bound falls back to level 1
    assert table["certified_q70"][1] == 1.0
    # Clopper-Pearson, alpha split over the n = 8 count levels: Beta quantiles at 0.1 / 8
    cp = certify_returns(TINY, [0.0], sigma=1.0, alpha=0.1, bound="clopper-pearson")
    expected = [0.5782474837716209, 0.30580115705523525, 0.06597428946111557]  # counts 8, 6, 3
    np.testing.assert_allclose(cp.attrs["p_lower"], expected, rtol=1e-9)
    assert cp.certified_return[0] == pytest.approx(sum(expected), rel=1e-9)


def test_bound_at_zero_budget_is_clean_mean_minus_confidence_term():
    rng = np.random.default_rng(3)
    returns = rng.integers(5, 60, size=400).astype(float)
    alpha, v0 = 0.05, 0.0
    table = certify_returns(returns, [0.0], sigma=0.3, alpha=alpha, return_lower_bound=v0)
    levels = np.unique(returns)
    steps = np.diff(np.concatenate([[v0], levels]))
    confidence = np.sum(steps * np.minimum(dkw_epsilon(len(returns), alpha), empirical_survival(returns, levels)))
    assert table.clean_mean[0] == pytest.approx(returns.mean())
    assert table.certified_return[0] == pytest.approx(returns.mean() - confidence, rel=1e-12)
    # every level has S_n >= eps here except the top ones; where all do, the term is eps * (v_k - v_0)
    flat = certify_returns(np.full(100, 7.0), [0.0], sigma=0.3, alpha=alpha)
    assert flat.certified_return[0] == pytest.approx(7.0 - 7.0 * dkw_epsilon(100, alpha), rel=1e-12)


def test_certificate_decreases_with_budget_and_reaches_lower_bound():
    returns = np.random.default_rng(0).integers(1, 200, size=300).astype(float)
    table = certify_returns(returns, [0, 0.1, 0.2, 0.4, 1.0, 5.0], sigma=0.2, alpha=0.05, return_lower_bound=-3.0)
    assert np.all(np.diff(table.certified_return) < 0)
    assert table.certified_return.iloc[-1] == pytest.approx(-3.0, abs=1e-3)
    assert np.all(np.diff(table["certified_q50"]) <= 0)
    assert np.all(table.certified_return <= returns.mean())


def test_neyman_pearson_bound_closed_form():
    p = np.array([0.0, 0.3, 0.5, 0.99, 1.0])
    got = attacked_probability_lower(p, budget=0.4, sigma=0.2)
    np.testing.assert_allclose(got[1:4], norm.cdf(norm.ppf(p[1:4]) - 2.0))
    assert got[0] == 0.0 and got[-1] == 1.0
    np.testing.assert_allclose(attacked_probability_lower(p, 0.0, 0.2), p)


# --------------------------------------------------------------------------- coverage of the bands
def _band_failure_rate(band, alpha, n=100, trials=3000, seed=0):
    """Fraction of trials where the band exceeds the true survival function somewhere.

    Returns ~ Uniform(0, 1), so S(t) = 1 - t; for a left-continuous step function S_n the
    supremum of S_n - S is attained at the sample points.
    """
    rng = np.random.default_rng(seed)
    failures = 0
    for _ in range(trials):
        x = rng.random(n)
        failures += bool(np.any(band(x, x, alpha) > 1.0 - x + 1e-12))
    return failures / trials


def test_dkw_band_coverage_and_it_fails_when_narrowed(monkeypatch):
    alpha, trials = 0.2, 3000
    slack = 3.5 * math.sqrt(alpha * (1 - alpha) / trials)
    rate = _band_failure_rate(dkw_survival_lower, alpha, trials=trials)
    assert rate <= alpha + slack
    assert rate >= alpha / 2  # the one-sided DKW band is nearly tight for continuous returns
    # the same check catches a band that spends 2 alpha (e.g. a narrowed epsilon)
    original = stats.dkw_epsilon
    monkeypatch.setattr(stats, "dkw_epsilon", lambda n, a: original(n, 2 * a))
    assert _band_failure_rate(dkw_survival_lower, alpha, trials=trials) > alpha + slack


def test_clopper_pearson_band_coverage_and_it_fails_without_the_split():
    alpha, trials, n = 0.2, 1500, 100
    slack = 3.5 * math.sqrt(alpha * (1 - alpha) / trials)
    rate = _band_failure_rate(clopper_pearson_survival_lower, alpha, n=n, trials=trials)
    assert rate <= alpha + slack
    # without the union bound over the n count levels (alpha per level) the band fails far too often
    def unsplit_band(x, thresholds, a):
        counts = np.rint(empirical_survival(x, thresholds) * len(x)).astype(int)
        return np.array([cached_clopper_pearson_lower(int(c), len(x), a) for c in counts])

    unsplit = _band_failure_rate(unsplit_band, alpha, n=n, trials=trials)
    assert unsplit > alpha + slack


def test_certified_return_coverage_on_discrete_returns():
    # CartPole-like returns: mass at the time limit plus a spread of early failures
    support = np.array([10, 50, 120, 200], dtype=float)
    probs = np.array([0.05, 0.1, 0.15, 0.7])
    true_mean = float(support @ probs)
    rng = np.random.default_rng(1)
    alpha, trials = 0.2, 1000
    for bound in ("dkw", "clopper-pearson"):
        wrong = sum(certify_returns(rng.choice(support, 200, p=probs), [0.0], 0.2, alpha, bound=bound)
                    .certified_return[0] > true_mean for _ in range(trials))
        assert wrong / trials <= alpha + 3.5 * math.sqrt(alpha * (1 - alpha) / trials)


def test_fixed_grid_band_coverage_and_it_fails_without_the_split():
    """Thresholds declared in advance (``fixed_grid``): Clopper-Pearson at alpha/m on each of m = 10
    grid points. The same bounds at alpha each (m separate one-point grids) fail far too often."""
    alpha, trials, n = 0.2, 1500, 100
    grid = np.linspace(0.05, 0.95, 10)
    slack = 3.5 * math.sqrt(alpha * (1 - alpha) / trials)
    rng = np.random.default_rng(4)

    def failure_rate(band):
        samples = rng.random((trials, n))  # Uniform(0,1) returns: S(t) = 1 - t
        return np.mean([np.any(band(x) > 1.0 - grid + 1e-12) for x in samples])

    assert failure_rate(lambda x: clopper_pearson_survival_lower(x, grid, alpha, fixed_grid=True)) <= alpha + slack
    unsplit = lambda x: np.concatenate([clopper_pearson_survival_lower(x, [t], alpha, fixed_grid=True)  # noqa: E731
                                        for t in grid])
    assert failure_rate(unsplit) > alpha + slack


def test_attacked_return_coverage_under_the_worst_shift_and_a_loosened_budget_term_fails(monkeypatch):
    """One-step episodes with return 1[o + eps + sigma Z > 0] and clean P(R = 1) = p: the attack
    eps = -B attains the Neyman-Pearson bound, E_attacked[R] = Phi(Phi^-1(p) - B/sigma) exactly.
    With one declared threshold Clopper-Pearson is nearly exact, so the certificate may exceed the
    attacked mean at most alpha of the time; charging B/(2 sigma) instead, or spending 2 alpha,
    must break the same check."""
    import robustcert.radius as radius

    p, sigma, budget, alpha, n, trials = 0.8, 0.5, 0.25, 0.2, 200, 1000
    attacked_mean = norm.cdf(norm.ppf(p) - budget / sigma)
    rng = np.random.default_rng(8)
    runs = [(rng.random(n) < p).astype(float) for _ in range(trials)]
    threshold = alpha + 3.5 * math.sqrt(alpha * (1 - alpha) / trials)

    def failure_rate(level=alpha):
        return np.mean([certify_returns(r, [budget], sigma, level, bound="clopper-pearson", thresholds=[1.0])
                        .certified_return[0] > attacked_mean for r in runs])

    assert failure_rate() <= threshold
    assert failure_rate(min(2 * alpha, 0.99)) > threshold
    original = radius.attacked_probability_lower
    monkeypatch.setattr(radius, "attacked_probability_lower", lambda q, b, s: original(q, b / 2, s))
    assert failure_rate() > threshold


# --------------------------------------------------------------------------- rollout loop
def test_loop_noise_matches_wrapper_chain(cartpole):
    """The batched loop's agent inputs equal make_env's NoisyObservation -> FrameStackObservation."""
    recorded, actions = [], []

    def recording_policy(inputs):
        recorded.append(inputs[0].copy())
        action = cartpole_pd(inputs)
        actions.append(int(action[0]))
        return action

    run_episodes(cartpole, recording_policy, 0.2, 1, seed=5, frame_stack=3, num_envs=1)
    env = make_env("CartPole-v1", sigma=0.2, frame_stack=3, max_episode_steps=200)
    env_seed, noise_seed = episode_seeds(5, 0)
    observation, _ = env.reset(seed=env_seed, options={"noise_seed": noise_seed})
    for inputs, action in zip(recorded, actions):
        np.testing.assert_array_equal(observation, inputs)
        observation, *_ = env.step(action)
    assert len(recorded) > 20


def test_rollout_is_reproducible_whatever_the_batching(cartpole):
    one = run_episodes(cartpole, cartpole_pd, 0.4, 12, seed=3, frame_stack=2, num_envs=1)
    many = run_episodes(cartpole, cartpole_pd, 0.4, 12, seed=3, frame_stack=2, num_envs=5)
    np.testing.assert_array_equal(one.returns, many.returns)
    np.testing.assert_array_equal(one.lengths, many.lengths)
    other = run_episodes(cartpole, cartpole_pd, 0.4, 12, seed=4, frame_stack=2, num_envs=5)
    assert not np.array_equal(one.returns, other.returns)


def test_end_to_end_cartpole_with_hand_written_controller(cartpole):
    agent = PolicySmooth(cartpole_pd, sigma=0.2, frame_stack=5, num_envs=16)
    table = agent.certify(cartpole, n_episodes=60, budgets=[0, 0.1, 0.2, 0.4], alpha=0.1, seed=0)
    assert list(table.columns[:5]) == ["budget", "certified_return", "certified_q10", "certified_q25",
                                       "certified_q50"]
    assert {"clean_mean", "sigma", "n", "alpha", "bound"} <= set(table.columns)
    assert len(table) == 4 and (table.n == 60).all() and (table.bound == "dkw").all()
    assert table.clean_mean[0] > 150  # the controller balances the pole under sigma = 0.2 noise
    assert np.all(np.diff(table.certified_return) < 0)
    assert 0 <= table.certified_return.iloc[-1] < table.certified_return[0] <= table.clean_mean[0]
    again = certify_returns(agent.rollout(cartpole, 60, seed=0).returns, [0, 0.1, 0.2, 0.4], 0.2, 0.1)
    np.testing.assert_allclose(again.certified_return, table.certified_return)
    assert table.attrs["alpha_spending"] and sum(table.attrs["alpha_spending"].values()) == pytest.approx(0.1)


def test_budget_is_enforced_whatever_the_adversary_returns(cartpole):
    class Greedy:
        budget = 0.3

        def perturb(self, clean, history, start, remaining, step):
            return np.full_like(clean, 5.0)

    episodes = run_episodes(cartpole, cartpole_pd, 0.2, 6, seed=0, num_envs=3, adversary=Greedy())
    assert np.all(episodes.perturbation_norms <= 0.3 + 1e-6)
    assert np.all(episodes.perturbation_norms > 0.29)


def test_gradient_attack_lowers_returns_within_budget(cartpole, one_thread):
    loaded = load_policy("cartpole-0.2")
    agent = PolicySmooth(loaded.module, sigma=0.2, frame_stack=loaded.frame_stack, num_envs=16)
    clean = agent.rollout(cartpole, 16, seed=1)
    attack = GradientAttack(loaded.module, sigma=0.2, budget=3.2, attack_steps=50, iterations=5, eot_samples=4)
    attacked = agent.rollout(cartpole, 16, seed=1, adversary=attack)
    assert np.all(attacked.perturbation_norms <= 3.2 + 1e-6)
    assert attacked.returns.mean() < clean.returns.mean() - 50


# --------------------------------------------------------------------------- policies and errors
def test_policy_loading_formats(tmp_path, cartpole):
    module = PolicyMLP(4, 2, (8,))
    save_policy(module, tmp_path / "ours.pt", frame_stack=1)
    torch.save(module.state_dict(), tmp_path / "plain.pt")
    torch.jit.save(torch.jit.script(module), tmp_path / "scripted.pt")
    observations = np.random.default_rng(0).normal(size=(7, 4)).astype(np.float32)
    expected = TorchPolicy(module)(observations)
    for name in ("ours.pt", "plain.pt", "scripted.pt"):
        loaded = load_policy(tmp_path / name)
        np.testing.assert_array_equal(loaded.policy(observations), expected)
    assert load_policy("builtin:cartpole-pd").policy is cartpole_pd
    bundled = load_policy("cartpole-0.2")
    assert bundled.frame_stack == 5 and bundled.metadata["max_episode_steps"] == 200
    with pytest.raises(RobustCertError, match="policy not found"):
        load_policy(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(RobustCertError):
        load_policy(tmp_path / "junk.pt")


def test_stable_baselines3_zip(tmp_path, cartpole):
    sb3 = pytest.importorskip("stable_baselines3")
    model = sb3.PPO("MlpPolicy", gym.make("CartPole-v1"), n_steps=32, batch_size=32, seed=0, device="cpu")
    model.save(tmp_path / "ppo.zip")
    with pytest.raises(RobustCertError, match="trust"):
        load_policy(tmp_path / "ppo.zip")
    loaded = load_policy(tmp_path / "ppo.zip", trust_checkpoint=True)
    episodes = PolicySmooth(loaded.policy, sigma=0.1, num_envs=4).rollout(cartpole, 4, seed=0)
    assert episodes.returns.shape == (4,) and np.all(episodes.returns >= 1)


def test_bad_inputs_raise_robustcert_errors(cartpole):
    with pytest.raises(RobustCertError):
        PolicySmooth(cartpole_pd, sigma=0.0)
    agent = PolicySmooth(cartpole_pd, sigma=0.2)
    with pytest.raises(RobustCertError):
        agent.certify(cartpole, 5, [0.1], alpha=1.5)
    with pytest.raises(RobustCertError, match="bound"):
        agent.certify(cartpole, 5, [0.1], bound="hoeffding")
    with pytest.raises(RobustCertError, match="not a lower bound"):
        certify_returns([3.0, 5.0], [0.0], 0.2, return_lower_bound=4.0)
    with pytest.raises(RobustCertError, match="budget"):
        certify_returns([3.0, 5.0], [-1.0], 0.2)
    with pytest.raises(RobustCertError, match="cannot make environment"):
        env_factory("NoSuchEnv-v0")
    with pytest.raises(RobustCertError, match="one discrete action"):
        run_episodes(cartpole, lambda obs: np.zeros((len(obs), 2)), 0.2, 2, seed=0)
    with pytest.raises(RobustCertError, match="clean environment"):
        run_episodes(lambda: make_env("CartPole-v1", sigma=0.1), cartpole_pd, 0.2, 2, seed=0)


def test_atari_smoke():
    pytest.importorskip("ale_py")
    pytest.importorskip("cv2")
    pong = env_factory("pong", max_episode_steps=25)
    seen = []

    def noop(inputs):
        seen.append(inputs.shape)
        return constant_action(0)(inputs)

    episodes = PolicySmooth(noop, sigma=0.1, frame_stack=4, num_envs=2).rollout(pong, 2, seed=0)
    assert episodes.returns.shape == (2,) and seen[0] == (2, 4, 84, 84)
    assert episodes.lengths.tolist() == [25, 25]  # the time limit counts agent steps, not raw frames
    assert make_env("pong", sigma=0.1, frame_stack=4, max_episode_steps=5).reset(seed=0)[0].shape == (4, 84, 84)


# --------------------------------------------------------------------------- command line
def test_cli_certify_policy(tmp_path):
    from robustcert.cli import main

    out = tmp_path / "cert.tsv"
    args = ["certify-policy", "--env", "CartPole-v1", "--policy", "cartpole-pd", "--sigma", "0.2", "--episodes",
            "30", "--budgets", "0,0.2,0.4", "--out", str(out), "--max-episode-steps", "100", "--frame-stack", "3"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out, sep="\t")
    assert list(table.budget) == [0.0, 0.2, 0.4] and np.all(np.diff(table.certified_return) < 0)
    sidecar = json.loads(out.with_name(out.name + ".json").read_text())
    assert sidecar["parameters"]["episodes"] == 30 and sum(sidecar["parameters"]["alpha_spending"].values()) == 0.05
    assert sum(sidecar["returns_histogram"].values()) == 30
    again = CliRunner().invoke(main, args)  # never clobbers results already written
    assert again.exit_code == 2 and "already exists" in again.output
    missing = CliRunner().invoke(main, args[:4] + ["nope.pt"] + args[5:-4] + ["--out", str(tmp_path / "x.tsv")])
    assert missing.exit_code == 2 and "policy not found" in missing.output
    plotted = CliRunner().invoke(main, ["plot", str(out), "--out", str(tmp_path / "cert.png")])
    assert plotted.exit_code == 0, plotted.output
    assert (tmp_path / "cert.png").stat().st_size > 1000


# --------------------------------------------------------------------------- the committed experiment
def test_committed_attacks_never_beat_the_certificate():
    """results/policy: every attack (all budgets, horizons) stays above both certificates (DKW and CP)."""
    attacks = pd.read_csv(RESULTS / "cartpole-attack-all.tsv", sep="\t")
    files = sorted(RESULTS.glob("cartpole-sigma*.tsv"))
    assert len(files) == 4 and len(attacks) >= 40
    for path in files:
        certificate = pd.read_csv(path, sep="\t")
        merged = attacks.merge(certificate[["sigma", "budget", "certified_return"]], on=["sigma", "budget"])
        assert len(merged) == len(attacks[attacks.sigma == certificate.sigma[0]]), path.name
        assert (merged.attacked_mean >= merged.certified_return).all(), path.name
    assert (attacks.max_perturbation_norm <= attacks.budget + 1e-6).all()
    # the attack is not idle: at the largest budgets it costs the agent most of its return
    assert attacks.attacked_mean.min() < 0.5 * attacks.attacked_mean.max()
