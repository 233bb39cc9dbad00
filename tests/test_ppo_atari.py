"""ppo_atari.py: the math against naive references, the env's behaviour it relies on, and the user's view."""

import glob
import os

import numpy as np
import pytest
import torch
from conftest import TINY_RUNS, assert_fails_before_training, read_metrics

import ppo_atari as ppo

TINY = TINY_RUNS["ppo_atari"]


# ---------------------------------------------------------------- the math


def naive_gae(rewards, values, next_values, terminations, truncations, gamma, lam):
    """A_t = sum_l (gamma lambda)^l delta_{t+l}, summed forward until the episode ends (inclusive)."""
    T, N = rewards.shape
    adv = np.zeros((T, N))
    for n in range(N):
        for t in range(T):
            total, weight = 0.0, 1.0
            for k in range(t, T):
                bootstrap = 0.0 if terminations[k, n] else gamma * next_values[k, n]
                total += weight * (rewards[k, n] + bootstrap - values[k, n])
                if terminations[k, n] or truncations[k, n]:
                    break
                weight *= gamma * lam
            adv[t, n] = total
    return adv


@pytest.mark.parametrize("gamma,lam", [(0.99, 0.95), (0.9, 1.0), (0.5, 0.0)])
def test_gae_matches_naive_forward_sum(gamma, lam):
    rng = np.random.default_rng(0)
    T, N = 50, 4
    rewards, values, next_values = rng.normal(size=(3, T, N))
    terminations = (rng.random((T, N)) < 0.1).astype(np.float32)
    truncations = (rng.random((T, N)) < 0.1).astype(np.float32)
    assert terminations.sum() > 3 and truncations.sum() > 3 and (terminations * truncations).sum() > 0
    args = [torch.tensor(x, dtype=torch.float64) for x in (rewards, values, next_values, terminations, truncations)]
    got = ppo.gae(*args, gamma, lam).numpy()
    np.testing.assert_allclose(got, naive_gae(rewards, values, next_values, terminations, truncations, gamma, lam))


def test_gae_bootstraps_through_truncation_not_termination():
    t = lambda *x: torch.tensor([[v] for v in x], dtype=torch.float64)  # noqa: E731  [T=len, N=1]
    r, v, next_v = t(1.0), t(0.5), t(2.0)
    terminated = ppo.gae(r, v, next_v, t(1.0), t(0.0), 0.9, 0.95)
    truncated = ppo.gae(r, v, next_v, t(0.0), t(1.0), 0.9, 0.95)
    assert terminated.item() == pytest.approx(1.0 - 0.5)
    assert truncated.item() == pytest.approx(1.0 + 0.9 * 2.0 - 0.5)
    # and the sum stops at a truncation: the next step's TD error does not leak back
    two = ppo.gae(t(1.0, 100.0), t(0.5, 0.0), t(2.0, 0.0), t(0.0, 0.0), t(1.0, 0.0), 0.9, 0.95)
    assert two[0].item() == pytest.approx(1.0 + 0.9 * 2.0 - 0.5)


def test_clipped_surrogate_at_hand_picked_ratios():
    ratios = torch.tensor([0.5, 0.95, 1.0, 1.05, 1.5])
    # min(r A, clip(r, 0.9, 1.1) A) worked out by hand for A = +1 and A = -1
    for adv, expected in [(1.0, [0.5, 0.95, 1.0, 1.05, 1.1]), (-1.0, [-0.9, -0.95, -1.0, -1.05, -1.5])]:
        for i, r in enumerate(ratios):
            loss = ppo.clipped_surrogate(r.reshape(1), torch.tensor([adv]), 0.1)
            assert loss.item() == pytest.approx(-expected[i])
        loss = ppo.clipped_surrogate(ratios, torch.full((5,), adv), 0.1)
        assert loss.item() == pytest.approx(-np.mean(expected))


def test_clipped_surrogate_gradient_vanishes_only_where_clipping_binds():
    ratio = torch.tensor([0.5, 1.0, 1.5, 0.5, 1.0, 1.5], requires_grad=True)
    adv = torch.tensor([1.0, 1.0, 1.0, -1.0, -1.0, -1.0])
    ppo.clipped_surrogate(ratio, adv, 0.2).backward()
    # A > 0: no push above 1 + eps; A < 0: no push below 1 - eps; elsewhere d(-mean rA)/dr = -A / 6
    np.testing.assert_allclose(ratio.grad.numpy(), [-1 / 6, -1 / 6, 0.0, 0.0, 1 / 6, 1 / 6], atol=1e-7)


def test_sample_actions_logprob_matches_categorical():
    torch.manual_seed(0)
    logits = torch.randn(1000, 6)
    actions, logprob = ppo.sample_actions(logits)
    dist = torch.distributions.Categorical(logits=logits)
    torch.testing.assert_close(logprob, dist.log_prob(actions))
    # the sampled frequencies follow the policy
    probs = torch.softmax(torch.tensor([0.0, 1.0, 2.0]), 0)
    many, _ = ppo.sample_actions(torch.log(probs).expand(20000, 3))
    np.testing.assert_allclose(np.bincount(many.numpy(), minlength=3) / 20000, probs.numpy(), atol=0.015)


def test_logprob_and_entropy_match_categorical():
    torch.manual_seed(0)
    logits, actions = torch.randn(100, 6), torch.randint(0, 6, (100,))
    logprob, entropy = ppo.logprob_and_entropy(logits, actions)
    dist = torch.distributions.Categorical(logits=logits)
    torch.testing.assert_close(logprob, dist.log_prob(actions))
    torch.testing.assert_close(entropy, dist.entropy())


def test_agent_shapes_and_init():
    agent = ppo.Agent(num_actions=6)
    logits, value = agent(torch.randint(0, 256, (3, 4, 84, 84), dtype=torch.uint8))
    assert logits.shape == (3, 6) and value.shape == (3,)
    # orthogonal init: the policy head's rows are orthogonal with norm 0.01 (near-uniform first policy)
    w = agent.actor.weight.detach()
    torch.testing.assert_close(w @ w.T, 0.01**2 * torch.eye(6), atol=1e-7, rtol=0)
    assert torch.all(agent.actor.bias == 0)


# ---------------------------------------------------------------- the env and what the script relies on


def test_env_ids_map_to_rom_and_sticky_actions():
    assert ppo.atari_game("BreakoutNoFrameskip-v4") == ("breakout", 0.0)
    assert ppo.atari_game("ALE/Breakout-v5") == ("breakout", 0.25)
    assert ppo.atari_game("MsPacmanNoFrameskip-v4") == ("ms_pacman", 0.0)


@pytest.mark.parametrize(
    "env_id,hint",
    [
        ("BreakotNoFrameskip-v4", "BreakoutNoFrameskip-v4"),
        ("Breakout-v4", "BreakoutNoFrameskip-v4"),
    ],
)
def test_unknown_env_id_fails_with_close_matches(env_id, hint):
    with pytest.raises(SystemExit, match="unknown Atari env id") as e:
        ppo.atari_game(env_id)
    assert hint in str(e.value)


def test_life_loss_and_game_over_as_the_script_reads_them():
    """Pins ale-notes.md: with life_loss_info + SameStep, a life loss terminates and the game goes on;
    at a game over the env resets at once (zero-padded stack) and is_game_over says so."""
    envs = ppo.make_envs("BreakoutNoFrameskip-v4", 2)
    obs, info = envs.reset(seed=0)
    lives = info["lives"]
    rng = np.random.default_rng(0)
    life_losses, games = 0, 0
    while games < 3:
        obs, reward, terminated, truncated, info = envs.step(rng.integers(0, 4, 2))
        over = ppo.is_game_over(terminated, truncated, info["lives"], lives)
        for i in np.flatnonzero(terminated & ~over):  # a life loss: one life fewer, same game, stack continues
            assert info["lives"][i] == lives[i] - 1 and obs[i, 0].any()
            life_losses += 1
        for i in np.flatnonzero(over):  # a new game: full lives, the stack is three zero frames then one
            assert info["lives"][i] == 5 and not obs[i, :3].any() and obs[i, 3].any()
            assert (info["final_obs"][i] != obs[i]).any()
            games += 1
        lives = info["lives"]
    envs.close()
    assert life_losses >= 4 * games  # Breakout: 5 lives, the last loss is the game over


def test_is_game_over_cases():
    terminated = np.array([True, True, False, False, True])
    truncated = np.array([False, False, True, False, False])
    lives = np.array([3, 5, 2, 4, 0])
    prev = np.array([4, 1, 2, 4, 0])  # life loss, reset after game over, time limit, nothing, lives-less game over
    np.testing.assert_array_equal(
        ppo.is_game_over(terminated, truncated, lives, prev), [False, True, True, False, True]
    )


# ---------------------------------------------------------------- bad input: one line, before training

BAD = [
    (dict(num_minibatches=3), "does not divide the batch"),
    # the std of one advantage is NaN: today's --num-envs 1 --num-steps 4 --num-minibatches 4 would train on NaN
    (dict(num_envs=1, num_steps=4, num_minibatches=4, total_timesteps=64), "minibatches of 1 step: normalizing"),
    (dict(num_steps=-1), "--num-steps must be positive"),
    (dict(num_minibatches=0), "--num-minibatches must be positive"),
    (dict(update_epochs=0), "--update-epochs must be positive"),
    (dict(total_timesteps=100), "less than one batch"),
]


@pytest.mark.parametrize("overrides,message", BAD)
def test_bad_input_fails_before_training(in_tmp, overrides, message):
    assert_fails_before_training("ppo_atari", overrides, message)


# ---------------------------------------------------------------- end to end


def test_train_evaluate_and_video(in_tmp):
    run_dir = ppo.train(ppo.Args(**{**TINY, "total_timesteps": 768, "eval_episodes": 1, "capture_video": True}))
    metrics = {row["metric"] for row in read_metrics(run_dir, skip=())}
    for name in ["charts/episodic_return", "charts/SPS", "losses/policy_loss", "losses/value_loss", "losses/entropy"]:
        assert name in metrics
    for name in ["losses/approx_kl", "losses/clipfrac", "charts/learning_rate", "eval/episodic_return"]:
        assert name in metrics
    assert glob.glob(os.path.join(run_dir, "videos", "*.mp4"))
    # Breakout scores are whole non-negative numbers: a raw game score, not a sum of clipped signs
    returns = [float(r["value"]) for r in read_metrics(run_dir) if r["metric"] == "charts/episodic_return"]
    assert returns and all(r >= 0 and r == int(r) for r in returns)


def test_learning_rate_is_annealed_linearly(in_tmp):
    run_dir = ppo.train(ppo.Args(**{**TINY, "total_timesteps": 512, "learning_rate": 1e-3}))
    lrs = [float(r["value"]) for r in read_metrics(run_dir) if r["metric"] == "charts/learning_rate"]
    np.testing.assert_allclose(lrs, [1e-3, 0.75e-3, 0.5e-3, 0.25e-3])
