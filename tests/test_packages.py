"""A copied file needs only what its docstring says: with the optional packages missing each script trains and
evaluates, and a flag whose package is missing is refused in one line before anything is made."""

import ast
import os
import subprocess
import sys

import pytest
from conftest import ROOT, TINY_RUNS, assert_fails_before_training

ATARI = ["ppo_atari", "dqn_atari", "rainbow_atari"]
CLASSIC = ["reinforce", "natural_pg", "trpo"]
# each package the code or its libraries import, by the name pip installs it under
PIP_NAME = {
    "cv2": "opencv-python-headless",  # gymnasium's AtariPreprocessing: the Atari evaluation env
    "moviepy": "moviepy",  # gymnasium's RecordVideo: --capture-video
    "pygame": "gymnasium[classic-control]",  # classic-control frames for --capture-video
    "tensorboard": "tensorboard",  # --tensorboard
    "wandb": "wandb>=0.31",  # --track
    "ale_py": "ale-py>=0.12",  # the Atari emulator
    "mujoco": "gymnasium[mujoco]",  # MuJoCo ids
}
REACHES = {name: ["cv2", "moviepy", "tensorboard", "wandb", "ale_py"] for name in ATARI}
REACHES |= {name: ["moviepy", "pygame", "tensorboard", "wandb", "mujoco"] for name in CLASSIC}

# runs a script as `python <script> ...` would, with some packages impossible to import (for gymnasium's lazy
# imports too: an import of a name that sys.modules maps to None raises ImportError)
DRIVER = """
import runpy, sys
for name in {missing!r}:
    sys.modules[name] = None
sys.argv = [{script!r}, *{argv!r}]
runpy.run_path({script!r}, run_name="__main__")
"""


def run_without(missing, name, *argv, cwd):
    script = os.path.join(ROOT, f"{name}.py")
    code = DRIVER.format(missing=list(missing), script=script, argv=list(argv))
    env = {**os.environ, "WANDB_MODE": "offline"}
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=600, env=env)


def tiny_flags(name, **extra):
    flags = []
    for key, value in {**TINY_RUNS[name], **extra}.items():
        flag = "--" + key.replace("_", "-")
        flags += [flag] if value is True else [flag.replace("--", "--no-", 1)] if value is False else [flag, str(value)]
    return flags


@pytest.mark.parametrize("name", ATARI + CLASSIC)
def test_the_docstring_says_what_to_install(name):
    doc = ast.get_docstring(ast.parse(open(os.path.join(ROOT, f"{name}.py")).read()))
    install = next(line for line in doc.splitlines() if line.strip().startswith("pip install"))
    # the docstring's floors of torch, gymnasium and tyro are requirements.txt's
    lines = open(os.path.join(ROOT, "requirements.txt")).read().replace("[classic-control,mujoco]", "").splitlines()
    floors = [f'"{line.split(",")[0]}"' for line in lines if line.startswith(("torch>=", "gymnasium>=", "tyro>="))]
    assert len(floors) == 3, floors
    for needed in [*floors, "numpy"]:
        assert needed in install, (name, needed)
    assert ('"ale-py>=0.12"' in install and "opencv-python-headless" in install) == (name in ATARI)
    for module in REACHES[name]:
        assert PIP_NAME[module] in doc, (name, module)


@pytest.mark.parametrize("name", CLASSIC)
def test_a_classic_script_trains_and_evaluates_without_any_optional_package(tmp_path, name):
    out = run_without(PIP_NAME, name, *tiny_flags(name, eval_episodes=1), cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "CartPole-v1: mean return" in out.stdout


def test_an_atari_id_without_ale_py_says_what_it_needs(tmp_path):
    out = run_without(["ale_py"], "reinforce", "--env-id", "BreakoutNoFrameskip-v4", cwd=tmp_path)
    assert out.returncode == 1 and out.stderr.strip().splitlines()[-1] == (
        "error: unknown env id 'BreakoutNoFrameskip-v4' (Atari ids need ale-py and ppo_atari.py, dqn_atari.py or "
        "rainbow_atari.py)"
    )
    assert not os.path.exists(tmp_path / "runs")


@pytest.mark.parametrize("name", ATARI)
def test_an_atari_script_trains_and_evaluates_without_tensorboard_wandb_moviepy(tmp_path, name):
    # dqn and rainbow: uniform random play, so that the untrained greedy policy's game ends (it may never serve)
    extra = {} if name == "ppo_atari" else {"eval_epsilon": 1.0}
    out = run_without(
        ["tensorboard", "wandb", "moviepy"], name, *tiny_flags(name, eval_episodes=1, **extra), cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "BreakoutNoFrameskip-v4: mean return" in out.stdout


@pytest.mark.parametrize("name", ATARI)
def test_an_atari_script_without_opencv_refuses_before_training(tmp_path, name):
    out = run_without(["cv2"], name, *tiny_flags(name, eval_episodes=1), cwd=tmp_path)
    assert out.returncode == 1 and out.stderr.strip().splitlines()[-1] == (
        "error: the evaluation needs OpenCV: pip install opencv-python-headless (or give --eval-episodes 0)"
    )
    assert "Traceback" not in out.stderr and not os.path.exists(tmp_path / "runs")
    # without the evaluation it trains
    assert run_without(["cv2"], name, *tiny_flags(name, eval_episodes=0), cwd=tmp_path).returncode == 0


MISSING = [  # flag, its package, what the line says
    (dict(tensorboard=True), "tensorboard", "--tensorboard needs tensorboard: pip install tensorboard"),
    (dict(track=True), "wandb", "--track needs wandb: pip install 'wandb>=0.31'"),
    (dict(capture_video=True, eval_episodes=1), "moviepy", "--capture-video needs moviepy: pip install moviepy"),
]


@pytest.mark.parametrize("name", ATARI + CLASSIC)
@pytest.mark.parametrize("flags,module,line", MISSING, ids=[m[1] for m in MISSING])
def test_a_flag_whose_package_is_missing_is_refused_in_one_line(in_tmp, monkeypatch, name, flags, module, line):
    monkeypatch.setitem(sys.modules, module, None)
    assert_fails_before_training(name, flags, f"^error: {line.replace('(', '.').replace(')', '.')}$")


@pytest.mark.parametrize("name", ["ppo_atari", "reinforce"])
def test_eval_checkpoint_with_a_missing_package_makes_no_folder(tmp_path, name):
    """--eval-checkpoint --capture-video without moviepy (and, for Atari, without OpenCV): one line, no eval folder."""
    model = tmp_path / "model.pt"
    model.write_bytes(b"not needed: the flags are checked first")
    out = run_without(["moviepy"], name, "--eval-checkpoint", str(model), "--capture-video", cwd=tmp_path)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines()[-1] == "error: --capture-video needs moviepy: pip install moviepy"
    assert not list(tmp_path.glob("eval-*"))
