"""Throughput of ppo_atari.py at its defaults (8 envs x 128 steps) against AtariVectorEnv alone.

    python benchmarks/ppo_atari_throughput.py [--steps 16384] [--repeats 3] [--env-id BreakoutNoFrameskip-v4]

Runs, alternating, (a) the vector env alone with random actions and (b) `ppo_atari.py` as a whole
process for --steps agent steps, and prints each one's median SPS and the ratio. Run it with
nothing else on the machine.
"""

import argparse
import csv
import glob
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def env_alone(env_id: str, num_envs: int, steps: int) -> float:
    code = f"""
import time, numpy as np, sys
sys.path.insert(0, {ROOT!r})
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
    return float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)


def ppo(env_id: str, steps: int) -> float:
    """SPS of a whole run, as ppo_atari.py itself reports it (env creation included)."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, os.path.join(ROOT, "ppo_atari.py"), "--env-id", env_id]
        cmd += ["--total-timesteps", str(steps), "--eval-episodes", "0"]
        start = time.perf_counter()
        subprocess.run(cmd, cwd=tmp, capture_output=True, check=True)
        wall = time.perf_counter() - start
        (path,) = glob.glob(os.path.join(tmp, "runs", "*", "metrics.csv"))
        sps = [float(r["value"]) for r in csv.DictReader(open(path)) if r["metric"] == "charts/SPS"]
    print(f"  ppo_atari.py: {sps[-1]:.0f} SPS in the run ({steps / wall:.0f} counting interpreter start)", flush=True)
    return sps[-1]


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--env-id", default="BreakoutNoFrameskip-v4")
    parser.add_argument("--steps", type=int, default=16384)
    parser.add_argument("--repeats", type=int, default=3)
    a = parser.parse_args()
    envs, agents = [], []
    for i in range(a.repeats):
        envs.append(env_alone(a.env_id, 8, 40000))
        print(f"repeat {i + 1}: AtariVectorEnv alone: {envs[-1]:.0f} SPS", flush=True)
        agents.append(ppo(a.env_id, a.steps))
    env_sps, ppo_sps = statistics.median(envs), statistics.median(agents)
    print(f"\n{a.env_id}, 8 envs, {a.steps} steps, median of {a.repeats}:")
    print(f"AtariVectorEnv alone, random actions: {env_sps:,.0f} SPS")
    print(f"ppo_atari.py (8 x 128, fp32):         {ppo_sps:,.0f} SPS")
    print(f"ratio ppo / env alone:                {ppo_sps / env_sps:.3f}")
