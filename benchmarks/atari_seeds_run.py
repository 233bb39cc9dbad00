"""Run the Atari learning benchmarks whose seeds are missing, one at a time, from a frozen copy of the code.

    nohup python benchmarks/atari_seeds_run.py [--seeds 1 2 3] [--only der ppo dqn] [--games Freeway ...] \
        > benchmarks/out/seeds.log 2>&1 &
    python benchmarks/atari_seeds_run.py --dry-run     # what is missing, in the order it would run

The README's Atari figures are means over seeds 1, 2 and 3 (benchmarks/atari_seeds.py restates them): DER
(`--preset der`) on its five games, ppo_atari.py Breakout 1M and dqn_atari.py Breakout 500k. A result is missing
when its file is not in benchmarks/results/ (rainbow_atari_der_<game>_seed<k>.txt, ppo_atari_breakout_1m_seed<k>
_metrics.csv, dqn_atari_breakout_500k_seed<k>_metrics.csv). The missing ones run in this order: DER game by game
(a game's seeds together, so that each game finished has all three), then PPO, then DQN.

A run takes 45-90 minutes on a 2-core CPU, and the code may change meanwhile: the commit checked out now (HEAD, its
committed files) is copied once into a folder outside the work tree (--frozen, default /tmp/frozen-<commit>), and
every run starts there, under `nice -n 19` with OMP_WAIT_POLICY=passive so that work beside it keeps the cores. A
run that a kill cut after its first checkpoint (the end of a session, say) goes on from that checkpoint the next
time, in the frozen copy that holds it, with the code that wrote it: the runner looks for it in every
/tmp/frozen-*/ (and --frozen) whose benchmark script resumes, and the benchmark script resumes it (--resume); a run
cut before its first checkpoint starts again. Each result is copied back into benchmarks/results/ as soon as its run
ends, with one line in benchmarks/results/atari_seeds_runs.txt: the result, the seed, the commit, the machine, the
start and end (UTC), and for a resumed run the step it was resumed at. One run at a time; the first failure stops
the queue. Stop a run for a timing with `kill -STOP` and go on with `kill -CONT`.
"""

import argparse
import datetime
import glob
import os
import shutil
import subprocess
import sys

import torch
from common import ROOT, machine, result

DER_GAMES = ["RoadRunner", "KungFuMaster", "Freeway", "Krull", "Kangaroo"]


def planned(seeds: list[int], only: list[str], games: list[str]) -> list[tuple[str, list[str], list[str], str]]:
    """(label, the benchmark's command, the result files it leaves in benchmarks/results/, its run folders under
    benchmarks/out/ as a glob) of every run wanted."""
    runs = []
    if "der" in only:
        for game in games:
            for seed in seeds:
                name = f"rainbow_atari_der_{game.lower()}_seed{seed}"
                files = [name + ".txt", name + ".png", name + "_metrics.csv"]
                command = ["bash", "benchmarks/rainbow_atari_der.sh", f"{game}NoFrameskip-v4", str(seed)]
                folders = f"{game}NoFrameskip-v4__rainbow_der__{seed}__*"
                runs.append((f"DER {game} seed {seed}", command, files, folders))
    if "ppo" in only:
        for seed in seeds:
            files = [f"ppo_atari_breakout_1m_seed{seed}_metrics.csv", f"ppo_atari_breakout_1m_seed{seed}.log"]
            command = ["bash", "benchmarks/ppo_atari_breakout_1m.sh", str(seed)]
            folders = f"BreakoutNoFrameskip-v4__ppo_atari__{seed}__*"
            runs.append((f"PPO Breakout 1M seed {seed}", command, files, folders))
    if "dqn" in only:
        for seed in seeds:
            files = [f"dqn_atari_breakout_500k_seed{seed}_metrics.csv"]
            command = ["bash", "benchmarks/dqn_atari_breakout_500k.sh", str(seed)]
            folders = f"BreakoutNoFrameskip-v4__dqn_atari__{seed}__*"
            runs.append((f"DQN Breakout 500k seed {seed}", command, files, folders))
    return runs


def cut_run(copies: list[str], command: list[str], folders: str) -> tuple[str, str] | None:
    """(frozen copy, run folder) of a run that was cut after its first checkpoint: checkpoint.pt in its folder and no
    saved model (*.pt besides the checkpoint: the benchmarks save one at their end), in a copy whose benchmark
    script resumes it. None when there is none."""
    for copy in copies:
        script = os.path.join(copy, command[1])
        if not os.path.exists(script) or "--resume" not in open(script).read():
            continue  # written before the benchmarks resumed: it would start the run again
        for run in sorted(glob.glob(os.path.join(copy, "benchmarks", "out", "runs", folders))):
            saved = [f for f in os.listdir(run) if f.endswith(".pt") and f != "checkpoint.pt"]
            if os.path.exists(os.path.join(run, "checkpoint.pt")) and not saved:
                return copy, run
    return None


def now() -> str:
    return f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC"


def freeze(folder: str | None) -> tuple[str, str]:
    """HEAD's committed files copied into `folder`, with its commit in folder/FROZEN_COMMIT (made once; reused,
    with the commit it holds, when it is there). Returns (commit, folder)."""
    head = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    if head.returncode != 0 or not head.stdout.strip():
        raise SystemExit(f"cannot read the commit of {ROOT}: {head.stderr.strip()}")
    folder = folder or f"/tmp/frozen-{head.stdout.strip()}"
    marker = os.path.join(folder, "FROZEN_COMMIT")
    if not os.path.exists(marker):
        os.makedirs(folder, exist_ok=True)
        with subprocess.Popen(["git", "-C", ROOT, "archive", "HEAD"], stdout=subprocess.PIPE) as archive:
            subprocess.run(["tar", "-x", "-C", folder], stdin=archive.stdout, check=True)
        if archive.returncode != 0:
            raise SystemExit(f"git archive HEAD failed ({archive.returncode}): {folder} is not a whole copy")
        with open(marker, "w") as f:
            f.write(head.stdout)
    with open(marker) as f:
        return f.read().strip(), folder


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--only", nargs="+", default=["der", "ppo", "dqn"], choices=["der", "ppo", "dqn"])
    parser.add_argument("--games", nargs="+", default=DER_GAMES, choices=DER_GAMES, help="DER's games, in this order")
    parser.add_argument("--frozen", default=None, help="the folder of the frozen copy (default /tmp/frozen-<commit>)")
    parser.add_argument("--dry-run", action="store_true", help="list the missing runs and stop")
    a = parser.parse_args()
    missing = [run for run in planned(a.seeds, a.only, a.games) if not os.path.exists(result(run[2][0]))]
    print(f"{len(missing)} missing: " + ("; ".join(label for label, *_ in missing) or "none"), flush=True)
    copies = sorted(set(glob.glob("/tmp/frozen-*")) | ({a.frozen} if a.frozen else set()))
    for label, command, _, folders in missing:
        if cut := cut_run(copies, command, folders):
            print(f"  {label}: cut, resumes from {cut[1]}/checkpoint.pt", flush=True)
    if a.dry_run or not missing:
        sys.exit(0)
    env = os.environ | {"OMP_WAIT_POLICY": "passive", "WANDB_MODE": os.environ.get("WANDB_MODE", "offline")}
    for label, command, files, folders in missing:
        cut = cut_run(copies, command, folders)
        if cut:  # the copy that wrote the checkpoint, and its commit
            frozen = cut[0]
            commit = open(os.path.join(frozen, "FROZEN_COMMIT")).read().strip()
            step = torch.load(os.path.join(cut[1], "checkpoint.pt"), mmap=True, weights_only=True)["global_step"]
            started = datetime.datetime.fromtimestamp(int(cut[1].rsplit("__", 1)[1]), datetime.timezone.utc)
            resumed = f", resumed at step {step:,} (the run started {started:%Y-%m-%d %H:%M} UTC)"
        else:
            commit, frozen = freeze(a.frozen)
            resumed = ""
        start = now()
        print(f"{start}: {label} in {frozen} ({commit}){resumed}", flush=True)
        subprocess.run(["nice", "-n", "19", *command], cwd=frozen, env=env, check=True)
        for name in files:
            for path in glob.glob(os.path.join(frozen, "benchmarks", "results", name)):
                shutil.copy(path, result(name))
        with open(result("atari_seeds_runs.txt"), "a") as f:
            f.write(f"{label}: commit {commit}, {machine()}, {start} to {now()}{resumed}\n")
        print(f"{now()}: {label} done", flush=True)
