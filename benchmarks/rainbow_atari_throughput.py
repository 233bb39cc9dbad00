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
line prints, which includes the fast warm-up of random actions. Writes benchmarks/results/rainbow_atari_throughput.txt.
Run it with nothing else on the machine.
"""

import argparse
import os
import sys

import numpy as np
import torch
from common import Report, import_script, median, median_ms, result, script, steady_run

rb = import_script("rainbow_atari")


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
    cmd = [sys.executable, "-u", script("rainbow_atari"), "--env-id", env_id, "--eval-episodes", "0"]
    cmd += ["--total-timesteps", str(steps), "--learning-starts", str(learning_starts)]
    return steady_run(cmd, after=learning_starts + 1_000).sps


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--env-id", default="BreakoutNoFrameskip-v4")
    parser.add_argument("--steps", type=int, default=35_000)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--learning-starts", type=int, default=20_000, help="rainbow_atari.py's default")
    parser.add_argument("--parts-repeats", type=int, default=200)
    parser.add_argument("--parts-only", action="store_true")
    parser.add_argument("--out", default=result("rainbow_atari_throughput.txt"))
    a = parser.parse_args()
    report = Report(a.out)
    report.say(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cores")
    t = parts(a.parts_repeats)
    report.say(
        f"update (batch 32: sample, n-step rebuild, 3 forwards, backward, Adam, priorities): {t['update']:.1f} ms; "
        f"act (noise + forward of 1): {t['act']:.2f} ms; store (frame + priority refresh): {t['store']:.2f} ms"
    )
    bound = 4 / (4 * (t["act"] + t["store"]) + t["update"]) * 1e3
    report.say(f"bound at one update per 4 steps, emulator not counted: {bound:.0f} SPS")
    if not a.parts_only:
        rates = []
        for i in range(a.repeats):
            rates.append(steady_sps(a.env_id, a.steps, a.learning_starts))
            report.say(f"repeat {i + 1}: rainbow_atari.py steady after learning starts: {rates[-1]:.0f} SPS")
        report.say(f"\n{a.env_id}, 1 env, defaults, median of {a.repeats}: {median(rates):.0f} SPS steady")
    report.write()
