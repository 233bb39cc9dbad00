import csv
import importlib
import os
import sys

import numpy as np
import pytest
import torch
from torch.distributions import Categorical, Normal, kl_divergence
from torch.func import functional_call

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
# the tests run side by side (-n auto), some in scripts of their own: OpenMP threads that spin while they wait
# would take the cores from the others (the scripts started from here inherit this)
os.environ.setdefault("OMP_WAIT_POLICY", "passive")
# tiny networks and batches: one intra-op thread for the whole session, faster than two on a small busy machine
# (under load, one Rainbow switch test took 49 s with two, 12 s with one); the classic-control scripts' command line
# sets one thread too, their train() leaves it to the caller; the learning tests' bounds were measured with one and
# with two
torch.set_num_threads(1)


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """Run in an empty folder so that runs/ and wandb/ land there."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "learning: trains an agent to a score (slow); .ci/run repeats them with ATEN_CPU_CAPABILITY=default"
    )


def assert_learns(run_dir, solved_by, floor, target=475.0, window=20):
    """The learning tests' criterion, about the algorithm rather than one trajectory's last episodes.

    The run counts as solved at the first episode where the mean return over the last `window` episodes
    reaches `target`; that must happen within `solved_by` env steps. After it, the mean over every later
    `window` consecutive episodes, up to the end of the run, must stay at `floor` or above: a policy that
    forgets what it learned fails, a few bad episodes do not. One seeded trajectory is reproducible only on
    the same CPU kernels and thread count; elsewhere the run goes another way, like another seed, so the
    bounds carry the margin measured over many seeds, kernels and thread counts (see each test). `solved_by`
    well below the run's budget also makes the run show that it stays solved. Returns (solved step, lowest mean).
    """
    with open(os.path.join(run_dir, "metrics.csv")) as f:
        rows = [r for r in csv.DictReader(f) if r["metric"] == "charts/episodic_return"]
    steps = np.array([int(r["global_step"]) for r in rows])
    returns = np.array([float(r["value"]) for r in rows])
    assert len(returns) >= window, f"only {len(returns)} episodes"
    means = np.convolve(returns, np.ones(window) / window, "valid")  # means[i]: episodes i .. i + window - 1
    reached = np.flatnonzero(means >= target)
    assert len(reached), f"never a mean of {target:g} over {window} episodes; the best was {means.max():.1f}"
    solved_at, lowest = steps[reached[0] + window - 1], means[reached[0] :].min()
    assert solved_at <= solved_by, f"a mean of {target:g} over {window} episodes first at step {solved_at:,}"
    assert lowest >= floor, f"solved at step {solved_at:,}, then a mean over {window} episodes of {lowest:.1f}"
    return solved_at, lowest


# a few seconds of training per script (the networks are the defaults, the runs tiny): for the tests of what all
# six scripts share
TINY_RUNS = {
    "reinforce": dict(num_envs=2, episodes_per_update=4, total_timesteps=300, eval_episodes=0, vf_iters=5),
    "natural_pg": dict(num_envs=2, episodes_per_update=4, total_timesteps=300, eval_episodes=0, vf_iters=5),
    "trpo": dict(num_envs=2, num_steps=64, total_timesteps=256, eval_episodes=0, vf_epochs=2),
    "ppo_atari": dict(
        num_envs=2, num_steps=64, num_minibatches=2, update_epochs=2, total_timesteps=256, eval_episodes=0
    ),
    "dqn_atari": dict(
        total_timesteps=600, learning_starts=200, buffer_size=1000, target_network_frequency=100, eval_episodes=0
    ),
    "rainbow_atari": dict(
        total_timesteps=300,
        learning_starts=100,
        train_frequency=1,
        buffer_size=1000,
        target_network_frequency=100,
        eval_episodes=0,
        network="der",
    ),
}


def train(name, **flags):
    """The tiny run of the script `name` with `flags` on top; returns the run folder."""
    module = importlib.import_module(name)
    return module.train(module.Args(**{**TINY_RUNS[name], **flags}))


def read_metrics(run_dir, skip=("charts/SPS",)):
    """The rows of the run's metrics.csv (global_step, metric, value, as text), less the metrics in `skip` (the
    steps per second differ from run to run)."""
    with open(os.path.join(run_dir, "metrics.csv")) as f:
        return [row for row in csv.DictReader(f) if row["metric"] not in skip]


def values_of(run_dir, metric):
    return [float(r["value"]) for r in read_metrics(run_dir) if r["metric"] == metric]


def assert_fails_before_training(name, flags, message):
    """train() of `name`'s tiny run with `flags` stops with a one-line error that matches `message` (re.search)
    and has written nothing: no runs/ folder in the current directory (use the in_tmp fixture)."""
    with pytest.raises(SystemExit, match=message) as e:
        train(name, **flags)
    assert str(e.value).startswith("error: ") and "\n" not in str(e.value), str(e.value)
    assert not os.path.exists("runs"), "nothing may be written before the input is checked"


# ---------------------------------------------------------------- a small float64 policy of natural_pg.py or trpo.py


def small_policy(module, discrete, seed=0, obs_dim=3, hidden=6, batch=40):
    """A float64 policy of `module`'s Agent (natural_pg or trpo: the family policy-agent) with few parameters (~80),
    away from uniform so that its Fisher is not special: (agent, states, pi_old's outputs, pi_old's log std or None
    when discrete)."""
    torch.manual_seed(seed)
    agent = module.Agent(obs_dim, 3 if discrete else 2, discrete, hidden=hidden).double()
    with torch.no_grad():
        agent.actor[-1].weight.mul_(100.0)
        if not discrete:
            agent.log_std.copy_(torch.tensor([-0.5, 0.3]))
    obs = torch.randn(batch, obs_dim, dtype=torch.float64)
    with torch.no_grad():
        old_out = agent.actor(obs)
    old_log_std = None if discrete else agent.log_std.detach().clone()
    return agent, obs, old_out, old_log_std


def dense_fisher(agent, obs, old_out, old_log_std):
    """F as the Hessian of theta -> mean KL(pi_old || pi_theta), the KL from torch.distributions, the Hessian by
    torch.autograd.functional.hessian (theta: the actor's parameters, then the log std)."""
    names = [n for n, _ in agent.actor.named_parameters()]
    shapes = [p.shape for p in agent.actor.parameters()]

    def kl(theta):
        params, i = {}, 0
        for name, shape in zip(names, shapes, strict=True):
            params[name] = theta[i : i + shape.numel()].reshape(shape)
            i += shape.numel()
        out = functional_call(agent.actor, params, (obs,))
        if agent.discrete:
            return kl_divergence(Categorical(logits=old_out), Categorical(logits=out)).mean()
        return kl_divergence(Normal(old_out, old_log_std.exp()), Normal(out, theta[i:].exp())).sum(-1).mean()

    theta = torch.nn.utils.parameters_to_vector(agent.policy_params()).detach()
    return torch.autograd.functional.hessian(kl, theta)


def kl_grad(module, agent, obs, old_out, old_log_std):
    """grad_theta mean KL(pi_old || pi_theta), kept differentiable for Fisher-vector products."""
    return module.flat_grad(agent.mean_kl(obs, old_out, old_log_std), agent.policy_params(), create_graph=True)
