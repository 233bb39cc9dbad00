"""The tests a family of scripts shares, written once over the family (the blocks they share word for word are
checked in test_shared.py): the conjugate gradient of natural_pg.py and trpo.py, and what reinforce.py, natural_pg.py
and trpo.py do with gymnasium's classic-control and MuJoCo envs."""

import glob
import importlib
import os
import sys

import pytest
import torch
from conftest import train

CONJUGATE_GRADIENT = ["natural_pg", "trpo"]  # the scripts that carry the family fisher block (conjugate_gradient)
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
