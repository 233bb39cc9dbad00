"""Runs that survive: checkpoints, --resume, SIGINT/SIGTERM/SIGKILL, the non-finite guard; the same for all six."""

import copy
import csv
import glob
import importlib
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import ROOT, TINY_RUNS, train

# a few seconds of training each, with a checkpoint at the end (and every few steps where asked)
TINY = TINY_RUNS
SCRIPTS = list(TINY)
FIXED_BATCHES = {
    "trpo",
    "ppo_atari",
    "dqn_atari",
    "rainbow_atari",
}  # the others stop at the first update past the total
# the function whose result a planted NaN replaces, and the logged quantity or tensor it reaches first
NAN_AT = {
    "reinforce": "policy_gradient_loss",
    "natural_pg": "policy_gradient_loss",
    "trpo": "gae",
    "ppo_atari": "clipped_surrogate",
    "dqn_atari": "td_target",
    "rainbow_atari": "rainbow_loss",
}


def script(name):
    return importlib.import_module(name)


def read_rows(run_dir):
    with open(os.path.join(run_dir, "metrics.csv")) as f:
        return list(csv.reader(f))


def load(path):
    return torch.load(path, weights_only=True)


def load_state(run_dir):
    """checkpoint.pt, the replay memory in it (read whole: the file is replaced by the next write)."""
    return load(os.path.join(run_dir, "checkpoint.pt"))


def assert_same(a, b, path=""):
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), path
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), f"{path}: {sorted(a.keys() ^ b.keys())}"
        for key in a:
            assert_same(a[key], b[key], f"{path}/{key}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{path}/{i}")
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


def command(name, **flags):
    cmd = [sys.executable, os.path.join(ROOT, f"{name}.py")]
    for key, value in {**TINY[name], **flags}.items():
        flag = "--" + key.replace("_", "-")
        cmd += [flag] if value is True else [flag.replace("--", "--no-", 1)] if value is False else [flag, str(value)]
    return cmd


def wait_for(condition, timeout=300.0):
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, "timed out"
        time.sleep(0.05)


def checkpoint_step(pattern="runs/*/checkpoint.pt"):
    """The step of the newest checkpoint on disk, or -1 (reading may meet a rename: then try again)."""
    paths = glob.glob(pattern)
    try:
        return load(paths[0])["global_step"] if paths else -1
    except Exception:
        return -1


# ---------------------------------------------------------------- resume: the state comes back exactly


@pytest.mark.parametrize("name", SCRIPTS)
def test_resume_restores_everything_the_checkpoint_holds(in_tmp, monkeypatch, name):
    """Resumed at its final step, a run has nothing left to do and writes its checkpoint again: every tensor,
    counter, optimizer moment, schedule and random generator equals what was saved; the replay memory, taken at
    the moment of resuming (before the games in progress are cut), equals the saved one."""
    run_dir = train(name)
    saved = load_state(run_dir)
    module = script(name)
    at_resume = {}
    if hasattr(module, "ReplayMemory"):
        restart_games = module.restart_games

        def spy(memory, obs):
            at_resume["replay"] = copy.deepcopy(module.replay_state(memory))
            restart_games(memory, obs)

        monkeypatch.setattr(module, "restart_games", spy)
    assert train(name, resume=run_dir) == run_dir
    again = load_state(run_dir)
    assert saved["args"].pop("resume") is None and again["args"].pop("resume") == run_dir
    if "replay" in saved:
        replay = saved.pop("replay")
        assert_same(replay, at_resume["replay"])
        assert replay["filled"].sum() > 0
        # after resuming, each env's game in progress ends at its current slot, and a new game starts after it
        restarted = again.pop("replay")
        cur = replay["cur"]
        assert restarted["last"][torch.arange(len(cur)), cur].all() and (restarted["cur"] == cur + 1).all()
    assert_same(saved, again)


@pytest.mark.parametrize("name", SCRIPTS)
def test_resume_goes_on_to_a_raised_total_with_metrics_in_one_piece(in_tmp, name):
    total = TINY[name]["total_timesteps"]
    straight = train(name, total_timesteps=2 * total)
    run_dir = train(name)
    rows_before = read_rows(run_dir)
    assert train(name, total_timesteps=2 * total, resume=run_dir) == run_dir
    assert sorted(os.listdir("runs")) == sorted({os.path.basename(straight), os.path.basename(run_dir)})
    rows = read_rows(run_dir)
    assert rows[: len(rows_before)] == rows_before and len(rows) > len(rows_before)
    assert rows[0] == ["global_step", "metric", "value"] and ["global_step", "metric", "value"] not in rows[1:]
    steps = [int(r[0]) for r in rows[1:]]
    assert steps == sorted(steps), "global_step never goes back"
    final = load(os.path.join(run_dir, "checkpoint.pt"))["global_step"]
    if name in FIXED_BATCHES:
        assert final == load(os.path.join(straight, "checkpoint.pt"))["global_step"]
    else:
        assert final >= 2 * total


# ---------------------------------------------------------------- signals


def start(name, **flags):
    return subprocess.Popen(command(name, **flags), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("name", SCRIPTS)
def test_sigterm_writes_a_checkpoint_and_exits_143_in_one_line(in_tmp, name):
    process = start(name, total_timesteps=10**7, checkpoint_every=TINY[name]["total_timesteps"] // 4)
    wait_for(lambda: glob.glob("runs/*/checkpoint.pt") or process.poll() is not None)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=300)
    assert process.returncode == 143, err
    assert "Traceback" not in err
    last = out.strip().splitlines()[-1]
    match = re.fullmatch(r"interrupted at step ([\d,]+); resume with: python (\S+) --resume (\S+)", last)
    assert match and match[2] == f"{name}.py", last
    state = load(os.path.join(match[3], "checkpoint.pt"))
    assert state["global_step"] == int(match[1].replace(",", ""))
    # metrics.csv is whole up to the checkpoint (flushed before it was written)
    assert os.path.getsize(os.path.join(match[3], "metrics.csv")) >= state["run"]["metrics_bytes"]


def test_sigint_exits_130_and_without_checkpoints_says_so(in_tmp):
    process = start("reinforce", total_timesteps=10**7, checkpoint_every=0)
    wait_for(lambda: glob.glob("runs/*/metrics.csv") and os.path.getsize(glob.glob("runs/*/metrics.csv")[0]) > 100)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=300)
    assert process.returncode == 130 and "Traceback" not in err
    last = out.strip().splitlines()[-1]
    assert re.fullmatch(r"interrupted at step [\d,]+; no checkpoint written \(--checkpoint-every 0\)", last), last
    assert not glob.glob("runs/*/checkpoint.pt")


def test_a_second_signal_stops_at_once_and_the_handlers_go_back_after_the_run(in_tmp, monkeypatch):
    """Within `with Run(...)`: the first SIGTERM asks for a stop after the step (a flag), the second exits at once;
    after the block, the handlers from before are back (here: the test's own)."""
    rf = script("reinforce")
    exits = []
    monkeypatch.setattr(rf.os, "_exit", exits.append)
    mine = lambda signum, frame: None  # noqa: E731
    before = {s: signal.signal(s, mine) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with rf.Run(rf.Args(**TINY["reinforce"]), 300) as run:
            signal.raise_signal(signal.SIGTERM)
            assert run.signal == signal.SIGTERM and not exits  # the first: finish the step, then checkpoint and exit
            signal.raise_signal(signal.SIGTERM)
            assert exits == [143]
        assert signal.getsignal(signal.SIGINT) is mine and signal.getsignal(signal.SIGTERM) is mine
    finally:
        for s, previous in before.items():
            signal.signal(s, previous)


@pytest.mark.parametrize("name", SCRIPTS)
def test_sigkill_resumes_from_the_last_periodic_checkpoint(in_tmp, name):
    every = TINY[name]["total_timesteps"] // 4
    process = start(name, total_timesteps=10**7, checkpoint_every=every)
    wait_for(lambda: checkpoint_step() >= 2 * every or process.poll() is not None)
    process.kill()
    process.communicate(timeout=60)
    (run_dir,) = glob.glob("runs/*")
    step = load(os.path.join(run_dir, "checkpoint.pt"))["global_step"]
    with open(os.path.join(run_dir, "metrics.csv"), "a") as f:
        f.write("99999999,charts/episodic_ret")  # as if killed in the middle of a line
    module = script(name)
    with open(os.path.join(run_dir, "args.json")) as f:
        saved = json.load(f)
    module.train(module.Args(**{**saved, "resume": run_dir, "total_timesteps": step + 2 * every}))
    rows = read_rows(run_dir)
    assert all(len(r) == 3 for r in rows) and "99999999" not in [r[0] for r in rows]
    steps = [int(r[0]) for r in rows[1:]]
    assert steps == sorted(steps) and steps[-1] >= step
    assert load(os.path.join(run_dir, "checkpoint.pt"))["global_step"] >= step + 2 * every


# ---------------------------------------------------------------- damaged checkpoints, wrong flags: one line


@pytest.mark.parametrize("name", SCRIPTS)
def test_a_truncated_checkpoint_fails_resume_in_one_line(in_tmp, name):
    run_dir = train(name, checkpoint_every=TINY[name]["total_timesteps"] // 2)
    size = os.path.getsize(os.path.join(run_dir, "checkpoint.pt"))
    for cut in sorted({0, 1, 100, size // 2, size - 1}):
        damaged = f"{run_dir}-cut"
        shutil.copytree(run_dir, damaged)
        with open(os.path.join(damaged, "checkpoint.pt"), "r+b") as f:
            f.truncate(cut)
        with pytest.raises(SystemExit, match=f"cannot read checkpoint {re.escape(damaged)}/checkpoint.pt") as e:
            train(name, resume=damaged)
        assert "\n" not in str(e.value), str(e.value)
        shutil.rmtree(damaged)


@pytest.mark.parametrize("name", SCRIPTS)
def test_resume_refuses_flags_that_change_the_run(in_tmp, name):
    run_dir = train(name)
    with pytest.raises(SystemExit, match=r"^error: --seed is 2 but the run was started with 1; drop --seed$"):
        train(name, resume=run_dir, seed=2)
    step = load(os.path.join(run_dir, "checkpoint.pt"))["global_step"]
    with pytest.raises(SystemExit, match=r"--total-timesteps [\d,]+ is below the checkpoint's step"):
        train(name, resume=run_dir, total_timesteps=min(step, TINY[name]["total_timesteps"]) - 1)
    with pytest.raises(SystemExit, match="runs/nothing/checkpoint.pt does not exist"):
        train(name, resume="runs/nothing")


def test_the_command_line_takes_the_saved_flags_and_refuses_a_changed_one(in_tmp):
    run_dir = train("reinforce", gamma=0.9)
    # --gamma 0.99 is the default, yet it differs from the run's 0.9: it must not slip through as "not given"
    out = subprocess.run(command("reinforce", resume=run_dir, gamma=0.99), capture_output=True, text=True, timeout=300)
    assert out.returncode == 1 and out.stderr.strip() == (
        "error: --gamma is 0.99 but the run was started with 0.9; drop --gamma"
    )
    # only --resume and a raised total: every other flag comes from the run's args.json
    cmd = [sys.executable, os.path.join(ROOT, "reinforce.py"), "--resume", run_dir, "--total-timesteps", "600"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert load(os.path.join(run_dir, "checkpoint.pt"))["args"]["gamma"] == 0.9


# ---------------------------------------------------------------- non-finite values stop the run


@pytest.mark.parametrize("name", SCRIPTS)
def test_a_planted_nan_stops_the_run_and_keeps_the_last_good_checkpoint(in_tmp, monkeypatch, name):
    module = script(name)
    original = getattr(module, NAN_AT[name])

    def poisoned(*args, **kwargs):
        out = original(*args, **kwargs)
        if not glob.glob("runs/*/checkpoint.pt"):
            return out
        return tuple(x * math.nan for x in out) if isinstance(out, tuple) else out * math.nan

    monkeypatch.setattr(module, NAN_AT[name], poisoned)
    total = TINY[name]["total_timesteps"]
    with pytest.raises(SystemExit) as e:
        train(name, total_timesteps=4 * total, checkpoint_every=total // 2)
    message = str(e.value)
    match = re.fullmatch(r"error: (.+) at step ([\d,]+); training stopped, (\S+) \(step ([\d,]+)\) is kept", message)
    assert match, message
    assert "nan" in match[1].lower()
    kept = load(match[3])
    assert kept["global_step"] == int(match[4].replace(",", "")) < int(match[2].replace(",", ""))
    finite = lambda t: not t.is_floating_point() or torch.isfinite(t).all()  # noqa: E731
    assert all(finite(t) for t in kept["model"].values())


def test_a_resume_that_cuts_metrics_csv_records_the_new_length(in_tmp):
    """Rows written after the last checkpoint (here the evaluation's) are cut on --resume; the checkpoint written
    next must record the file's new length, not the one before the cut, or a later resume cuts in the wrong place."""
    run_dir = train("reinforce", eval_episodes=1)
    metrics = os.path.join(run_dir, "metrics.csv")
    assert any(r[1] == "eval/episodic_return" for r in read_rows(run_dir))
    train("reinforce", resume=run_dir)  # at its final step: nothing to train, the checkpoint written again
    assert not any(r[1] == "eval/episodic_return" for r in read_rows(run_dir))
    assert load(os.path.join(run_dir, "checkpoint.pt"))["run"]["metrics_bytes"] == os.path.getsize(metrics)


@pytest.mark.parametrize("name", ["dqn_atari", "rainbow_atari"])
def test_a_checkpoint_with_its_replay_memory_in_a_file_beside_it_still_resumes(in_tmp, monkeypatch, name):
    """Checkpoints of an earlier version kept the replay memory in replay-<step>.pt, named by the checkpoint."""
    run_dir = train(name)
    state = load_state(run_dir)
    replay = state.pop("replay")
    torch.save(replay, os.path.join(run_dir, "replay-old.pt"))
    torch.save(state | {"replay_file": "replay-old.pt"}, os.path.join(run_dir, "checkpoint.pt"))
    module = script(name)
    seen = {}
    restart_games = module.restart_games

    def spy(memory, obs):
        seen["replay"] = copy.deepcopy(module.replay_state(memory))
        restart_games(memory, obs)

    monkeypatch.setattr(module, "restart_games", spy)
    train(name, resume=run_dir)
    assert_same(replay, seen["replay"])


def test_save_is_atomic_a_failed_write_leaves_the_previous_file(in_tmp, monkeypatch):
    rf = script("reinforce")
    os.makedirs("folder")
    rf.save_atomic({"step": 1}, "folder/checkpoint.pt")

    def torn(obj, f):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(rf.torch, "save", torn)
    with pytest.raises(OSError):
        rf.save_atomic({"step": 2}, "folder/checkpoint.pt")
    assert load("folder/checkpoint.pt") == {"step": 1}


# ---------------------------------------------------------------- checkpoints: where and when


def test_checkpoint_every_zero_writes_none_and_a_checkpoint_evaluates(in_tmp):
    assert not os.path.exists(os.path.join(train("reinforce", checkpoint_every=0), "checkpoint.pt"))
    run_dir = train("reinforce", checkpoint_every=100)
    checkpoint = os.path.join(run_dir, "checkpoint.pt")
    cmd = [sys.executable, os.path.join(ROOT, "reinforce.py"), "--eval-checkpoint", checkpoint, "--eval-episodes", "1"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "CartPole-v1: mean return" in out.stdout, out.stderr


def test_periodic_checkpoints_follow_the_interval(in_tmp, monkeypatch):
    rf = script("reinforce")
    steps = []
    save = rf.Run.save
    monkeypatch.setattr(rf.Run, "save", lambda run, step, state: (steps.append(step), save(run, step, state)))
    train("reinforce", total_timesteps=1000, checkpoint_every=250)
    # one at the first update past each multiple of 250, and one at the end
    assert [s // 250 for s in steps[:-1]] == [1, 2, 3] and steps[-1] >= 1000


@pytest.mark.parametrize("name", ["dqn_atari", "rainbow_atari"])
def test_resume_without_the_replay_memory_refills_it_first(in_tmp, name):
    run_dir = train(name, checkpoint_replay=False)
    assert "replay" not in load(os.path.join(run_dir, "checkpoint.pt"))
    updates = load(os.path.join(run_dir, "checkpoint.pt"))["updates"]
    assert updates > 0
    total, refill = TINY[name]["total_timesteps"], TINY[name]["learning_starts"]
    train(name, checkpoint_replay=False, resume=run_dir, total_timesteps=total + 2 * refill)
    # no update while the memory fills again for --learning-starts steps, then one per --train-frequency steps
    train_frequency = TINY[name].get("train_frequency", 4)
    assert load(os.path.join(run_dir, "checkpoint.pt"))["updates"] == updates + refill // train_frequency


def test_track_resume_continues_the_same_wandb_run(in_tmp, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    run_dir = train("reinforce", track=True)
    wandb_id = load(os.path.join(run_dir, "checkpoint.pt"))["run"]["wandb_id"]
    assert wandb_id
    train("reinforce", track=True, resume=run_dir, total_timesteps=600)
    offline_runs = glob.glob(os.path.join(run_dir, "wandb", "offline-run-*"))
    # offline-run-<time>-<id>, and a "-1" after it when both parts started in the same second
    same_id = re.compile(rf"offline-run-\d+_\d+-{wandb_id}(-\d+)?")
    assert len(offline_runs) == 2 and all(same_id.fullmatch(os.path.basename(r)) for r in offline_runs), offline_runs


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_after_train_raised_goes_to_the_handler_from_before(in_tmp, monkeypatch, signum):
    """train() raising in a process that goes on (a notebook, a test) leaves its run's handlers installed; a signal
    then must not be taken for that dead run's (which would only set a flag): the handler from before the run gets
    it, and is back in place."""
    module = script("reinforce")

    def broken(*args, **kwargs):
        raise RuntimeError("planted")

    monkeypatch.setattr(module, "policy_gradient_loss", broken)
    got = []

    def handler(received, frame):
        got.append(received)

    before = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with pytest.raises(RuntimeError, match="planted"):
            train("reinforce")
        signal.raise_signal(signum)
        for _ in range(100):  # the handlers run between two bytecodes: at once, here
            if got:
                break
            time.sleep(0.01)
        assert got == [signum]
        assert signal.getsignal(signal.SIGINT) is handler and signal.getsignal(signal.SIGTERM) is handler
    finally:
        for s, previous in before.items():
            signal.signal(s, previous)
