"""The tests every script has, written once and run over the six (the algorithm tests stay in test_<script>.py)."""

import dataclasses
import glob
import importlib
import json
import os
import re
import shutil
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import ROOT, TINY_RUNS, assert_fails_before_training, read_metrics, train

SCRIPTS = list(TINY_RUNS)
ATARI = ["ppo_atari", "dqn_atari", "rainbow_atari"]  # the others play gymnasium's classic-control and MuJoCo envs
# what a same-seed run also exercises in some scripts, and the loss it must have logged
SAME_SEED = {
    "dqn_atari": (dict(num_envs=2, loss="huber"), "losses/td_loss"),  # --num-envs > 1 and the Huber loss
    "rainbow_atari": (dict(num_envs=2, total_timesteps=240), "losses/cross_entropy"),  # --num-envs > 1
}


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_flag_has_a_help_line(name):
    source = open(os.path.join(ROOT, f"{name}.py")).read()
    for field in dataclasses.fields(importlib.import_module(name).Args):
        after = source.split(f"    {field.name}: ", 1)[1].splitlines()[1].strip()
        assert after.startswith('"""') and len(after) > 10, f"{name}.py: --{field.name} has no help text"


@pytest.mark.parametrize("name", SCRIPTS)
def test_same_seed_same_metrics_other_seed_other_metrics(in_tmp, name):
    flags, loss = SAME_SEED.get(name, ({}, None))
    first, again, other = (read_metrics(train(name, **flags, seed=seed)) for seed in (7, 7, 8))
    assert loss is None or any(row["metric"] == loss for row in first)
    assert first == again
    assert first != other


# ---------------------------------------------------------------- the run folder


@pytest.fixture(scope="module", params=SCRIPTS)
def tracked_run(request, tmp_path_factory):
    """One tiny run of each script, with --track (offline), --save-model and --exp-name mine, for the tests that
    read its folder: (script, run folder, Args, the thread counts train() gave torch.set_num_threads)."""
    name = request.param
    module = importlib.import_module(name)
    args = module.Args(**{**TINY_RUNS[name], "track": True, "wandb_project_name": f"{name}-test"})
    args = dataclasses.replace(args, save_model=True, exp_name="mine")
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.chdir(tmp_path_factory.mktemp(name))
        monkeypatch.setenv("WANDB_MODE", "offline")
        threads_set = []
        monkeypatch.setattr(torch, "set_num_threads", threads_set.append)
        return name, os.path.abspath(module.train(args)), args, threads_set


def test_train_leaves_the_thread_count_alone(tracked_run):
    """train() may run in a notebook: the process's torch thread count is the caller's (the classic-control
    scripts' command line sets one thread, outside train())."""
    _, _, _, threads_set = tracked_run
    assert threads_set == []


def test_track_writes_an_offline_wandb_run(tracked_run):
    _, run_dir, _, _ = tracked_run
    assert glob.glob(os.path.join(run_dir, "wandb", "offline-run-*", "run-*.wandb"))


def test_the_run_folder_holds_the_flags_metrics_checkpoint_and_model(tracked_run):
    """runs/<env>__<exp-name>__<seed>__<time>/: args.json (every flag), metrics.csv, checkpoint.pt (with the replay
    memory in it), the model as <exp-name>.pt, wandb/; nothing else."""
    name, run_dir, args, _ = tracked_run
    assert re.fullmatch(rf"{re.escape(args.env_id)}__mine__1__\d{{10}}(~\d+)?", os.path.basename(run_dir))
    checkpoint = torch.load(os.path.join(run_dir, "checkpoint.pt"), weights_only=True)
    assert checkpoint["global_step"] >= args.total_timesteps  # the final one (episode-batched scripts may go past)
    assert ("replay" in checkpoint) == (name in ("dqn_atari", "rainbow_atari"))
    assert sorted(os.listdir(run_dir)) == ["args.json", "checkpoint.pt", "metrics.csv", "mine.pt", "wandb"]
    with open(os.path.join(run_dir, "args.json")) as f:
        assert json.load(f) == json.loads(json.dumps(dataclasses.asdict(args)))
    with open(os.path.join(run_dir, "metrics.csv")) as f:
        assert f.readline() == "global_step,metric,value\n" and len(f.readlines()) > 1
    module = importlib.import_module(name)
    _, env_id = module.load_checkpoint(os.path.join(run_dir, "mine.pt"), torch.device("cpu"))
    assert env_id == args.env_id
    assert module.Args().exp_name == name  # by default runs/<env>__<script>__..., the model <script>.pt


# what else a script's evaluation of the saved model is given on the command line
EVAL_FLAGS = {
    "rainbow_atari": ["--eval-epsilon", "1"],  # an untrained greedy policy may never press FIRE: no game would end
    "trpo": ["--eval-deterministic"],
}


def test_eval_checkpoint_on_the_command_line_plays_the_saved_model(tracked_run, tmp_path):
    """The saved model, evaluated by the script's command line: a line per game or episode, the mean line, and
    scores.json (the returns and the flags) in a new eval-<time>/ folder beside the model."""
    name, run_dir, args, _ = tracked_run
    model = shutil.copy(os.path.join(run_dir, "mine.pt"), tmp_path)  # the eval folder goes beside it, not in the run
    cmd = [sys.executable, os.path.join(ROOT, f"{name}.py"), "--eval-checkpoint", model, "--eval-episodes", "2"]
    out = subprocess.run([*cmd, *EVAL_FLAGS.get(name, [])], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    record = record_of(tmp_path)
    games = [line for line in out.stdout.splitlines() if line.startswith("eval episode ")]
    assert games == [f"eval episode {i}/2: return {r:.1f}" for i, r in enumerate(record["returns"], 1)]
    assert f"{args.env_id}: mean return" in out.stdout and "over 2 episodes" in out.stdout, out.stdout
    assert len(record["returns"]) == 2 and record["mean"] == pytest.approx(np.mean(record["returns"]))
    assert record["args"]["eval_checkpoint"] == model and record["args"]["env_id"] == args.env_id


def record_of(folder):
    """scores.json of the one evaluation folder eval-<time>/ in `folder`."""
    (evaluation,) = glob.glob(os.path.join(folder, "eval-*"))
    with open(os.path.join(evaluation, "scores.json")) as f:
        return json.load(f)


def test_eval_checkpoint_with_resume_is_refused_on_the_command_line(tracked_run, tmp_path):
    name, run_dir, _, _ = tracked_run
    model = shutil.copy(os.path.join(run_dir, "mine.pt"), tmp_path)
    cmd = [sys.executable, os.path.join(ROOT, f"{name}.py"), "--resume", run_dir, "--eval-checkpoint", model]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert (
        out.returncode == 1
        and out.stderr == "error: --resume trains on and --eval-checkpoint only evaluates; give one of them\n"
    )
    assert not glob.glob(os.path.join(tmp_path, "eval-*"))


@pytest.mark.parametrize("name", SCRIPTS)
def test_runs_started_in_the_same_second_get_their_own_folders(in_tmp, monkeypatch, name):
    module = importlib.import_module(name)
    monkeypatch.setattr(module.time, "time", lambda: 1_700_000_000.5)
    dirs = []
    for i in range(3):
        with module.Run(module.Args(**TINY_RUNS[name]), 100) as run:
            run.log(i, {"charts/x": float(i)})
        dirs.append(run.dir)
    assert len(set(dirs)) == 3 and dirs[0].endswith("__1700000000") and dirs[2].endswith("~3")
    for i, d in enumerate(dirs):
        assert open(os.path.join(d, "metrics.csv")).read().splitlines()[1:] == [f"{i},charts/x,{float(i)}"]


# ---------------------------------------------------------------- bad input: one line, before training


class MultiDiscreteEnv(gym.Env):
    observation_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    action_space = gym.spaces.MultiDiscrete([2, 3])

    def __init__(self, render_mode=None):
        self.render_mode = render_mode


gym.register("EveryScriptMultiDiscreteTest-v0", entry_point=MultiDiscreteEnv)

# the flags every script has: (flags, what the one-line error says); a script's own flags are in test_<script>.py
SHARED_FLAGS = [
    (dict(checkpoint_every=-1), r"--checkpoint-every must be 0 or more, got -1$"),
    (
        dict(capture_video=True, eval_episodes=0),
        "--capture-video records the evaluation games, but --eval-episodes is 0",
    ),
    (dict(resume="runs/x", eval_checkpoint="x.pt"), "--resume trains on and --eval-checkpoint only evaluates"),
    (dict(num_envs=0), r"--num-envs must be positive, at most 2\*\*20, got 0$"),
    (dict(total_timesteps=0), r"--total-timesteps must be positive, at most 2\*\*30, got 0$"),
    (dict(eval_episodes=-1), "--eval-episodes must be 0 or more, got -1$"),
    (dict(gamma=0.0), r"--gamma must be in \(0, 1\], got 0.0$"),
    (dict(gamma=1.5), r"--gamma must be in \(0, 1\], got 1.5$"),
]


def env_ids_it_cannot_play(name):
    """--env-id rows: an unknown id, an id of the other family's scripts, and (gymnasium envs) spaces without a
    policy."""
    if name in ATARI:
        other = "CartPole-v1 is not an Atari game: reinforce.py, natural_pg.py or trpo.py run it"
        return [
            (dict(env_id="Pong"), "unknown Atari env id 'Pong'$"),
            (dict(env_id="CartPole-v1"), f"^error: {re.escape(f'{other} ({name}.py plays Atari)')}$"),
        ]
    other = "is an Atari game, learned from pixels: ppo_atari.py, dqn_atari.py or rainbow_atari.py run it"
    return [
        (dict(env_id="CartPole-v7"), "unknown env id 'CartPole-v7'; did you mean CartPole-v1"),
        (dict(env_id="BreakoutNoFrameskip-v4"), f"^error: BreakoutNoFrameskip-v4 {re.escape(other)}$"),
        (dict(env_id="EveryScriptMultiDiscreteTest-v0"), f"action space MultiDiscrete; {name}.py handles Discrete"),
        (dict(env_id="FrozenLake-v1"), rf"observation space Discrete\(16\); {name}.py needs a flat Box"),
    ]


@pytest.mark.parametrize(
    "name,flags,message",
    [
        pytest.param(name, flags, message, id=f"{name}-" + ",".join(f"{k}={v}" for k, v in flags.items()))
        for name in SCRIPTS
        for flags, message in SHARED_FLAGS + env_ids_it_cannot_play(name)
    ],
)
def test_bad_input_fails_before_training(in_tmp, name, flags, message):
    assert_fails_before_training(name, flags, message)


# each script's command line: a mistake it catches, and the one line it prints (stderr, exit 1, nothing written)
COMMAND_LINE = {
    "reinforce": ("--env-id Acrobat-v1", re.escape("error: unknown env id 'Acrobat-v1'; did you mean Acrobot-v1?")),
    "natural_pg": (
        "--epsilon -1",
        re.escape("error: --epsilon must be positive, at most 1 (the size of the step), got -1.0"),
    ),
    "trpo": ("--max-kl -1", re.escape("error: --max-kl must be positive, at most 1 (delta, a KL), got -1.0")),
    "ppo_atari": (
        "--num-envs 3 --num-steps 5",
        re.escape("error: --num-minibatches 4 does not divide the batch of 15 (--num-envs 3 x --num-steps 5)"),
    ),
    # the replay memory checked against this machine's memory (no stub): 10^11 transitions fit nowhere
    "dqn_atari": (
        "--buffer-size 100000000000",
        r"error: the replay memory needs 706100\.00 GB \(100,000,000,000 transitions x 7,061 bytes\) but [\d.]+ GB "
        r"is available \(MemAvailable\), 1 GiB of it kept for the rest of the run; use --buffer-size [\d,]+ or less",
    ),
    "rainbow_atari": (
        "--buffer-size 100000000000",
        r"error: the replay memory needs 707700\.00 GB \(100,000,000,000 transitions x 7,077 bytes\) but [\d.]+ GB "
        r"is available \(MemAvailable\), 1 GiB of it kept for the rest of the run; use --buffer-size [\d,]+ or less",
    ),
}


@pytest.mark.parametrize("name", SCRIPTS)
def test_bad_input_on_the_command_line_prints_one_line(in_tmp, name):
    argv, line = COMMAND_LINE[name]
    cmd = [sys.executable, os.path.join(ROOT, f"{name}.py"), *argv.split()]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 1
    (printed,) = out.stderr.strip().splitlines()
    assert re.fullmatch(line, printed), printed
    assert not os.path.exists("runs")


# ---------------------------------------------------------------- checkpoints that cannot be evaluated

BREAKOUT = {"env_id": "BreakoutNoFrameskip-v4", "num_actions": 4}
CARTPOLE = {"env_id": "CartPole-v1", "obs_dim": 4, "action_dim": 2, "discrete": True, "normalize_obs": False}


def rainbow_mismatches(rb):
    """Weights of a 6-action network said to have 4 actions; a network config the weights do not fit; a config
    with a key the network does not take."""
    config = {name: getattr(rb.Args(), name) for name in rb.NETWORK_FLAGS}
    model = rb.RainbowNetwork(4, 6, **config).state_dict()
    configs = [(config, 4), ({**config, "dueling": False}, 6), ({**config, "colour": 1}, 6)]
    return [{**BREAKOUT, "model": model, "network": c, "num_actions": n} for c, n in configs]


# what differs between the scripts: checkpoints with the keys load_checkpoint expects whose model does not fit
MISMATCHED = {
    "reinforce": lambda m: [{**CARTPOLE, "model": m.Agent(4, 3, True).state_dict()}],  # 3 actions saved, 2 said
    "natural_pg": lambda m: [{**CARTPOLE, "model": m.Agent(4, 3, True).state_dict()}],
    "trpo": lambda m: [{**CARTPOLE, "model": m.Agent(4, 3, True).state_dict()}],
    "ppo_atari": lambda m: [{**BREAKOUT, "model": m.Agent(6).state_dict()}],  # 6 actions saved, 4 said
    "dqn_atari": lambda m: [{**BREAKOUT, "model": m.QNetwork(4, 6).state_dict()}],
    "rainbow_atari": rainbow_mismatches,
}


@pytest.mark.parametrize("name", SCRIPTS)
def test_corrupt_foreign_and_mismatched_checkpoints(tmp_path, name):
    """--eval-checkpoint of a file that is not this script's model stops in one line that says which and why."""
    module = importlib.import_module(name)
    garbage, missing, code, foreign = (tmp_path / f for f in ("garbage.pt", "missing.pt", "code.pt", "foreign.pt"))
    garbage.write_bytes(b"not a checkpoint at all")
    torch.save({"model": {}, "evil": module.Args()}, code)  # loading it needs unpickling code: refused
    torch.save({"q_net": {}}, foreign)
    cases = [(path, f"cannot read checkpoint {re.escape(str(path))}: ") for path in (garbage, missing, code)]
    cases.append((foreign, f"is not a {name}.py checkpoint"))
    for i, checkpoint in enumerate(MISMATCHED[name](module)):
        torch.save(checkpoint, tmp_path / f"mismatched-{i}.pt")
        cases.append((tmp_path / f"mismatched-{i}.pt", f"does not fit {name}.py's network"))
    for path, message in cases:
        with pytest.raises(SystemExit, match=message) as e:
            module.load_checkpoint(str(path), torch.device("cpu"))
        assert str(e.value).startswith("error: ") and "\n" not in str(e.value), path.name
