"""Steps REINFORCE needs to reach a mean return of 475 on CartPole-v1 and -100 on Acrobot-v1, with the
learned value baseline (the default) and with none; several seeds each. Writes per-run and summary
CSVs and a PNG of the learning curves into benchmarks/results/; runs and logs go to benchmarks/out/.

    python benchmarks/reinforce_steps_to_solve.py --seeds 1 2 3 4 5 --jobs 2

"Reached" = the first global_step at which the mean return of the last 20 episodes is at least the
threshold (the same window as the CartPole test); a run that never gets there counts as not reached.
"""

import argparse
import csv
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from common import ROOT, find_metrics, metric, out_dir, result, script, steps_to_reach, write_csv  # noqa: E402

OUT = out_dir("reinforce_steps_to_solve")
RUNS_CSV = result("reinforce_steps_to_solve_runs.csv")
THRESHOLD = {"CartPole-v1": 475.0, "Acrobot-v1": -100.0}
WINDOW = 20
FIELDS = [
    "env_id",
    "baseline",
    "seed",
    "total_timesteps",
    "steps_to_threshold",
    "final_mean_return",
    "wall_s",
    "metrics",
]
LOCK = threading.Lock()


def episodes(metrics_csv: str) -> tuple[np.ndarray, np.ndarray]:
    return metric(metrics_csv, "charts/episodic_return")


def median_or_more(reached, runs, budget):
    ordered = sorted(reached) + [np.inf] * (runs - len(reached))
    median = np.median(ordered) if runs % 2 else (ordered[runs // 2 - 1] + ordered[runs // 2]) / 2
    return int(median) if np.isfinite(median) else f">{budget}"


def run_one(env_id, baseline, seed, total_timesteps):
    folder = os.path.join(OUT, f"{env_id}__{baseline}__{seed}")
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    cmd = [sys.executable, script("reinforce"), "--env-id", env_id, "--baseline", baseline]
    cmd += ["--seed", str(seed), "--total-timesteps", str(total_timesteps), "--eval-episodes", "0"]
    cmd += ["--exp-name", f"reinforce_{baseline}"]
    start = time.time()
    with open(os.path.join(folder, "log.txt"), "w") as log:
        proc = subprocess.Popen(cmd, cwd=folder, stdout=log, stderr=subprocess.STDOUT)
        # stop a run once it has reached the threshold: the step count is all this measures (saves CPU)
        while proc.poll() is None:
            time.sleep(5)
            found = find_metrics(folder)
            if found and steps_to_reach(*episodes(found), THRESHOLD[env_id], WINDOW) is not None:
                proc.send_signal(signal.SIGINT)
                proc.wait()
        if proc.returncode not in (0, -signal.SIGINT, 130):
            raise RuntimeError(f"{cmd} failed, see {folder}/log.txt")
    (run_dir,) = [os.path.join(folder, "runs", d) for d in os.listdir(os.path.join(folder, "runs"))]
    steps, returns = episodes(os.path.join(run_dir, "metrics.csv"))
    reached = steps_to_reach(steps, returns, THRESHOLD[env_id], WINDOW)
    print(f"{env_id} {baseline} seed {seed}: reached at {reached} ({time.time() - start:.0f} s)", flush=True)
    row = dict(
        env_id=env_id,
        baseline=baseline,
        seed=seed,
        total_timesteps=total_timesteps,
        steps_to_threshold=reached if reached is not None else "",
        final_mean_return=round(float(returns[-WINDOW:].mean()), 1),
        wall_s=round(time.time() - start),
        metrics=os.path.relpath(os.path.join(run_dir, "metrics.csv"), ROOT),
    )
    with LOCK:  # one row as each run ends, so that a cut-short benchmark keeps what finished
        with open(RUNS_CSV, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=FIELDS).writerow(row)
    return row


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    p.add_argument("--envs", nargs="+", default=["CartPole-v1", "Acrobot-v1"])
    p.add_argument("--baselines", nargs="+", default=["value", "none"])
    p.add_argument("--cartpole-steps", type=int, default=300_000)
    p.add_argument("--acrobot-steps", type=int, default=300_000)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--summarize", action="store_true", help="only rebuild the summary and PNG from the runs CSV")
    a = p.parse_args()
    budget = {"CartPole-v1": a.cartpole_steps, "Acrobot-v1": a.acrobot_steps}
    if not a.summarize:
        os.makedirs(os.path.dirname(RUNS_CSV), exist_ok=True)
        with open(RUNS_CSV, "w", newline="") as f:
            csv.DictWriter(f, fieldnames=FIELDS).writeheader()
        # seed by seed, so that a benchmark cut short still compares both baselines on both envs
        configs = [(e, b, s, budget[e]) for s in a.seeds for e in a.envs for b in a.baselines]
        with ThreadPoolExecutor(a.jobs) as pool:
            list(pool.map(lambda c: run_one(*c), configs))
    rows = list(csv.DictReader(open(RUNS_CSV)))
    for r in rows:
        r["seed"] = int(r["seed"])
        r["steps_to_threshold"] = int(r["steps_to_threshold"]) if r["steps_to_threshold"] else ""
        budget[r["env_id"]] = int(r["total_timesteps"])
    summary = []
    for env_id in a.envs:
        for baseline in a.baselines:
            group = [r for r in rows if r["env_id"] == env_id and r["baseline"] == baseline]
            if not group:
                continue
            reached = [r["steps_to_threshold"] for r in group if r["steps_to_threshold"] != ""]
            summary.append(
                dict(
                    env_id=env_id,
                    baseline=baseline,
                    threshold=THRESHOLD[env_id],
                    seeds=len(group),
                    reached=len(reached),
                    budget=budget[env_id],
                    # a run that never reached counts as more than the budget: the median stays defined
                    # while at least half reached; the max is then "> budget"
                    median_steps=median_or_more(reached, len(group), budget[env_id]),
                    min_steps=min(reached) if reached else f">{budget[env_id]}",
                    max_steps=max(reached) if len(reached) == len(group) else f">{budget[env_id]}",
                )
            )
            print(summary[-1])
    write_csv(result("reinforce_steps_to_solve.csv"), summary)

    fig, axes = plt.subplots(1, len(a.envs), figsize=(6 * len(a.envs), 4), squeeze=False)
    colors = {"value": "tab:blue", "mean": "tab:green", "none": "tab:red"}
    for ax, env_id in zip(axes[0], a.envs, strict=True):
        for r in (r for r in rows if r["env_id"] == env_id):
            steps, returns = episodes(os.path.join(ROOT, r["metrics"]))
            smooth = np.convolve(returns, np.ones(WINDOW) / WINDOW, mode="valid")
            label = f"--baseline {r['baseline']}" if r["seed"] == min(x["seed"] for x in rows) else None
            ax.plot(steps[WINDOW - 1 :], smooth, color=colors[r["baseline"]], alpha=0.7, lw=1, label=label)
        ax.axhline(THRESHOLD[env_id], color="gray", ls="--", lw=1)
        seeds = sorted({r["seed"] for r in rows if r["env_id"] == env_id})
        ax.set_title(f"REINFORCE, {env_id}, seeds {', '.join(map(str, seeds))}")
        ax.set_xlabel("env steps")
        ax.set_ylabel(f"mean return of the last {WINDOW} episodes")
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(result("reinforce_steps_to_solve.png"), dpi=120)
    print("wrote benchmarks/results/reinforce_steps_to_solve{_runs.csv,.csv,.png}")


if __name__ == "__main__":
    main()
