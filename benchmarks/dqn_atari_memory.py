"""Memory of dqn_atari.py's replay memory at --buffer-size 1000000, filled to --fill transitions.

    python benchmarks/dqn_atari_memory.py [--fill 200000] [--env-id BreakoutNoFrameskip-v4]

In one process, as train() sets things up: the envs, Q_theta, Q_theta', Adam and a ReplayMemory of
1M transitions. It records --record real env steps with random actions (games ending, life losses and
all), then stores them over and over into the memory until it holds --fill transitions: the memory's
RSS depends on the slots written, not on the pictures in them, and replaying recorded steps fills it in
about 30 s of CPU instead of the hour 200k env steps took on a busy 2-core machine. The frames are allocated
with torch.empty, so a page takes RAM only once written. Prints the peak RSS before and after the fill,
(after - before) / transitions stored (and / slots), and the RSS a full 1M-transition memory implies; writes
them to benchmarks/results/dqn_atari_memory.txt.
"""

import argparse
import resource

import numpy as np
import torch
from common import Report, import_script, result

dqn = import_script("dqn_atari")


def rss() -> int:
    with open("/proc/self/status") as f:  # current resident set, in bytes
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--env-id", default="BreakoutNoFrameskip-v4")
    parser.add_argument("--fill", type=int, default=200_000)
    parser.add_argument("--record", type=int, default=2_000)
    parser.add_argument("--out", default=result("dqn_atari_memory.txt"))
    a = parser.parse_args()
    report = Report(a.out)
    # only small copies here, no convolutions: one thread (on a busy machine two threads spin-waiting
    # made each store 27x more expensive in CPU time, measured), RSS is the same
    torch.set_num_threads(1)
    envs = dqn.make_envs(a.env_id, 1)
    shape, num_actions = envs.single_observation_space.shape, envs.single_action_space.n
    q_net, target_net = dqn.QNetwork(4, num_actions), dqn.QNetwork(4, num_actions)
    optimizer = torch.optim.Adam(q_net.parameters(), lr=1e-4)
    memory = dqn.ReplayMemory(1_000_000, 1, shape, torch.device("cpu"))
    obs, info = envs.reset(seed=1)
    memory.reset(obs)
    lives, rng, steps = info["lives"], np.random.default_rng(1), []
    for _ in range(a.record):
        actions = rng.integers(num_actions, size=1)
        next_obs, reward, terminated, truncated, info = envs.step(actions)
        game_over = dqn.is_game_over(terminated, truncated, info["lives"], lives)
        lives = info["lives"]
        steps.append((actions, reward, terminated, next_obs, game_over, info.get("final_obs")))
    before = rss()
    report.say(
        f"RSS before the fill (env, networks, 1M-slot memory allocated, {a.record:,} steps recorded): "
        f"{before / 1e6:,.0f} MB"
    )
    stored = 0
    while stored < a.fill:
        memory.add(*steps[stored % len(steps)])
        stored += 1
    slots = int(memory.filled[0])
    after = rss()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    per = (after - before) / stored
    report.say(
        f"RSS after storing {stored:,} transitions ({slots:,} slots, game ends take one more): {after / 1e6:,.0f} MB"
    )
    report.say(
        f"peak RSS of the process: {peak / 1e6:,.0f} MB; whole peak RSS / transitions: {peak / stored:,.0f} bytes"
    )
    report.say(
        f"per transition: {per:,.0f} bytes ({per / 1e3:.2f} KB); per slot: {(after - before) / slots:,.0f}; "
        f"ReplayMemory.bytes_per_slot: {memory.bytes_per_slot(shape):,}"
    )
    report.say(f"implied RSS at 1,000,000 transitions: {(before + per * 1_000_000) / 1e9:.2f} GB")
    report.write()
