"""ppo_atari.py on one CPU: 1 process x 2 threads against 2 processes x 1 thread (torchrun), same global batch.

    python benchmarks/ppo_atari_distributed.py [--steps 16384] [--repeats 1] [--env-id BreakoutNoFrameskip-v4]

Same global batch: one process with 8 envs, or 2 processes with 4 envs each; both 128 steps per rollout and 4
minibatches per process, so both take the same optimizer steps on minibatches of 256 samples (the default
configuration's batch of 1,024 per iteration). Prints each one's SPS (as the run logs it, env creation
excluded, and counting interpreter start) and the ratio, and writes them with the date, the machine and its load
to benchmarks/results/ppo_atari_distributed.txt.
"""

import argparse
import os
import sys

from common import Report, result, run_alone, script


def run(processes: int, env_id: str, steps: int) -> tuple[float, float]:
    """(SPS logged by the run, SPS counting the start of the interpreters) of one run."""
    threads = 2 // processes
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    flags = ["--env-id", env_id, "--total-timesteps", str(steps), "--eval-episodes", "0", "--no-cuda"]
    flags += ["--num-envs", str(8 // processes)]
    launcher = [sys.executable]
    if processes > 1:
        launcher += ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes)]
    finished = run_alone([*launcher, script("ppo_atari"), *flags], env=env).check()
    return finished.logged_sps, steps / finished.wall


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--env-id", default="BreakoutNoFrameskip-v4")
    parser.add_argument("--steps", type=int, default=16384)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--out", default=result("ppo_atari_distributed.txt"))
    a = parser.parse_args()
    report = Report(a.out)
    report.say(
        f"{a.env_id}, {a.steps:,} steps over all processes, global batch 8 envs x 128 steps, 4 minibatches/process"
    )
    results = {1: [], 2: []}
    for i in range(a.repeats):
        for processes in (1, 2):
            sps, with_start = run(processes, a.env_id, a.steps)
            results[processes].append(sps)
            report.say(
                f"repeat {i + 1}: {processes} process(es) x {2 // processes} thread(s), {8 // processes} envs each: "
                f"{sps:.0f} SPS in the run ({with_start:.0f} counting interpreter start)"
            )
    one, two = (sorted(results[p])[len(results[p]) // 2] for p in (1, 2))
    report.say(f"median: 1 x 2 threads {one:.0f} SPS, 2 x 1 thread {two:.0f} SPS, ratio 2 / 1 {two / one:.2f}")
    report.write()
