"""What writing a checkpoint costs: seconds and bytes per script, and DQN's and Rainbow's with a full replay memory.

    python benchmarks/all_checkpoint_cost.py                # all six at their default networks, small replay memories
    python benchmarks/all_checkpoint_cost.py --full-replay  # and DQN / Rainbow with 1M transitions (about 15 GB RAM)

Each script trains a few hundred steps in a temporary folder with its default network; Run.save is timed as the
loop calls it (the state gathered, torch.save to a temporary file, fsync, rename). The full-replay case fills a
1M-transition memory with random frames and times the same save_atomic on its state. The stall is the write time
over the time between two checkpoints at --checkpoint-every and the script's CPU rate in the README.
"""

import argparse
import os
import tempfile
import time

import numpy as np
import torch
from common import Report, import_script, result

RUNS = {  # a few hundred steps; the networks are the defaults
    "reinforce": dict(num_envs=2, episodes_per_update=4, total_timesteps=300, eval_episodes=0, vf_iters=5),
    "natural_pg": dict(num_envs=2, episodes_per_update=4, total_timesteps=300, eval_episodes=0, vf_iters=5),
    "trpo": dict(num_envs=2, num_steps=64, total_timesteps=256, eval_episodes=0, vf_epochs=2),
    "ppo_atari": dict(
        num_envs=8, num_steps=32, num_minibatches=4, update_epochs=1, total_timesteps=256, eval_episodes=0
    ),
    "dqn_atari": dict(total_timesteps=300, learning_starts=200, buffer_size=1000, eval_episodes=0),
    "rainbow_atari": dict(total_timesteps=300, learning_starts=200, buffer_size=1000, eval_episodes=0),
}
SPS = {"reinforce": 2000, "natural_pg": 2000, "trpo": 1375, "ppo_atari": 226, "dqn_atari": 96, "rainbow_atari": 38}


def timed_saves(name: str) -> tuple[float, int]:
    module = import_script(name)
    times = []
    save = module.Run.save

    def timed(run, step, state):
        start = time.perf_counter()
        save(run, step, state)
        times.append(time.perf_counter() - start)

    module.Run.save = timed
    try:
        run_dir = module.train(module.Args(**RUNS[name]))
    finally:
        module.Run.save = save
    size = sum(os.path.getsize(os.path.join(run_dir, f)) for f in os.listdir(run_dir) if f.endswith(".pt"))
    return min(times), size


def full_replay(name: str, capacity: int = 1_000_000) -> tuple[float, int, float]:
    module = import_script(name)
    args = module.Args()
    memory = module.ReplayMemory(capacity, 1, (4, 84, 84), torch.device("cpu"))
    rng = np.random.default_rng(0)
    frames = memory.frames.view(-1, 84 * 84)
    for start in range(0, len(frames), 50_000):  # random frames: nothing compresses, every page is touched
        frames[start : start + 50_000] = torch.from_numpy(
            rng.integers(0, 256, (min(50_000, len(frames) - start), 84 * 84), dtype=np.uint8)
        )
    memory.filled.fill_(memory.slots)
    memory.cur.fill_(memory.slots - 1)
    with tempfile.TemporaryDirectory(dir=".") as folder:
        start = time.perf_counter()
        module.save_atomic(module.replay_state(memory), os.path.join(folder, "replay.pt"))
        seconds = time.perf_counter() - start
        size = os.path.getsize(os.path.join(folder, "replay.pt"))
        start = time.perf_counter()
        module.load_replay_state(memory, module.load_file(os.path.join(folder, "replay.pt"), mmap=True))
        load_seconds = time.perf_counter() - start
    del args
    return seconds, size, load_seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--full-replay", action="store_true")
    parser.add_argument("--out", default=result("all_checkpoint_cost.txt"))
    flags = parser.parse_args()
    report = Report(flags.out)
    report.say("script | checkpoint write (s) | bytes | --checkpoint-every | README CPU SPS | stall")
    with tempfile.TemporaryDirectory() as folder:
        os.chdir(folder)
        for name in RUNS:
            seconds, size = timed_saves(name)
            every = import_script(name).Args().checkpoint_every
            stall = seconds / (every / SPS[name])
            report.say(f"{name} | {seconds:.3f} | {size:,} | {every:,} | {SPS[name]} | {stall:.4%}")
        if flags.full_replay:
            for name in ("dqn_atari", "rainbow_atari"):
                seconds, size, load_seconds = full_replay(name)
                every = import_script(name).Args().checkpoint_every
                stall = seconds / (every / SPS[name])
                report.say(
                    f"{name} replay of 1M transitions | {seconds:.1f} | {size:,} | {every:,} | {SPS[name]} | "
                    f"{stall:.2%} (loading it back on --resume: {load_seconds:.1f} s)"
                )
    report.write()


if __name__ == "__main__":
    main()
