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
Writes benchmarks/results/dqn_atari_throughput.txt. Run it with nothing else on the machine.
"""

import argparse
import sys

import numpy as np
import torch
import torch.nn.functional as F
from common import Report, import_script, median, median_ms, result, script, steady_run

dqn = import_script("dqn_atari")


def update_ms(repeats: int = 200) -> float:
    """Median milliseconds of one update of train() at the defaults (batch 32, MSE), fp32 channels_last."""
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

    def update():
        obs_b, actions_b, rewards_b, terminations_b, next_obs_b = memory.sample(32)
        with torch.no_grad():
            y = dqn.td_target(rewards_b, terminations_b, target_net(next_obs_b), 0.99)
        q_sa = q_net(obs_b).gather(1, actions_b[:, None]).squeeze(1)
        loss = F.mse_loss(q_sa, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return median_ms(update, repeats)


def steady_sps(env_id: str, steps: int, learning_starts: int = 80_000) -> float:
    cmd = [sys.executable, "-u", script("dqn_atari"), "--env-id", env_id, "--eval-episodes", "0"]
    cmd += ["--total-timesteps", str(steps), "--exploration-fraction", str(0.5 * learning_starts / steps)]
    cmd += ["--learning-starts", str(learning_starts)]
    return steady_run(cmd, after=learning_starts + 2_000).sps


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--env-id", default="BreakoutNoFrameskip-v4")
    parser.add_argument("--steps", type=int, default=110_000)
    parser.add_argument("--learning-starts", type=int, default=80_000, help="dqn_atari.py's default")
    parser.add_argument("--update-repeats", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--out", default=result("dqn_atari_throughput.txt"))
    a = parser.parse_args()
    report = Report(a.out)
    t = update_ms(a.update_repeats)
    report.say(f"update (batch 32, sample + 2 forwards + backward + Adam, fp32 channels_last): {t:.1f} ms median")
    report.say(f"bound at one update per 4 steps, nothing else counted: {4e3 / t:.0f} SPS")
    rates = []
    for i in range(a.repeats):
        rates.append(steady_sps(a.env_id, a.steps, a.learning_starts))
        report.say(f"repeat {i + 1}: dqn_atari.py steady after learning starts: {rates[-1]:.0f} SPS")
    report.say(f"\n{a.env_id}, 1 env, defaults, median of {a.repeats}: {median(rates):.0f} SPS steady")
    report.write()
