"""Throughput of rainbow_atari.py at its defaults, after learning starts, and where its time goes.

    python benchmarks/rainbow_atari_throughput.py [--steps 35000] [--repeats 1] [--env-id BreakoutNoFrameskip-v4]
    python benchmarks/rainbow_atari_throughput.py --parts-only        # (a) alone, about a minute

(a) The parts, in this process, at the defaults (Nature CNN, dueling, C51, noisy, n = 3, prioritized, 1M slots):
one update as train() does it (sample 32 from the sum tree, rebuild the n-step transitions, 3 forward passes,
backward, Adam, new priorities), one acting step (fresh noise, forward of one observation) and one store (frame +
priority refresh). Their medians bound the whole script at 4 / (4 (act + store) + update) SPS (one update per 4
agent steps; the emulator not counted).
(b) rainbow_atari.py as a whole process, default flags except --total-timesteps (--steps): the steady rate is read
from the progress lines' arrival times after learning starts (20k steps), not from the running average that the
line prints, which includes the fast warm-up of random actions. Run it with nothing else on the machine.
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

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import rainbow_atari as rb  # noqa: E402


def median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times[repeats // 10 :]) * 1e3


def parts(repeats: int = 200) -> dict:
    """Median milliseconds of an update, an acting step and a store at the default flags."""
    torch.manual_seed(0)
    args = rb.Args()
    config = {name: getattr(args, name) for name in rb.NETWORK_FLAGS}
    q_net = rb.RainbowNetwork(4, 4, **config)
    target_net = rb.RainbowNetwork(4, 4, **config).requires_grad_(False)
    optimizer = torch.optim.Adam(q_net.parameters(), lr=args.learning_rate, eps=args.adam_eps, fused=True)
    memory = rb.ReplayMemory(args.buffer_size, 1, (4, 84, 84), torch.device("cpu"), 3, 0.99, 0.5)
    rng = np.random.default_rng(0)
    obs = rng.integers(0, 256, (1, 4, 84, 84), dtype=np.uint8)
    memory.reset(obs)
    no = np.zeros(1, dtype=bool)

    def store():
        memory.add(rng.integers(0, 4, 1), rng.normal(size=1), no, obs, no, None)

    for _ in range(5_000):
        store()

    def update():
        envs_b, slots_b, weights = memory.sample(32, 0.5)
        batch = memory.transitions(envs_b, slots_b)
        q_net.reset_noise()
        target_net.reset_noise()
        losses, td_errors, _ = rb.rainbow_loss(q_net, target_net, *batch, double=True)
        loss = (weights.float() * losses).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        memory.update_priorities(envs_b, slots_b, td_errors)

    def act():
        q_net.reset_noise()
        rb.epsilon_greedy(q_net, obs, 0.0, rng, "cpu")

    return {"update": median_ms(update, repeats), "act": median_ms(act, repeats), "store": median_ms(store, repeats)}


def steady_sps(env_id: str, steps: int, learning_starts: int = 20_000) -> float:
    cmd = [sys.executable, "-u", os.path.join(ROOT, "rainbow_atari.py"), "--env-id", env_id, "--eval-episodes", "0"]
    cmd += ["--total-timesteps", str(steps)]
    points = []  # (arrival time, step) of progress lines after learning starts
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.Popen(cmd, cwd=tmp, stdout=subprocess.PIPE, text=True)
        for line in proc.stdout:
            m = re.match(r"step ([\d,]+)/", line)
            if m and int(m.group(1).replace(",", "")) > learning_starts + 1_000:
                points.append((time.perf_counter(), int(m.group(1).replace(",", ""))))
        proc.wait()
    (t0, s0), (t1, s1) = points[0], points[-1]
    return (s1 - s0) / (t1 - t0)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--env-id", default="BreakoutNoFrameskip-v4")
    parser.add_argument("--steps", type=int, default=35_000)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--parts-only", action="store_true")
    a = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cores", flush=True)
    t = parts()
    print(
        f"update (batch 32: sample, n-step rebuild, 3 forwards, backward, Adam, priorities): {t['update']:.1f} ms; "
        f"act (noise + forward of 1): {t['act']:.2f} ms; store (frame + priority refresh): {t['store']:.2f} ms"
    )
    bound = 4 / (4 * (t["act"] + t["store"]) + t["update"]) * 1e3
    print(f"bound at one update per 4 steps, emulator not counted: {bound:.0f} SPS", flush=True)
    if not a.parts_only:
        rates = []
        for i in range(a.repeats):
            rates.append(steady_sps(a.env_id, a.steps))
            print(f"repeat {i + 1}: rainbow_atari.py steady after learning starts: {rates[-1]:.0f} SPS", flush=True)
        print(f"\n{a.env_id}, 1 env, defaults, median of {a.repeats}: {statistics.median(rates):.0f} SPS steady")
