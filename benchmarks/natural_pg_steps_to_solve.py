"""Steps to solve CartPole-v1 and Acrobot-v1 with the natural gradient step, the restricted (Euclidean) step
and reinforce.py's plain gradient (Adam), same batches (8 envs, 8 whole episodes per update), several seeds.

    python benchmarks/natural_pg_steps_to_solve.py run --seeds 1 2 3 --jobs 6      # the runs, in parallel
    python benchmarks/natural_pg_steps_to_solve.py summarize                         # CSV + PNG from the runs

"Solved" is the first global_step at which the mean return of the last 20 episodes reaches the threshold
(475 on CartPole-v1, -100 on Acrobot-v1). Runs go to benchmarks/out/natural_pg_steps_to_solve/ (git-ignored);
the summary goes to benchmarks/results/natural_pg_steps_to_solve.{csv,png}. `summarize` also reads unfinished runs
and says how far they got.
"""

import argparse
import glob
import os
import sys

import numpy as np
from common import (
    find_metrics,
    metric,
    out_dir,
    result,
    run_pool,
    running_mean,
    snapshot,
    spread,
    steps_to_reach,
    write_csv,
)

OUT = out_dir("natural_pg_steps_to_solve")
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
    snapshot({s for s, _ in METHODS.values()}, OUT)  # one version of each script, even while the files are edited
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
    run_pool(queue, args.jobs, args.stop_after)


def summarize(args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, fig_axes = [], plt.subplots(1, 2, figsize=(11, 4))
    for ax, env_id in zip(fig_axes[1], THRESHOLD, strict=True):
        for method in METHODS:
            grid, curves = None, []
            for cwd in sorted(glob.glob(run_dir(env_id, method, 0)[:-1] + "*")):  # every seed
                found = find_metrics(cwd)
                if not found:
                    continue
                steps, returns = metric(found, "charts/episodic_return")
                mean20 = running_mean(returns, 20)
                seed = int(cwd.rsplit("__", 1)[1])
                solved = steps_to_reach(steps, returns, THRESHOLD[env_id], 20)
                rows.append(
                    {
                        "env_id": env_id,
                        "method": method,
                        "seed": seed,
                        "steps_to_solve": solved if solved is not None else "",
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
    write_csv(result("natural_pg_steps_to_solve.csv"), rows)
    fig_axes[0].savefig(result("natural_pg_steps_to_solve.png"), dpi=120)
    for env_id in THRESHOLD:
        for method in METHODS:
            mine = [r for r in rows if r["env_id"] == env_id and r["method"] == method]
            solved = [r["steps_to_solve"] for r in mine if r["steps_to_solve"] != ""]
            print(f"{env_id:12s} {method:42s} solved {len(solved)}/{len(mine)}: {spread(solved)}")


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
