"""natural_pg.py: the Fisher, CG and the two steps against dense naive references, and the user's view."""

import dataclasses
import os

import numpy as np
import pytest
import torch
from conftest import (
    TINY_RUNS,
    assert_fails_before_training,
    assert_learns,
    dense_fisher,
    kl_grad,
    read_metrics,
    small_policy,
    values_of,
)

import natural_pg as npg

TINY = TINY_RUNS["natural_pg"]


# ---------------------------------------------------------------- a small policy and dense references
# (small_policy, dense_fisher and kl_grad in conftest; the Fisher-vector product and CG on it, which natural_pg.py
# shares with trpo.py, in test_families.py)


def naive_categorical_fisher(agent, obs):
    """F = (1/B) sum_s sum_a pi(a|s) grad log pi(a|s) grad log pi(a|s)^T, one backward pass per (s, a)."""
    params = agent.policy_params()
    P = sum(p.numel() for p in params)
    F = torch.zeros(P, P, dtype=torch.float64)
    for s in obs:
        logp = torch.log_softmax(agent.actor(s), -1)
        for a in range(len(logp)):
            g = torch.cat([x.reshape(-1) for x in torch.autograd.grad(logp[a], params, retain_graph=True)])
            F += logp[a].exp().item() * torch.outer(g, g)
    return F / len(obs)


@pytest.mark.parametrize("discrete", [True, False])
def test_fisher_from_score_vectors_is_the_hessian_of_the_kl(discrete):
    agent, obs, old_out, old_log_std = small_policy(npg, discrete)
    F = npg.fisher_matrix(npg.fisher_score_vectors(agent, obs))
    torch.testing.assert_close(F, dense_fisher(agent, obs, old_out, old_log_std), rtol=1e-7, atol=1e-10)
    if discrete:
        torch.testing.assert_close(F, naive_categorical_fisher(agent, obs), rtol=1e-9, atol=1e-12)
    assert torch.linalg.eigvalsh(F).max() > 1e-2, "a Fisher this small would make the comparison empty"


def policy_gradient(agent, obs, seed=0):
    """grad U from sampled actions and random advantages, as train() forms it."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        actions = agent.sample(obs)
    advantages = torch.randn(len(obs), dtype=torch.float64, generator=gen)
    logprob, _ = agent.logprob_and_entropy(obs, actions)
    loss = npg.policy_gradient_loss(logprob, torch.ones_like(advantages), advantages, torch.zeros_like(advantages), 4)
    return -npg.flat_grad(loss, agent.policy_params())


def apply_step(agent, step):
    with torch.no_grad():
        theta = torch.nn.utils.parameters_to_vector(agent.policy_params())
        torch.nn.utils.vector_to_parameters(theta + step, agent.policy_params())


@pytest.mark.parametrize("discrete", [True, False])
@pytest.mark.parametrize("solver", ["exact", "cg"])
def test_natural_step_moves_the_policy_by_epsilon(discrete, solver):
    agent, obs, old_out, old_log_std = small_policy(npg, discrete)
    epsilon, damping = 1e-6, 1e-3
    F = npg.fisher_matrix(npg.fisher_score_vectors(agent, obs))
    F_damped = F + damping * torch.eye(len(F))
    grad_U = policy_gradient(agent, obs)
    if solver == "exact":
        u = torch.linalg.solve(F_damped, grad_U)
    else:  # 10 CG steps: u is not F^-1 grad U, yet grad U^T u = u^T F u (r is orthogonal to the Krylov space)
        grad = kl_grad(npg, agent, obs, old_out, old_log_std)
        u = npg.conjugate_gradient(
            lambda v: npg.fisher_vector_product(grad, agent.policy_params(), v, damping), grad_U, 10
        )
        assert (F_damped @ u - grad_U).norm() > 1e-3 * grad_U.norm(), "CG converged: the claim would go untested"
    step = npg.natural_step(grad_U, u, epsilon)
    assert (0.5 * step @ F_damped @ step).item() == pytest.approx(epsilon, rel=1e-8)
    apply_step(agent, step)
    with torch.no_grad():
        kl = agent.mean_kl(obs, old_out, old_log_std).item()
    # the quadratic model 1/2 dtheta^T F dtheta of the KL holds for a small step ...
    assert kl == pytest.approx((0.5 * step @ F @ step).item(), rel=0.03)
    # ... and the damping takes only a small share of epsilon (with damping 1e-6 it did not: the step ran far
    # along directions F barely sees, where the quadratic model fails, and the KL came out 1000 epsilon)
    assert 0.75 * epsilon < kl <= epsilon


def test_euclidean_step_has_norm_sqrt_2_epsilon_along_the_gradient():
    grad_U = torch.tensor([3.0, -4.0, 12.0], dtype=torch.float64)
    for epsilon in (1e-4, 0.01, 2.0):
        step = npg.euclidean_step(grad_U, epsilon)
        assert step.norm().item() == pytest.approx(np.sqrt(2 * epsilon))
        torch.testing.assert_close(step / step.norm(), grad_U / 13.0)


# ---------------------------------------------------------------- the distributions and the shared estimate


def test_kl_logprob_and_entropy_match_torch_distributions():
    torch.manual_seed(0)
    p, q = torch.randn(500, 5), torch.randn(500, 5)
    torch.testing.assert_close(
        npg.categorical_kl(p, q),
        torch.distributions.kl_divergence(
            torch.distributions.Categorical(logits=p), torch.distributions.Categorical(logits=q)
        ),
    )
    m0, m1, s0, s1 = torch.randn(500, 3), torch.randn(500, 3), torch.randn(3), torch.randn(3)
    normal = lambda m, s: torch.distributions.Normal(m, s.exp())  # noqa: E731
    torch.testing.assert_close(
        npg.gaussian_kl(m0, s0, m1, s1), torch.distributions.kl_divergence(normal(m0, s0), normal(m1, s1)).sum(-1)
    )
    actions = torch.randint(0, 5, (500,))
    torch.testing.assert_close(
        npg.categorical_logprob(p, actions), torch.distributions.Categorical(logits=p).log_prob(actions)
    )
    box_actions = 3 * torch.randn(500, 3)
    torch.testing.assert_close(npg.gaussian_logprob(box_actions, m0, s0), normal(m0, s0).log_prob(box_actions).sum(-1))


def test_reward_to_go_and_step_in_episode_match_naive_loops():
    rng = np.random.default_rng(0)
    T, N, gamma = 40, 3, 0.9
    rewards, bootstrap = rng.normal(size=(2, T, N))
    terminations = (rng.random((T, N)) < 0.1).astype(np.float64)
    truncations = (rng.random((T, N)) < 0.1).astype(np.float64)
    naive, k_naive = np.zeros((T, N)), np.zeros((T, N))
    for n in range(N):
        start = 0
        for t in range(T):
            k_naive[t, n] = t - start
            if terminations[t, n] or truncations[t, n]:
                start = t + 1
            total = 0.0
            for step in range(t, T):
                total += gamma ** (step - t) * rewards[step, n]
                if terminations[step, n]:
                    break
                if truncations[step, n]:
                    total += gamma ** (step - t + 1) * bootstrap[step, n]
                    break
            naive[t, n] = total
    args = [torch.tensor(x) for x in (rewards, terminations, truncations, bootstrap)]
    np.testing.assert_allclose(npg.reward_to_go(*args, gamma).numpy(), naive)
    episode_over = torch.tensor(np.maximum(terminations, truncations))
    np.testing.assert_array_equal(npg.step_in_episode(episode_over).numpy(), k_naive)


# ---------------------------------------------------------------- it learns, and the KL it logs is epsilon


# Measured on an AVX-512 machine, 150k steps: seeds 1-16 with default kernels, 1-12 avx2 and avx512, all with 1
# thread; 1-6 default and avx512 and 1-2 avx2 with 2 threads (54 runs): solved (a mean of 475 over 20 episodes) at
# 25k-91k steps (bound 120k, hence 150k, up from 100k); the policy dips after it at times (seed 13: a 20-episode
# mean of 249 at 54k, back at 500 by the end), so the floor is 150; median logged KL 0.0075-0.0085 in every run
@pytest.mark.learning
@pytest.mark.parametrize("seed", [1, 2])
def test_learns_cartpole(in_tmp, seed):
    run_dir = npg.train(npg.Args(seed=seed, total_timesteps=150_000, eval_episodes=0))
    assert_learns(run_dir, solved_by=120_000, floor=150)  # see conftest.assert_learns
    kls = np.array(values_of(run_dir, "losses/kl"))
    assert np.median(kls) == pytest.approx(0.01, rel=0.5), "the step moves the policy by about epsilon"


# ---------------------------------------------------------------- bad input: one line, before training

BAD = [
    (dict(epsilon=0.0), "--epsilon must be positive"),
    (dict(epsilon=-0.01), "--epsilon must be positive"),
    (dict(damping=-1.0), "--damping must be 0 or more"),
    # F from a batch is singular: F^-1 grad U does not exist, and the solve returns a step of no use
    (dict(damping=0.0, fisher="exact"), "--damping 0 with --metric fisher"),
    (dict(damping=0.0, fisher="cg"), "--damping 0 with --metric fisher"),
    (dict(cg_iters=0), "--cg-iters must be positive"),
    (dict(metric="manhattan"), "--metric must be fisher or euclidean"),
    (dict(fisher="diagonal"), "--fisher must be cg or exact"),
    (dict(episodes_per_update=0), "--episodes-per-update must be positive"),
    (dict(vf_iters=-1), "--vf-iters must be positive"),
    (dict(vf_learning_rate=0.0), "--vf-learning-rate"),
]


@pytest.mark.parametrize("overrides,message", BAD)
def test_bad_input_fails_before_training(in_tmp, overrides, message):
    assert_fails_before_training("natural_pg", overrides, message)


# ---------------------------------------------------------------- end to end


def test_train_and_evaluate_log_every_metric(in_tmp):
    run_dir = npg.train(npg.Args(**{**TINY, "total_timesteps": 1000, "eval_episodes": 2}))
    metrics = {row["metric"] for row in read_metrics(run_dir, skip=())}
    for name in ["charts/episodic_return", "charts/episodic_length", "charts/SPS", "eval/episodic_return"]:
        assert name in metrics
    for name in ["losses/policy_loss", "losses/value_loss", "losses/entropy", "losses/kl", "losses/step_norm"]:
        assert name in metrics


@pytest.mark.parametrize("fisher", ["cg", "exact"])
def test_box_env_with_normalized_observations_saves_and_evaluates(in_tmp, fisher):
    args = npg.Args(**{**TINY, "env_id": "Pendulum-v1", "episodes_per_update": 2, "total_timesteps": 800})
    run_dir = npg.train(dataclasses.replace(args, fisher=fisher, normalize_obs=True, save_model=True))
    kls = values_of(run_dir, "losses/kl")
    assert len(kls) == 2 and all(0.5 * 0.01 < kl < 2 * 0.01 for kl in kls), kls  # 2 x 200-step episodes per update
    agent, env_id = npg.load_checkpoint(os.path.join(run_dir, "natural_pg.pt"), torch.device("cpu"))
    assert env_id == "Pendulum-v1" and agent.normalize_obs and agent.obs_rms.count.item() == 800


def test_exact_and_cg_fisher_take_nearly_the_same_first_step(in_tmp):
    """Same seed, same first batch: the two ways to get u = F^{-1} grad U agree on the step."""
    runs = {f: npg.train(npg.Args(**{**TINY, "fisher": f, "cg_iters": 50})) for f in ("cg", "exact")}
    first = {f: values_of(r, "losses/step_norm")[0] for f, r in runs.items()}
    assert first["cg"] == pytest.approx(first["exact"], rel=1e-3)
    assert values_of(runs["cg"], "losses/policy_loss")[0] == values_of(runs["exact"], "losses/policy_loss")[0]


def test_euclidean_metric_takes_steps_of_norm_sqrt_2_epsilon(in_tmp):
    run_dir = npg.train(npg.Args(**{**TINY, "metric": "euclidean", "epsilon": 0.02}))
    np.testing.assert_allclose(values_of(run_dir, "losses/step_norm"), np.sqrt(0.04), rtol=1e-5)


@pytest.mark.parametrize("flags", [dict(damping=0.5), dict(cg_iters=2), dict(discount_gradient=False)])
def test_the_algorithm_flags_change_the_run(in_tmp, flags):
    default = read_metrics(npg.train(npg.Args(**TINY)))
    changed = read_metrics(npg.train(npg.Args(**{**TINY, **flags})))
    first_kl = lambda rows: [r["value"] for r in rows if r["metric"] == "losses/kl"][0]  # noqa: E731
    assert first_kl(default) != first_kl(changed)
