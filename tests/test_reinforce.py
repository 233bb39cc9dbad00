"""reinforce.py: the estimator against closed-form gradients, the math against naive loops, and the user's view."""

import dataclasses
import functools
import os

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import TINY_RUNS, assert_fails_before_training, assert_learns, read_metrics, values_of

import reinforce as rf

TINY = TINY_RUNS["reinforce"]


# ---------------------------------------------------------------- test envs with spaces the script must handle


class RecordingBoxEnv(gym.Env):
    """5 steps, obs Box(2), actions Box([-1, -0.5], [1, 0.5]); remembers every action it was given."""

    received = []
    observation_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    action_space = gym.spaces.Box(np.array([-1.0, -0.5], np.float32), np.array([1.0, 0.5], np.float32))

    def __init__(self, render_mode=None):
        self.render_mode = render_mode

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self.observation_space.sample() * 0, {}

    def step(self, action):
        RecordingBoxEnv.received.append(np.array(action))
        self.t += 1
        return np.zeros(2, np.float32), -float(np.sum(np.square(action))), self.t >= 5, False, {}


gym.register("RecordingBox-v0", entry_point=RecordingBoxEnv)


# ---------------------------------------------------------------- the math against naive loops


def naive_reward_to_go(rewards, terminations, truncations, bootstrap, gamma):
    """r_{k,to-go} = sum_{l>=k} gamma^(l-k) r_l to the episode's end, + gamma^(end-k+1) V(last obs) if truncated."""
    T, N = rewards.shape
    out = np.zeros((T, N))
    for n in range(N):
        for k in range(T):
            total = 0.0
            for step in range(k, T):
                total += gamma ** (step - k) * rewards[step, n]
                if terminations[step, n]:
                    break
                if truncations[step, n]:
                    total += gamma ** (step - k + 1) * bootstrap[step, n]
                    break
            out[k, n] = total
    return out


def naive_step_in_episode(episode_over):
    T, N = episode_over.shape
    k = np.zeros((T, N))
    for n in range(N):
        start = 0
        for t in range(T):
            k[t, n] = t - start
            if episode_over[t, n]:
                start = t + 1
    return k


def random_rollout(seed, T=60, N=5):
    rng = np.random.default_rng(seed)
    rewards, bootstrap = rng.normal(size=(2, T, N))
    terminations = (rng.random((T, N)) < 0.08).astype(np.float32)
    truncations = (rng.random((T, N)) < 0.08).astype(np.float32)
    terminations[5, 0] = truncations[5, 0] = 1.0  # both at once: gymnasium allows it, the termination counts
    assert terminations.sum() > 3 and truncations.sum() > 3
    return rewards, terminations, truncations, bootstrap


@pytest.mark.parametrize("gamma", [0.99, 0.9, 1.0])
def test_reward_to_go_matches_naive_double_loop(gamma):
    rewards, terminations, truncations, bootstrap = random_rollout(0)
    args = [torch.tensor(x, dtype=torch.float64) for x in (rewards, terminations, truncations, bootstrap)]
    got = rf.reward_to_go(*args, gamma).numpy()
    np.testing.assert_allclose(got, naive_reward_to_go(rewards, terminations, truncations, bootstrap, gamma))


def test_reward_to_go_bootstraps_truncation_not_termination():
    t = lambda *x: torch.tensor([[v] for v in x], dtype=torch.float64)  # noqa: E731  [T=len, N=1]
    r, v = t(1.0, 2.0), t(0.0, 10.0)
    terminated = rf.reward_to_go(r, t(0.0, 1.0), t(0.0, 0.0), v, 0.9)
    truncated = rf.reward_to_go(r, t(0.0, 0.0), t(0.0, 1.0), v, 0.9)
    both = rf.reward_to_go(r, t(0.0, 1.0), t(0.0, 1.0), v, 0.9)  # gymnasium: the termination counts
    np.testing.assert_allclose(terminated[:, 0], [1.0 + 0.9 * 2.0, 2.0])
    np.testing.assert_allclose(truncated[:, 0], [1.0 + 0.9 * (2.0 + 0.9 * 10.0), 2.0 + 0.9 * 10.0])
    np.testing.assert_allclose(both[:, 0], terminated[:, 0])


def test_gradient_discounts_match_naive_double_loop():
    _, terminations, truncations, _ = random_rollout(1)
    episode_over = np.maximum(terminations, truncations)
    k = rf.step_in_episode(torch.tensor(episode_over, dtype=torch.float64)).numpy()
    np.testing.assert_array_equal(k, naive_step_in_episode(episode_over))
    # gamma^k as train() forms it, against a product of gammas counted step by step
    T, N = episode_over.shape
    naive = np.ones((T, N))
    for n in range(N):
        for t in range(1, T):
            naive[t, n] = 1.0 if episode_over[t - 1, n] else naive[t - 1, n] * 0.9
    np.testing.assert_allclose(0.9 ** torch.tensor(k), naive)


def test_mean_baseline_is_the_mean_of_the_other_episodes_at_the_same_step():
    rng = np.random.default_rng(2)
    k = np.concatenate([np.arange(n) for n in (5, 3, 7, 1, 5)]).astype(np.float64)
    returns = rng.normal(size=k.shape)
    got = rf.mean_baseline(torch.tensor(returns), torch.tensor(k)).numpy()
    for i in range(len(k)):
        others = [returns[j] for j in range(len(k)) if k[j] == k[i] and j != i]
        assert got[i] == pytest.approx(np.mean(others) if others else 0.0)


def test_policy_gradient_loss_by_hand():
    logprob = torch.tensor([-0.1, -0.2, -0.3], requires_grad=True)
    discounts, returns, baselines = (
        torch.tensor([1.0, 0.5, 1.0]),
        torch.tensor([3.0, 2.0, 1.0]),
        torch.tensor([1.0, 1.0, 2.0]),
    )
    loss = rf.policy_gradient_loss(logprob, discounts, returns, baselines, num_episodes=2)
    assert loss.item() == pytest.approx(-(-0.1 * 2.0 - 0.2 * 0.5 * 1.0 + 0.3 * 1.0) / 2)
    loss.backward()  # d loss / d log pi = -gamma^k (r_to-go - r_base) / M
    np.testing.assert_allclose(logprob.grad.numpy(), [-1.0, -0.25, 0.5])


# ---------------------------------------------------------------- the estimator against closed-form gradients

MU = torch.tensor([10.0, 11.0, 13.0], dtype=torch.float64)  # bandit mean rewards; the offset makes baselines matter


@functools.lru_cache  # the variance test reuses the unbiasedness test's batches
def bandit_gradient_estimates(baseline, batches=2000, episodes=8, seed=0):
    """One-step bandit, softmax policy pi(a) = softmax(theta)_a, rewards MU[a] + N(0, 1): the script's
    estimate of grad U(theta) per batch of `episodes` episodes, [batches, 3]."""
    gen = torch.Generator().manual_seed(seed)
    theta = torch.tensor([0.2, -0.1, 0.0], dtype=torch.float64, requires_grad=True)
    estimates = []
    for _ in range(batches):
        actions = torch.multinomial(torch.softmax(theta.detach(), 0), episodes, replacement=True, generator=gen)
        rewards = (MU[actions] + torch.randn(episodes, generator=gen, dtype=torch.float64)).unsqueeze(0)  # [T=1, N]
        ones, zeros = torch.ones_like(rewards), torch.zeros_like(rewards)
        returns = rf.reward_to_go(rewards, ones, zeros, zeros, 0.99)[0]
        k = rf.step_in_episode(ones)[0]
        r_base = {"none": zeros[0], "mean": rf.mean_baseline(returns, k), "value": torch.full_like(returns, 11.5)}
        logprob = rf.categorical_logprob(theta.expand(episodes, 3), actions)
        loss = rf.policy_gradient_loss(logprob, 0.99**k, returns, r_base[baseline], episodes)
        estimates.append(-torch.autograd.grad(loss, theta)[0])
    p = torch.softmax(theta.detach(), 0)
    return torch.stack(estimates), p * (MU - p @ MU)  # and the closed form: dU/dtheta_j = p_j (mu_j - U)


@pytest.mark.parametrize("baseline", ["none", "mean", "value"])
def test_estimator_matches_the_closed_form_gradient_on_a_bandit(baseline):
    estimates, exact = bandit_gradient_estimates(baseline)
    se = estimates.std(0) / np.sqrt(len(estimates))
    assert torch.all((estimates.mean(0) - exact).abs() < 4 * se), (estimates.mean(0), exact, se)
    assert se.max() < 0.1 * exact.abs().max(), "too few batches to tell a wrong estimator apart"


def test_baselines_lower_the_variance_of_the_estimate():
    variance = {b: bandit_gradient_estimates(b)[0].var(0).sum().item() for b in ("none", "mean", "value")}
    assert variance["mean"] < 0.2 * variance["none"] and variance["value"] < 0.2 * variance["none"], variance


def chain_gradient_estimates(discount_gradient, baseline, gamma=0.5, batches=1000, episodes=8):
    """Two steps, s0 then s1, two actions each, tabular softmax policy theta [2, 2], deterministic
    rewards: U(theta) = pi(.|s0) . R0 + gamma pi(.|s1) . R1, so dU/dtheta[s1] carries gamma^1."""
    gen = torch.Generator().manual_seed(1)
    R = torch.tensor([[1.0, 2.0], [0.0, 3.0]], dtype=torch.float64)
    theta = torch.tensor([[0.3, -0.2], [-0.4, 0.1]], dtype=torch.float64, requires_grad=True)
    states = torch.tensor([0, 1]).repeat_interleave(episodes)  # [T * N], rollout order [T, N]
    estimates = []
    for _ in range(batches):
        actions = torch.multinomial(torch.softmax(theta.detach(), 1), episodes, replacement=True, generator=gen)
        rewards = R.gather(1, actions)  # [T=2, N]
        terminations = torch.tensor([[0.0], [1.0]], dtype=torch.float64).expand(2, episodes)
        returns = rf.reward_to_go(rewards, terminations, torch.zeros_like(rewards), torch.zeros_like(rewards), gamma)
        k = rf.step_in_episode(terminations).reshape(-1)
        returns = returns.reshape(-1)
        r_base = rf.mean_baseline(returns, k) if baseline == "mean" else torch.zeros_like(returns)
        discounts = gamma**k if discount_gradient else torch.ones_like(k)
        logprob = rf.categorical_logprob(theta[states], actions.reshape(-1))
        loss = rf.policy_gradient_loss(logprob, discounts, returns, r_base, episodes)
        estimates.append(-torch.autograd.grad(loss, theta)[0])
    p = torch.softmax(theta.detach(), 1)
    exact = p * (R - (p * R).sum(1, keepdim=True)) * torch.tensor([[1.0], [gamma]], dtype=torch.float64)
    return torch.stack(estimates), exact


@pytest.mark.parametrize("baseline", ["none", "mean"])
def test_gamma_k_makes_the_estimate_the_gradient_of_the_discounted_return(baseline):
    estimates, exact = chain_gradient_estimates(True, baseline)
    se = estimates.std(0) / np.sqrt(len(estimates))
    assert torch.all((estimates.mean(0) - exact).abs() < 4 * se), (estimates.mean(0), exact, se)
    # without gamma^k the second state's gradient is 1/gamma times too large: the test sees the difference
    estimates, exact = chain_gradient_estimates(False, baseline)
    se = estimates.std(0) / np.sqrt(len(estimates))
    assert torch.all((estimates.mean(0)[0] - exact[0]).abs() < 4 * se[0])
    assert torch.all((estimates.mean(0)[1] - exact[1]).abs() > 4 * se[1])


# ---------------------------------------------------------------- the policies


def test_logprobs_and_entropies_match_torch_distributions():
    torch.manual_seed(0)
    logits, actions = torch.randn(500, 5), torch.randint(0, 5, (500,))
    dist = torch.distributions.Categorical(logits=logits)
    torch.testing.assert_close(rf.categorical_logprob(logits, actions), dist.log_prob(actions))

    mean, log_std, box_actions = torch.randn(500, 3), torch.randn(3), 3 * torch.randn(500, 3)
    normal = torch.distributions.Normal(mean, log_std.exp())
    torch.testing.assert_close(rf.gaussian_logprob(box_actions, mean, log_std), normal.log_prob(box_actions).sum(-1))

    obs = torch.randn(64, 4)
    for discrete, acts in [(True, torch.randint(0, 3, (64,))), (False, torch.randn(64, 3))]:
        agent = rf.Agent(4, 3, discrete)
        if not discrete:
            agent.log_std.data = torch.tensor([-0.5, 0.0, 0.7])
        logprob, entropy = agent.logprob_and_entropy(obs, acts)
        out = agent.actor(obs)
        d = (
            torch.distributions.Categorical(logits=out)
            if discrete
            else torch.distributions.Independent(torch.distributions.Normal(out, agent.log_std.exp()), 1)
        )
        torch.testing.assert_close(logprob, d.log_prob(acts))
        torch.testing.assert_close(entropy, d.entropy())


def test_sampled_actions_follow_the_policy():
    torch.manual_seed(0)
    agent = rf.Agent(2, 3, discrete=True)
    obs = torch.zeros(20000, 2)
    with torch.no_grad():
        agent.actor[-1].bias.copy_(torch.tensor([0.0, 1.0, 2.0]))
        probs = torch.softmax(agent.actor(obs[:1])[0], 0)
        counts = np.bincount(agent.sample(obs).numpy(), minlength=3) / 20000
    np.testing.assert_allclose(counts, probs.numpy(), atol=0.015)
    gaussian = rf.Agent(2, 2, discrete=False)
    with torch.no_grad():
        gaussian.log_std.copy_(torch.tensor([np.log(0.5), np.log(2.0)]))
        samples = gaussian.sample(obs) - gaussian.actor(obs)
    np.testing.assert_allclose(samples.std(0).numpy(), [0.5, 2.0], rtol=0.03)


def test_box_actions_are_clipped_for_the_env_only(in_tmp):
    RecordingBoxEnv.received.clear()
    rf.train(rf.Args(**{**TINY, "env_id": "RecordingBox-v0", "total_timesteps": 200}))
    received = np.array(RecordingBoxEnv.received)
    assert np.all(received >= [-1.0, -0.5]) and np.all(received <= [1.0, 0.5])
    # sigma = 1 at the start: many samples fall outside the bounds, and the env got the bound instead
    assert np.mean(np.isclose(np.abs(received[:, 1]), 0.5)) > 0.3


def test_running_observation_statistics_match_numpy():
    agent = rf.Agent(3, 2, discrete=True, normalize_obs=True)
    rng = np.random.default_rng(0)
    batches = [rng.normal(loc=[1.0, -2.0, 5.0], scale=[0.1, 3.0, 10.0], size=(n, 3)) for n in (7, 50, 13)]
    for b in batches:
        agent.obs_rms.update(torch.tensor(b, dtype=torch.float32))
    everything = np.concatenate(batches)
    np.testing.assert_allclose(agent.obs_rms.mean.numpy(), everything.mean(0), rtol=1e-5)
    np.testing.assert_allclose(agent.obs_rms.var.numpy(), everything.var(0), rtol=1e-4)
    z = agent.normalize(torch.tensor(everything, dtype=torch.float32))
    np.testing.assert_allclose(z.mean(0).numpy(), 0.0, atol=1e-4)
    assert rf.Agent(3, 2, True).normalize(torch.ones(1, 3)).eq(1).all(), "without the flag obs pass unchanged"


# ---------------------------------------------------------------- whole episodes, counted steps


def test_each_update_learns_from_exactly_m_whole_episodes(in_tmp):
    run_dir = rf.train(rf.Args(**{**TINY, "num_envs": 3, "episodes_per_update": 5, "total_timesteps": 600}))
    rows = read_metrics(run_dir)
    episodes_between_updates, count, lengths = [], 0, 0
    for row in rows:
        if row["metric"] == "charts/episodic_return":
            count += 1
        elif row["metric"] == "charts/episodic_length":
            lengths += float(row["value"])
        elif row["metric"] == "losses/policy_loss":
            episodes_between_updates.append(count)
            count = 0
            assert int(row["global_step"]) == lengths, "global_step counts the steps of the learned episodes"
    assert len(episodes_between_updates) >= 3 and set(episodes_between_updates) == {5}


# ---------------------------------------------------------------- it learns


# Measured on an AVX-512 machine, 100k steps: seeds 1-16 with default kernels and 1 thread, 1-3 avx512 and 1-2 avx2
# with 1 thread, 1-6 default and avx512 and 1-2 avx2 with 2 threads (35 runs): solved (a mean of 475 over 20
# episodes) at 18k-63k steps (bound 80k), lowest 20-episode mean after it 343 (floor 250)
@pytest.mark.learning
@pytest.mark.parametrize("seed", [1, 2])
def test_learns_cartpole(in_tmp, seed):
    run_dir = rf.train(rf.Args(seed=seed, total_timesteps=100_000, eval_episodes=0))
    assert_learns(run_dir, solved_by=80_000, floor=250)  # see conftest.assert_learns


# ---------------------------------------------------------------- bad input: one line, before training

BAD = [
    (dict(episodes_per_update=0), "--episodes-per-update must be positive"),
    (dict(vf_iters=-1), "--vf-iters must be positive"),
    (dict(learning_rate=-1.0), "--learning-rate"),
    (dict(baseline="median"), "--baseline must be none, mean or value"),
    (dict(env_id="Kartpole"), "unknown env id"),
]


@pytest.mark.parametrize("overrides,message", BAD)
def test_bad_input_fails_before_training(in_tmp, overrides, message):
    assert_fails_before_training("reinforce", overrides, message)


# ---------------------------------------------------------------- end to end


def test_train_save_and_evaluate_from_the_checkpoint(in_tmp):
    run_dir = rf.train(rf.Args(**{**TINY, "total_timesteps": 2000, "save_model": True, "eval_episodes": 2}))
    metrics = {row["metric"] for row in read_metrics(run_dir, skip=())}
    for name in ["charts/episodic_return", "charts/episodic_length", "charts/SPS", "eval/episodic_return"]:
        assert name in metrics
    for name in ["losses/policy_loss", "losses/value_loss", "losses/entropy", "losses/explained_variance"]:
        assert name in metrics
    # CartPole pays 1 per step: a return is the episode's length
    assert values_of(run_dir, "charts/episodic_return") == values_of(run_dir, "charts/episodic_length")

    checkpoint = os.path.join(run_dir, "reinforce.pt")
    agent, env_id = rf.load_checkpoint(checkpoint, torch.device("cpu"))
    assert env_id == "CartPole-v1"


def test_box_env_with_normalized_observations_saves_and_evaluates(in_tmp):
    args = rf.Args(**{**TINY, "env_id": "Pendulum-v1", "num_envs": 2, "episodes_per_update": 2, "total_timesteps": 800})
    run_dir = rf.train(dataclasses.replace(args, normalize_obs=True, save_model=True, eval_episodes=1))
    assert len(values_of(run_dir, "losses/policy_loss")) == 2  # 2 x 200-step episodes per update
    agent, env_id = rf.load_checkpoint(os.path.join(run_dir, "reinforce.pt"), torch.device("cpu"))
    assert env_id == "Pendulum-v1" and agent.normalize_obs and agent.obs_rms.count.item() == 800
    assert rf.evaluate(agent, rf.Args(env_id=env_id, eval_episodes=1, seed=0), torch.device("cpu"))[0] < 0


@pytest.mark.parametrize("flags", [dict(baseline="none"), dict(baseline="mean"), dict(discount_gradient=False)])
def test_the_algorithm_flags_change_the_run(in_tmp, flags):
    default = read_metrics(rf.train(rf.Args(**TINY)))
    changed = read_metrics(rf.train(rf.Args(**{**TINY, **flags})))
    policy_losses = lambda rows: [r["value"] for r in rows if r["metric"] == "losses/policy_loss"]  # noqa: E731
    assert policy_losses(default)[0] != policy_losses(changed)[0]


def test_mujoco_hopper_trains_saves_and_evaluates(in_tmp):
    flags = {"env_id": "Hopper-v5", "normalize_obs": True, "save_model": True, "eval_episodes": 1}
    run_dir = rf.train(rf.Args(**{**TINY, **flags}))
    returns = values_of(run_dir, "charts/episodic_return")
    assert returns and all(np.isfinite(returns))
    assert values_of(run_dir, "eval/episodic_return")
    assert os.path.exists(os.path.join(run_dir, "reinforce.pt"))
