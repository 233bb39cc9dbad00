"""ppo_atari.py on one CPU: 1 process x 2 threads against 2 processes x 1 thread (torchrun), same global batch.

    python benchmarks/ppo_atari_distributed.py [--steps 16384] [--repeats 1] [--env-id BreakoutNoFrameskip-v4]

Same global batch: one process with 8 envs, or 2 processes with 4 envs each; both 128 steps per rollout and 4
minibatches per process, so both take the same optimizer steps on minibatches of 256 samples (the default
configuration's batch of 1,024 per iteration). Prints each one's SPS (as the run logs it, env creation
excluded, and counting interpreter start) and the ratio, and writes them with the date, the machine and its load
to benchmarks/results/ppo_atari_distributed.txt.
"""

import argparse
import csv
import datetime
import glob
import os
import platform
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(processes: int, env_id: str, steps: int) -> tuple[float, float]:
    """(SPS logged by the run, SPS counting the start of the interpreters) of one run."""
    threads = 2 // processes
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    flags = ["--env-id", env_id, "--total-timesteps", str(steps), "--eval-episodes", "0", "--no-cuda"]
    flags += ["--num-envs", str(8 // processes)]
    launcher = [sys.executable]
    if processes > 1:
        launcher += ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes)]
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        subprocess.run([*launcher, os.path.join(ROOT, "ppo_atari.py"), *flags], cwd=tmp, env=env, check=True)
        wall = time.perf_counter() - start
        (path,) = glob.glob(os.path.join(tmp, "runs", "*", "metrics.csv"))
        sps = [float(r["value"]) for r in csv.DictReader(open(path)) if r["metric"] == "charts/SPS"]
    return sps[-1], steps / wall


def cpu_name() -> str:
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--env-id", default="BreakoutNoFrameskip-v4")
    parser.add_argument("--steps", type=int, default=16384)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "ppo_atari_distributed.txt"))
    a = parser.parse_args()
    load_before = os.getloadavg()
    lines = [
        f"command: {' '.join(['python', *sys.argv])}",
        f"date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC",
        f"machine: {cpu_name()}, {os.cpu_count()} cores; torch {__import__('torch').__version__} (CPU, gloo)",
        f"load average before (1, 5, 15 min): {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}",
        f"{a.env_id}, {a.steps:,} steps over all processes, global batch 8 envs x 128 steps, 4 minibatches/process",
    ]
    results = {1: [], 2: []}
    for i in range(a.repeats):
        for processes in (1, 2):
            sps, with_start = run(processes, a.env_id, a.steps)
            results[processes].append(sps)
            line = (
                f"repeat {i + 1}: {processes} process(es) x {2 // processes} thread(s), {8 // processes} envs each: "
                f"{sps:.0f} SPS in the run ({with_start:.0f} counting interpreter start)"
            )
            print(line, flush=True)
            lines.append(line)
    one, two = (sorted(results[p])[len(results[p]) // 2] for p in (1, 2))
    load_after = os.getloadavg()
    lines += [
        f"load average after (1, 5, 15 min): {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}",
        f"median: 1 x 2 threads {one:.0f} SPS, 2 x 1 thread {two:.0f} SPS, ratio 2 / 1 {two / one:.2f}",
    ]
    print("\n".join(lines[-2:]))
    with open(a.out, "w") as f:
        f.write("\n".join(lines) + "\n")
