"""Throughput of ppo_atari.py at its defaults (8 envs x 128 steps) against AtariVectorEnv alone.

    python benchmarks/ppo_atari_throughput.py [--steps 16384] [--repeats 3] [--env-id BreakoutNoFrameskip-v4]

Runs, alternating, (a) the vector env alone with random actions and (b) `ppo_atari.py` as a whole
process for --steps agent steps, and prints each one's median SPS and the ratio; writes them, with the command,
date and machine, to benchmarks/results/ppo_atari_throughput.txt. Run it with nothing else on the machine.
"""

import argparse
import subprocess
import sys

from common import ROOT, Report, median, result, run_alone, script

ENV_ALONE = """
import sys, time
import numpy as np
sys.path.insert(0, {root!r})
from ppo_atari import make_envs
envs = make_envs({env_id!r}, {num_envs})
envs.reset(seed=1)
rng = np.random.default_rng(0)
n = envs.single_action_space.n
start = time.perf_counter()
for _ in range({steps} // {num_envs}):
    envs.step(rng.integers(0, n, {num_envs}))
print({steps} / (time.perf_counter() - start))
"""


def env_alone(env_id: str, num_envs: int, steps: int) -> float:
    code = ENV_ALONE.format(root=ROOT, env_id=env_id, num_envs=num_envs, steps=steps)
    return float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)


def ppo(env_id: str, steps: int) -> tuple[float, float]:
    """(SPS as ppo_atari.py logs it, env creation included; SPS counting interpreter start) of a whole run."""
    cmd = [sys.executable, script("ppo_atari"), "--env-id", env_id, "--total-timesteps", str(steps)]
    run = run_alone(cmd + ["--eval-episodes", "0"]).check()
    return run.logged_sps, steps / run.wall


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--env-id", default="BreakoutNoFrameskip-v4")
    parser.add_argument("--steps", type=int, default=16384)
    parser.add_argument("--env-steps", type=int, default=40000, help="steps of the env-alone measurement")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=result("ppo_atari_throughput.txt"))
    a = parser.parse_args()
    report = Report(a.out)
    envs, agents = [], []
    for i in range(a.repeats):
        envs.append(env_alone(a.env_id, 8, a.env_steps))
        report.say(f"repeat {i + 1}: AtariVectorEnv alone: {envs[-1]:.0f} SPS")
        sps, with_start = ppo(a.env_id, a.steps)
        agents.append(sps)
        report.say(f"  ppo_atari.py: {sps:.0f} SPS in the run ({with_start:.0f} counting interpreter start)")
    env_sps, ppo_sps = median(envs), median(agents)
    report.say(f"\n{a.env_id}, 8 envs, {a.steps} steps, median of {a.repeats}:")
    report.say(f"AtariVectorEnv alone, random actions: {env_sps:,.0f} SPS")
    report.say(f"ppo_atari.py (8 x 128, fp32):         {ppo_sps:,.0f} SPS")
    report.say(f"ratio ppo / env alone:                {ppo_sps / env_sps:.3f}")
    report.write()
