"""The tests a family of scripts shares, written once over the family (the blocks they share word for word are
checked in test_shared.py): the Fisher-vector product and the conjugate gradient of natural_pg.py and trpo.py, what
reinforce.py, natural_pg.py and trpo.py do with gymnasium's classic-control and MuJoCo envs, and the replay memory's
check against this machine's memory in dqn_atari.py and rainbow_atari.py."""

import dataclasses
import glob
import importlib
import os
import re
import sys

import pytest
import torch
from conftest import dense_fisher, kl_grad, small_policy, train

CONJUGATE_GRADIENT = ["natural_pg", "trpo"]  # the scripts that carry the families fisher and policy-agent
GYMNASIUM = ["reinforce", "natural_pg", "trpo"]  # the scripts that play classic-control and MuJoCo envs


# ---------------------------------------------------------------- the conjugate gradient


@pytest.mark.parametrize("name", CONJUGATE_GRADIENT)
def test_conjugate_gradient_solves_a_random_spd_system(name):
    conjugate_gradient = importlib.import_module(name).conjugate_gradient
    gen = torch.Generator().manual_seed(0)
    Q = torch.linalg.qr(torch.randn(20, 20, dtype=torch.float64, generator=gen))[0]
    A = Q @ torch.diag(torch.logspace(-1, 1, 20, dtype=torch.float64)) @ Q.T
    b = torch.randn(20, dtype=torch.float64, generator=gen)
    # n = 20 steps in exact arithmetic; in floating point the directions lose conjugacy, so give it 3n
    torch.testing.assert_close(conjugate_gradient(lambda v: A @ v, b, 60), torch.linalg.solve(A, b))
    assert (conjugate_gradient(lambda v: A @ v, b, 3) - torch.linalg.solve(A, b)).norm() > 1e-3


@pytest.mark.parametrize("discrete", [True, False])
@pytest.mark.parametrize("name", CONJUGATE_GRADIENT)
def test_fisher_vector_product_is_the_hessian_of_the_kl_times_v(name, discrete):
    """lecture: F v = grad_theta ((grad_theta KL)^T v), plus the damping lambda v, against the dense Hessian of
    the mean KL(pi_old || pi_theta) at theta_old."""
    module = importlib.import_module(name)
    agent, obs, old_out, old_log_std = small_policy(module, discrete)
    F = dense_fisher(agent, obs, old_out, old_log_std)
    assert torch.linalg.eigvalsh(F).max() > 1e-2, "a Fisher this small would make the comparison empty"
    grad = kl_grad(module, agent, obs, old_out, old_log_std)
    torch.testing.assert_close(grad, torch.zeros_like(grad), atol=1e-12, rtol=0)  # the KL is minimal at theta_old
    for damping in (0.0, 0.1):
        for seed in range(3):
            v = torch.randn(len(F), dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
            got = module.fisher_vector_product(grad, agent.policy_params(), v, damping)
            torch.testing.assert_close(got, F @ v + damping * v, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("discrete", [True, False])
@pytest.mark.parametrize("name", CONJUGATE_GRADIENT)
def test_conjugate_gradient_on_fisher_vector_products_matches_a_dense_solve(name, discrete):
    """u = (F + lambda I)^-1 g by CG on Fisher-vector products, g a policy gradient from sampled actions and random
    advantages: exact after n iterations (n parameters), and within 1% in direction at the script's --cg-iters."""
    module = importlib.import_module(name)
    agent, obs, old_out, old_log_std = small_policy(module, discrete)
    with torch.no_grad():
        actions = agent.sample(obs)
    advantages = torch.randn(len(obs), dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    logprob, _ = agent.logprob_and_entropy(obs, actions)
    g = module.flat_grad((logprob * advantages).mean(), agent.policy_params())
    F = dense_fisher(agent, obs, old_out, old_log_std) + 0.1 * torch.eye(len(g), dtype=torch.float64)
    grad = kl_grad(module, agent, obs, old_out, old_log_std)
    fvp = lambda v: module.fisher_vector_product(grad, agent.policy_params(), v, 0.1)  # noqa: E731
    exact = torch.linalg.solve(F, g)
    torch.testing.assert_close(module.conjugate_gradient(fvp, g, len(g)), exact, rtol=1e-6, atol=1e-8)  # n steps
    u = module.conjugate_gradient(fvp, g, module.Args().cg_iters)  # natural_pg.py 10, trpo.py 25
    assert torch.nn.functional.cosine_similarity(u, exact, dim=0) > 0.99


# ---------------------------------------------------------------- classic-control and MuJoCo envs


@pytest.mark.parametrize("name", GYMNASIUM)
def test_capture_video_writes_mp4(in_tmp, name):
    run_dir = train(name, eval_episodes=1, capture_video=True)
    assert glob.glob(os.path.join(run_dir, "videos", "*.mp4"))


@pytest.mark.parametrize("name", GYMNASIUM)
def test_capture_video_without_pygame_says_what_is_missing(in_tmp, monkeypatch, name):
    monkeypatch.setitem(sys.modules, "pygame", None)  # classic-control envs draw with pygame
    with pytest.raises(SystemExit, match=r"^error: cannot make CartPole-v1: DependencyNotInstalled: pygame") as e:
        train(name, eval_episodes=1, capture_video=True)
    assert "\n" not in str(e.value) and not os.path.exists("runs")


@pytest.mark.parametrize("name", GYMNASIUM)
def test_a_mujoco_env_without_mujoco_says_what_is_missing(in_tmp, monkeypatch, name):
    monkeypatch.setitem(sys.modules, "mujoco", None)  # as if gymnasium[mujoco] were not installed
    for module in [m for m in sys.modules if m.startswith("gymnasium.envs.mujoco")]:
        monkeypatch.delitem(sys.modules, module)
    with pytest.raises(SystemExit, match=r"^error: cannot make Hopper-v5: DependencyNotInstalled: .*mujoco") as e:
        train(name, env_id="Hopper-v5")
    assert "\n" not in str(e.value) and not os.path.exists("runs")


# ---------------------------------------------------------------- the replay memory against this machine's memory


@pytest.mark.parametrize("name,gb,bytes_per_transition", [("dqn_atari", "7.06", 7061), ("rainbow_atari", "7.08", 7077)])
def test_memory_check_refuses_with_numbers_and_a_size_that_fits(monkeypatch, name, gb, bytes_per_transition):
    module = importlib.import_module(name)
    args = module.Args(buffer_size=1_000_000)
    monkeypatch.setattr(module, "available_memory", lambda device: (2**30 + 5 * 10**9, "available (MemAvailable)"))
    with pytest.raises(SystemExit) as e:
        module.check_memory(args, (4, 84, 84))
    message = str(e.value)
    needs = f"error: the replay memory needs {gb} GB (1,000,000 transitions x {bytes_per_transition:,} bytes)"
    assert message.startswith(needs)
    assert "6.07 GB is available" in message and "\n" not in message
    fits = int(re.search(r"--buffer-size ([\d,]+) or less", message).group(1).replace(",", ""))
    assert fits == 5 * 10**9 // bytes_per_transition
    module.check_memory(dataclasses.replace(args, buffer_size=fits), (4, 84, 84))  # the suggestion passes
    with pytest.raises(SystemExit):
        module.check_memory(dataclasses.replace(args, buffer_size=fits + 1), (4, 84, 84))
