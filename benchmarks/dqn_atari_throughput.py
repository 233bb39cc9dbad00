"""Throughput of dqn_atari.py at its defaults, after learning starts, and the update's own bound.

    python benchmarks/dqn_atari_throughput.py [--steps 110000] [--repeats 1] [--env-id BreakoutNoFrameskip-v4]

(a) The update alone, in this process: sample a minibatch of 32 from a replay memory, Q_theta' forward on
s', Q_theta forward on s, backward, Adam step, as train() does; its median time t bounds the whole
script at train_frequency / t SPS (one update per 4 agent steps).
(b) dqn_atari.py as a whole process, default flags except --total-timesteps (--steps) and
--exploration-fraction (epsilon reaches 0.01 before learning starts, so every step runs the greedy
forward pass, as in 99% of a 10M-step run). The steady rate is read from the progress lines'
arrival times after learning starts (steps / seconds between the first such line and the last),
not from the running average the line prints, which includes the fast warm-up.
Run it with nothing else on the machine.
"""

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import dqn_atari as dqn  # noqa: E402


def update_time(repeats: int = 200) -> float:
    """Median seconds of one update of train() at the defaults (batch 32, MSE), fp32 channels_last."""
    torch.manual_seed(0)
    memory = dqn.ReplayMemory(20_000, 1, (4, 84, 84), torch.device("cpu"))
    rng = np.random.default_rng(0)
    obs = rng.integers(0, 256, (1, 4, 84, 84), dtype=np.uint8)
    memory.reset(obs)
    no = np.zeros(1, dtype=bool)
    for _ in range(5_000):
        memory.add(rng.integers(0, 4, 1), rng.normal(size=1), no, obs, no, None)
    q_net = dqn.QNetwork(4, 4).to(memory_format=torch.channels_last)
    target_net = dqn.QNetwork(4, 4).to(memory_format=torch.channels_last).requires_grad_(False)
    optimizer = torch.optim.Adam(q_net.parameters(), lr=1e-4, fused=True)  # as train()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        obs_b, actions_b, rewards_b, terminations_b, next_obs_b = memory.sample(32)
        with torch.no_grad():
            y = dqn.td_target(rewards_b, terminations_b, target_net(next_obs_b), 0.99)
        q_sa = q_net(obs_b).gather(1, actions_b[:, None]).squeeze(1)
        loss = F.mse_loss(q_sa, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    return statistics.median(times[20:])


def steady_sps(env_id: str, steps: int, learning_starts: int = 80_000) -> float:
    cmd = [sys.executable, "-u", os.path.join(ROOT, "dqn_atari.py"), "--env-id", env_id, "--eval-episodes", "0"]
    cmd += ["--total-timesteps", str(steps), "--exploration-fraction", str(0.5 * learning_starts / steps)]
    points = []  # (arrival time, step) of progress lines after learning starts
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.Popen(cmd, cwd=tmp, stdout=subprocess.PIPE, text=True)
        for line in proc.stdout:
            m = re.match(r"step ([\d,]+)/", line)
            if m and int(m.group(1).replace(",", "")) > learning_starts + 2_000:
                points.append((time.perf_counter(), int(m.group(1).replace(",", ""))))
        proc.wait()
    (t0, s0), (t1, s1) = points[0], points[-1]
    return (s1 - s0) / (t1 - t0)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--env-id", default="BreakoutNoFrameskip-v4")
    parser.add_argument("--steps", type=int, default=110_000)
    parser.add_argument("--repeats", type=int, default=1)
    a = parser.parse_args()
    t = update_time()
    print(f"update (batch 32, sample + 2 forwards + backward + Adam, fp32 channels_last): {t * 1e3:.1f} ms median")
    print(f"bound at one update per 4 steps, nothing else counted: {4 / t:.0f} SPS", flush=True)
    rates = []
    for i in range(a.repeats):
        rates.append(steady_sps(a.env_id, a.steps))
        print(f"repeat {i + 1}: dqn_atari.py steady after learning starts: {rates[-1]:.0f} SPS", flush=True)
    print(f"\n{a.env_id}, 1 env, defaults, median of {a.repeats}: {statistics.median(rates):.0f} SPS steady")
