"""ppo_atari.py under torchrun: K processes (here 2, CPU, gloo) that train one model.

Launched as users launch it (`python -m torch.distributed.run --standalone --nproc-per-node 2 ...`), or with
torchrun's variables set by hand (WORLD_SIZE, RANK, ...) where the test must reach one process alone: kill it,
signal it, or leave it missing. torchrun itself stops every worker when one fails, and prints its own report.
"""

import csv
import glob
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from conftest import ROOT

import ppo_atari as ppo

TINY = dict(num_envs=2, num_steps=64, num_minibatches=2, update_epochs=2, eval_episodes=0, cuda=False)
SCRIPT = os.path.join(ROOT, "ppo_atari.py")
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]


def flags(**overrides):
    out = []
    for key, value in {**TINY, **overrides}.items():
        flag = "--" + key.replace("_", "-")
        out += [flag] if value is True else [flag.replace("--", "--no-", 1)] if value is False else [flag, str(value)]
    return out


def child_env(**extra):
    # one torch thread per process: 2 processes on this 2-core machine; passive OpenMP waits on a shared machine
    return {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "passive", **extra}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def by_hand(world_size, ranks, **overrides):
    """Start the given ranks of a `world_size`-process run as torchrun would (its variables, no agent)."""
    env = child_env(
        WORLD_SIZE=str(world_size),
        LOCAL_WORLD_SIZE=str(world_size),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(free_port()),
    )
    return [
        subprocess.Popen(
            [sys.executable, SCRIPT, *flags(**overrides)],
            env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in ranks
    ]


def metrics(run_dir):
    with open(os.path.join(run_dir, "metrics.csv")) as f:
        return list(csv.DictReader(f))


def wait_for(condition, timeout=120.0):
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, "timed out"
        time.sleep(0.05)


def checkpoint_step():
    paths = glob.glob("runs/*/checkpoint.pt")
    try:
        return torch.load(paths[0], weights_only=True)["global_step"] if paths else -1
    except Exception:  # met a rename
        return -1


# ---------------------------------------------------------------- (a) and (c): one model, every process's games

DRIVER = """
import hashlib, json, os, sys
sys.path.insert(0, {root!r})
import tyro
from torch.optim.optimizer import register_optimizer_step_post_hook
import ppo_atari as ppo

hashes, games = [], [0]


def after_step(optimizer, args, kwargs):  # every optimizer step of this process: a hash of all its parameters
    h = hashlib.sha256()
    for group in optimizer.param_groups:
        for p in group["params"]:
            h.update(p.detach().contiguous().numpy().tobytes())
    hashes.append(h.hexdigest())


register_optimizer_step_post_hook(after_step)
is_game_over = ppo.is_game_over


def counting(*args):  # the games this process finished
    over = is_game_over(*args)
    games[0] += int(over.sum())
    return over


ppo.is_game_over = counting
ppo.train(tyro.cli(ppo.Args))
with open(f"rank{{os.environ['RANK']}}.json", "w") as f:
    json.dump({{"hashes": hashes, "games": games[0]}}, f)
"""


@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16"])
def test_parameters_stay_identical_and_every_process_games_reach_the_metrics(in_tmp, bf16):
    """(a) after every optimizer step the two processes hold bit-identical parameters; (c) one run folder, whose
    last global_step is the total (steps of both processes), with the games of both processes logged. With --bf16
    too: the same DDP path, the forward passes under autocast, the averaged gradients and the weights fp32."""
    driver = in_tmp / "driver.py"
    driver.write_text(DRIVER.format(root=ROOT))
    total = 2048  # 8 iterations of 2 processes x 2 envs x 64 steps
    command = [*TORCHRUN, str(driver), *flags(total_timesteps=total, bf16=bf16)]
    out = subprocess.run(command, env=child_env(), capture_output=True, timeout=240)
    assert out.returncode == 0, out.stderr.decode()[-3000:]
    rank0, rank1 = (json.load(open(f"rank{r}.json")) for r in (0, 1))
    updates = (total // 256) * TINY["update_epochs"] * TINY["num_minibatches"]
    assert len(rank0["hashes"]) == len(rank1["hashes"]) == updates
    assert rank0["hashes"] == rank1["hashes"]
    assert len(set(rank0["hashes"])) == updates  # and they did change at every step

    (run_dir,) = glob.glob("runs/*")  # rank 1 wrote no folder
    rows = metrics(run_dir)
    assert int(rows[-1]["global_step"]) == total
    steps = sorted({int(r["global_step"]) for r in rows if r["metric"] == "charts/learning_rate"})
    assert steps == list(range(256, total + 1, 256))
    returns = [r for r in rows if r["metric"] == "charts/episodic_return"]
    assert rank0["games"] > 0 and rank1["games"] > 0
    assert len(returns) == rank0["games"] + rank1["games"]
    # progress line: rank 0's only
    assert out.stdout.decode().count(f"step {total:,}/{total:,}") == 1


# ---------------------------------------------------------------- (b) the averaged gradient step


def ppo_step(learner, agent, batch):
    """One optimizer step of the script's update on `batch`: loss, backward through `learner` (the agent, or the
    agent in DDP as the script wraps it under torchrun), the clip, Adam."""
    obs, actions, old_logprob, advantages, returns = batch
    optimizer = torch.optim.Adam(agent.parameters(), lr=1e-3, eps=1e-5)
    logits, values = learner(obs)
    logprob = torch.log_softmax(logits, -1).gather(1, actions.unsqueeze(1)).squeeze(1)
    loss = (
        ppo.clipped_surrogate((logprob - old_logprob).exp(), advantages, 0.1) + 0.5 * ((values - returns) ** 2).mean()
    )
    optimizer.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(agent.parameters(), 0.5)
    optimizer.step()


def make_batch(seed, size=16):
    g = torch.Generator().manual_seed(seed)
    obs = torch.randint(0, 256, (size, 4, 84, 84), dtype=torch.uint8, generator=g)
    return (
        obs,
        torch.randint(0, 4, (size,), generator=g),
        -1.4 + 0.1 * torch.randn(size, generator=g),
        *(torch.randn(2, size, generator=g)),
    )


def one_of_two(rank, store, result):
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    torch.manual_seed(rank)  # different initializations: wrapping in DDP makes them rank 0's
    agent = ppo.Agent(4).to(memory_format=torch.channels_last)  # as the script holds it
    ppo_step(torch.nn.parallel.DistributedDataParallel(agent), agent, make_batch(seed=rank))
    torch.save(agent.state_dict(), f"{result}{rank}.pt")
    dist.destroy_process_group()


def test_two_processes_step_as_one_on_the_union_of_their_batches(tmp_path):
    """(b) 2 processes on batches B1 and B2 take the step of one process whose gradient is the mean of the two
    minibatch gradients, which is the gradient on B1 u B2 (the loss is a mean over samples), channels_last weights
    and the global-norm clip included."""
    mp.spawn(one_of_two, args=(str(tmp_path / "store"), str(tmp_path / "rank")), nprocs=2, join=True)
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    torch.manual_seed(0)
    agent = ppo.Agent(4)  # rank 0's initialization
    b1, b2 = make_batch(seed=0), make_batch(seed=1)
    union = [torch.cat([x, y]) for x, y in zip(b1, b2, strict=True)]
    ppo_step(agent, agent, union)
    for name, value in agent.state_dict().items():
        assert torch.equal(rank0[name], rank1[name]), name
        torch.testing.assert_close(rank0[name], value, rtol=1e-5, atol=1e-6, msg=name)
    # and the parameters moved: the comparison is not between two untouched copies
    torch.manual_seed(0)
    assert not torch.equal(ppo.Agent(4).critic.weight, agent.critic.weight)


# ---------------------------------------------------------------- torchrun: SIGTERM, checkpoint, --resume


def test_sigterm_to_torchrun_checkpoints_and_the_run_resumes_under_torchrun(in_tmp):
    process = subprocess.Popen(
        [*TORCHRUN, SCRIPT, *flags(total_timesteps=10**7, checkpoint_every=256)],
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for(lambda: checkpoint_step() >= 512 or process.poll() is not None)
    process.send_signal(signal.SIGTERM)  # torchrun forwards it to both processes
    out, err = process.communicate(timeout=120)
    assert process.returncode != 0  # torchrun's own exit (1, with its report) after the workers' 143
    last = out.strip().splitlines()[-1]
    match = re.fullmatch(r"interrupted at step ([\d,]+); resume with: python ppo_atari.py --resume (\S+)", last)
    assert match, out[-2000:]
    assert out.count("interrupted at step") == 1  # rank 0 only
    assert "error:" not in err  # both stopped at the same iteration: no exchange was left unanswered
    step, run_dir = int(match[1].replace(",", "")), match[2]
    state = torch.load(os.path.join(run_dir, "checkpoint.pt"), weights_only=True)
    assert state["global_step"] == step and step % 256 == 0
    assert glob.glob("runs/*") == [run_dir]

    out = subprocess.run(
        [*TORCHRUN, SCRIPT, "--resume", run_dir, "--total-timesteps", str(step + 512)],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.count(f"resumed {run_dir} at step {step:,}") == 1
    steps = [int(r["global_step"]) for r in metrics(run_dir)]
    assert steps == sorted(steps) and steps[-1] == step + 512
    assert torch.load(os.path.join(run_dir, "checkpoint.pt"), weights_only=True)["global_step"] == step + 512
    assert glob.glob("runs/*") == [run_dir]


def test_sigterm_to_one_process_stops_both_at_the_same_step(in_tmp):
    """A scheduler may signal one process: the processes agree once per iteration, and both exit 143."""
    rank0, rank1 = by_hand(2, [0, 1], total_timesteps=10**7, checkpoint_every=256)
    wait_for(lambda: checkpoint_step() >= 256 or rank0.poll() is not None)
    rank1.send_signal(signal.SIGTERM)
    (out0, err0), (out1, err1) = rank0.communicate(timeout=120), rank1.communicate(timeout=120)
    assert (rank0.returncode, rank1.returncode) == (143, 143), err0 + err1
    assert err0 == err1 == out1 == ""
    match = re.fullmatch(
        r"interrupted at step ([\d,]+); resume with: python ppo_atari.py --resume (\S+)", out0.strip().splitlines()[-1]
    )
    assert match
    state = torch.load(os.path.join(match[2], "checkpoint.pt"), weights_only=True)
    assert state["global_step"] == int(match[1].replace(",", ""))


# ---------------------------------------------------------------- (d) failures: one line, bounded time


def test_a_killed_process_stops_the_other_in_one_line(in_tmp):
    rank0, rank1 = by_hand(2, [0, 1], total_timesteps=10**7, checkpoint_every=256, dist_timeout=20)
    wait_for(lambda: checkpoint_step() >= 256 or rank0.poll() is not None)
    rank1.kill()
    killed = time.time()
    out, err = rank0.communicate(timeout=60)
    rank1.communicate()
    assert time.time() - killed < 25  # at once (gloo sees the socket close), at worst after --dist-timeout
    assert rank0.returncode == 1
    lines = err.strip().splitlines()
    stopped = r"error: process group: rank 0 of 2 stopped: another process is gone or did not answer \(.+\)"
    assert len(lines) == 1 and re.fullmatch(stopped, lines[0]), lines
    assert "Traceback" not in err


def test_a_rendezvous_that_never_completes_fails_in_one_line(in_tmp):
    (rank0,) = by_hand(2, [0], total_timesteps=512, dist_timeout=5)  # rank 1 never comes
    start = time.time()
    out, err = rank0.communicate(timeout=60)
    assert rank0.returncode == 1 and time.time() - start < 40
    stopped = r"error: process group: rank 0 of 2 stopped: another process is gone or did not answer \(.+\)\n"
    assert re.fullmatch(stopped, err), err
    assert out.startswith("device: ") and out.count("\n") == 1 and not os.path.exists("runs")  # its first line only


# ---------------------------------------------------------------- before training: one line, nothing written


def test_too_few_gpus_fail_in_one_line_before_training(in_tmp, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(SystemExit) as e:
        ppo.train(ppo.Args(**{**TINY, "cuda": True, "total_timesteps": 4096}))
    assert str(e.value) == (
        "error: --cuda: 4 processes on this machine but 2 GPU(s) visible; "
        "start torchrun with --nproc-per-node 2, or use --no-cuda"
    )
    assert not dist.is_initialized() and not os.path.exists("runs")
    # without --cuda, or on a machine without GPUs (as for one process: the CPU), nothing to refuse
    ppo.check_args(ppo.Args(**{**TINY, "cuda": False, "total_timesteps": 4096}), 4)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    ppo.check_args(ppo.Args(**{**TINY, "cuda": True, "total_timesteps": 4096}), 4)


def test_a_total_below_one_batch_of_all_processes_fails_in_one_line(in_tmp, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(SystemExit, match=r"^error: --total-timesteps 200 is less than one batch of the 2 processes"):
        ppo.train(ppo.Args(**{**TINY, "total_timesteps": 200}))
    assert not dist.is_initialized() and not os.path.exists("runs")


# ---------------------------------------------------------------- (e) without torchrun: nothing of it


def test_without_torchrun_no_process_group_and_same_seed_same_run(in_tmp, monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    joined = []
    monkeypatch.setattr(dist, "init_process_group", lambda *a, **k: joined.append(a))
    runs = [ppo.train(ppo.Args(**{**TINY, "total_timesteps": 256, "seed": 5})) for _ in range(2)]
    assert not joined and not dist.is_initialized()
    first, again = ([r for r in metrics(d) if r["metric"] != "charts/SPS"] for d in runs)
    assert first == again
