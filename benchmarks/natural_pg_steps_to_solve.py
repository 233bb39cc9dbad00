"""Steps to solve CartPole-v1 and Acrobot-v1 with the natural gradient step, the restricted (Euclidean) step
and reinforce.py's plain gradient (Adam), same batches (8 envs, 8 whole episodes per update), several seeds.

    python benchmarks/natural_pg_steps_to_solve.py run --seeds 1 2 3 --jobs 6      # the runs, in parallel
    python benchmarks/natural_pg_steps_to_solve.py summarize                         # CSV + PNG from the runs

"Solved" is the first global_step at which the mean return of the last 20 episodes reaches the threshold
(475 on CartPole-v1, -100 on Acrobot-v1). Runs go to benchmarks/out/natural_pg/ (git-ignored); the summary
goes to benchmarks/results/natural_pg_steps_to_solve.{csv,png}. `summarize` also reads unfinished runs and
says how far they got.
"""

import argparse
import csv
import glob
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "benchmarks", "out", "natural_pg")
RESULTS = os.path.join(ROOT, "benchmarks", "results")
THRESHOLD = {"CartPole-v1": 475.0, "Acrobot-v1": -100.0}
METHODS = {  # name -> (script, flags); the batches are the scripts' defaults in both: 8 envs, 8 episodes
    "natural (fisher, eps 0.01)": ("natural_pg.py", ["--metric", "fisher", "--epsilon", "0.01"]),
    "restricted (euclidean, eps 0.02)": ("natural_pg.py", ["--metric", "euclidean", "--epsilon", "0.02"]),
    "plain gradient (reinforce.py, Adam 1e-2)": ("reinforce.py", []),
}
SWEEP = {  # --sweep: other step sizes on CartPole-v1, to see whether the ranking holds at a tuned epsilon
    "natural@0.03 (fisher, eps 0.03)": ("natural_pg.py", ["--metric", "fisher", "--epsilon", "0.03"]),
    "restricted@0.005 (euclidean, eps 0.005)": ("natural_pg.py", ["--metric", "euclidean", "--epsilon", "0.005"]),
    "restricted@0.001 (euclidean, eps 0.001)": ("natural_pg.py", ["--metric", "euclidean", "--epsilon", "0.001"]),
}


def run_dir(env_id: str, method: str, seed: int) -> str:
    tag = method.split(" ")[0]
    return os.path.join(OUT, f"{env_id}__{tag}__{seed}")


def run(args) -> None:
    os.makedirs(OUT, exist_ok=True)
    # a snapshot of each script, so that the runs use one version even while the files are edited
    for script in {s for s, _ in METHODS.values()}:
        shutil.copy(os.path.join(ROOT, script), os.path.join(OUT, script))
    queue = []
    for env_id, budget in [("CartPole-v1", args.cartpole_steps), ("Acrobot-v1", args.acrobot_steps)]:
        if env_id not in args.envs:
            continue
        for seed in args.seeds:
            for method, (script, flags) in METHODS.items():
                cwd = run_dir(env_id, method, seed)
                if os.path.exists(cwd):
                    continue
                cmd = [sys.executable, os.path.join(OUT, script), "--env-id", env_id, "--seed", str(seed)]
                cmd += ["--total-timesteps", str(budget), "--eval-episodes", "0", "--exp-name", method.split(" ")[0]]
                queue.append((cwd, cmd + flags))
    running, start = [], time.time()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    while queue or running:
        while queue and len(running) < args.jobs:
            cwd, cmd = queue.pop(0)
            os.makedirs(cwd)
            log = open(os.path.join(cwd, "log.txt"), "w")
            print(" ".join(cmd), flush=True)
            running.append(subprocess.Popen(cmd, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, env=env))
        time.sleep(5)
        running = [p for p in running if p.poll() is None]
        if args.stop_after and time.time() - start > args.stop_after:  # out of time: stop, keep what was logged
            print(f"stopping {len(running)} runs and skipping {len(queue)} after {args.stop_after} s", flush=True)
            for p in running:
                p.send_signal(signal.SIGINT)  # KeyboardInterrupt: the metrics file is flushed on the way out
            queue = []


def curve(metrics_csv: str):
    rows = [r for r in csv.DictReader(open(metrics_csv)) if r["metric"] == "charts/episodic_return"]
    steps = np.array([int(r["global_step"]) for r in rows])
    returns = np.array([float(r["value"]) for r in rows])
    mean20 = np.array([returns[max(0, i - 19) : i + 1].mean() for i in range(len(returns))])
    return steps, mean20


def summarize(args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, fig_axes = [], plt.subplots(1, 2, figsize=(11, 4))
    for ax, env_id in zip(fig_axes[1], THRESHOLD, strict=True):
        for method in METHODS:
            grid, curves = None, []
            for cwd in sorted(glob.glob(run_dir(env_id, method, 0)[:-1] + "*")):  # every seed
                found = glob.glob(os.path.join(cwd, "runs", "*", "metrics.csv"))
                if not found:
                    continue
                steps, mean20 = curve(found[0])
                seed = int(cwd.rsplit("__", 1)[1])
                solved = np.flatnonzero((mean20 >= THRESHOLD[env_id]) & (np.arange(len(mean20)) >= 19))
                rows.append(
                    {
                        "env_id": env_id,
                        "method": method,
                        "seed": seed,
                        "steps_to_solve": int(steps[solved[0]]) if len(solved) else "",
                        "steps_run": int(steps[-1]) if len(steps) else 0,
                        "final_mean20": round(float(mean20[-1]), 1) if len(steps) else "",
                    }
                )
                if len(steps):
                    grid = np.linspace(0, args.plot_steps[env_id], 200) if grid is None else grid
                    curves.append(np.where(grid <= steps[-1], np.interp(grid, steps, mean20), np.nan))
            if curves:
                c = np.array(curves)
                line = ax.plot(grid, np.nanmedian(c, 0), label=f"{method} ({len(c)} seeds)")[0]
                ax.fill_between(grid, np.nanmin(c, 0), np.nanmax(c, 0), color=line.get_color(), alpha=0.15)
        ax.axhline(THRESHOLD[env_id], color="gray", lw=0.8, ls="--")
        ax.set(title=env_id, xlabel="env steps", ylabel="mean return of the last 20 episodes")
    fig_axes[1][0].legend(fontsize=7, loc="lower right")
    fig_axes[0].suptitle("natural_pg.py: median and range over seeds (same batches: 8 envs x 8 episodes per update)")
    fig_axes[0].tight_layout()
    os.makedirs(RESULTS, exist_ok=True)
    fig_axes[0].savefig(os.path.join(RESULTS, "natural_pg_steps_to_solve.png"), dpi=120)
    with open(os.path.join(RESULTS, "natural_pg_steps_to_solve.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    for env_id in THRESHOLD:
        for method in METHODS:
            mine = [r for r in rows if r["env_id"] == env_id and r["method"] == method]
            solved = [r["steps_to_solve"] for r in mine if r["steps_to_solve"] != ""]
            text = f"median {np.median(solved):,.0f}, range {min(solved):,}-{max(solved):,}" if solved else "-"
            print(f"{env_id:12s} {method:42s} solved {len(solved)}/{len(mine)}: {text}")


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("command", choices=["run", "summarize"])
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--cartpole-steps", type=int, default=100_000)
    p.add_argument("--acrobot-steps", type=int, default=100_000)
    p.add_argument("--envs", nargs="+", default=list(THRESHOLD), choices=list(THRESHOLD))
    p.add_argument("--sweep", action="store_true", help="add the SWEEP step sizes (in run and summarize)")
    p.add_argument("--stop-after", type=float, default=None, help="seconds; then stop the runs (partial results)")
    a = p.parse_args()
    if a.sweep:
        METHODS.update(SWEEP)
    a.plot_steps = {"CartPole-v1": a.cartpole_steps, "Acrobot-v1": a.acrobot_steps}
    run(a) if a.command == "run" else summarize(a)
