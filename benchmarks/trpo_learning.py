"""trpo.py benchmarks: CartPole-v1 steps to solve over seeds, and MuJoCo (Hopper, HalfCheetah, Walker2d) at 1M steps
with the RL Zoo's setup for sb3-contrib's TRPO (the defaults of trpo.py plus observation and reward normalization).

    python benchmarks/trpo_learning.py run cartpole --seeds 1 2 3 4 5 --jobs 2
    python benchmarks/trpo_learning.py run mujoco --envs Hopper-v5 --seeds 1 --jobs 1
    python benchmarks/trpo_learning.py summarize cartpole        # CSV + PNG from the runs, finished or not
    python benchmarks/trpo_learning.py summarize mujoco

CartPole "solved": the first global_step at which the mean return of the last 20 episodes reaches 475 (as
natural_pg's benchmark). MuJoCo: the mean training return of the last 100 episodes (sampled actions) and
the trained policy's deterministic evaluation (10 episodes; the RL Zoo evaluates deterministic policies).
Runs go to benchmarks/out/trpo_learning/ (git-ignored); summaries to benchmarks/results/trpo_learning_*.{csv,png}.
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
    read_metrics,
    result,
    run_pool,
    running_mean,
    snapshot,
    spread,
    steps_to_reach,
    write_csv,
)

OUT = out_dir("trpo_learning")
CONFIGS = {
    "cartpole": {  # name -> flags
        "defaults (2x1024 steps, RL Zoo MuJoCo set)": ["--total-timesteps", "200000"],
        "RL Zoo CartPole set (2x512, damping 1e-3, lambda 0.98, 15 CG)": [
            *("--total-timesteps", "200000", "--num-steps", "512", "--damping", "0.001", "--gae-lambda", "0.98"),
            *("--cg-iters", "15", "--vf-minibatch-size", "512"),
        ],
    },
    "mujoco": {
        "RL Zoo set (defaults + normalize obs and reward)": [
            *("--normalize-obs", "--normalize-reward", "--total-timesteps", "1000000"),
            *("--save-model", "--eval-episodes", "10", "--eval-deterministic"),
        ],
    },
}
ANCHORS = {  # env -> [(label, score)]: the RL Zoo's sb3-contrib TRPO at 1M, Spinning Up at 3M
    "Hopper-v5": [("sb3-contrib (RL Zoo) 1M: 3372", 3372), ("Spinning Up 3M: ~1890", 1890)],
    "HalfCheetah-v5": [("sb3-contrib (RL Zoo) 1M: 1803", 1803), ("Spinning Up 3M: ~1980", 1980)],
    # rl-baselines3-zoo benchmark.md (one run, Walker2d-v3, deterministic eval): 4933 +- 1453
    "Walker2d-v5": [("sb3-contrib (RL Zoo benchmark.md) 1M: 4933", 4933)],
}


def run_dir(suite: str, env_id: str, config: str, seed: int) -> str:
    return os.path.join(OUT, suite, f"{env_id}__{list(CONFIGS[suite]).index(config)}__{seed}")


def run(a) -> None:
    os.makedirs(os.path.join(OUT, a.suite), exist_ok=True)
    snapshot(["trpo.py"], os.path.join(OUT, a.suite))  # one version of the script, even while the file is edited
    script = os.path.join(OUT, a.suite, "trpo.py")
    queue = []
    for env_id in a.envs or (["CartPole-v1"] if a.suite == "cartpole" else ["Hopper-v5", "HalfCheetah-v5"]):
        for seed in a.seeds:
            for config, flags in CONFIGS[a.suite].items():
                cwd = run_dir(a.suite, env_id, config, seed)
                if not os.path.exists(cwd):
                    cmd = [sys.executable, script, "--env-id", env_id, "--seed", str(seed), "--eval-episodes", "0"]
                    queue.append((cwd, cmd + flags))  # a later --eval-episodes in flags wins
    run_pool(queue, a.jobs, a.stop_after)


def read_run(cwd: str):
    """(steps, returns) of the training episodes, the eval returns, and the last SPS of one run folder."""
    found = find_metrics(cwd)
    rows = read_metrics(found) if found else []
    steps, returns = metric(rows, "charts/episodic_return")
    sps = metric(rows, "charts/SPS")[1]
    return steps, returns, list(metric(rows, "eval/episodic_return")[1]), (sps[-1] if len(sps) else 0)


def summarize(a) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    window = 20 if a.suite == "cartpole" else 100
    envs = sorted({os.path.basename(d).split("__")[0] for d in glob.glob(os.path.join(OUT, a.suite, "*__*__*"))})
    rows, (fig, axes) = [], plt.subplots(1, len(envs), figsize=(6 * len(envs), 4.2), squeeze=False)
    for ax, env_id in zip(axes[0], envs, strict=True):
        for config in CONFIGS[a.suite]:
            for cwd in sorted(glob.glob(run_dir(a.suite, env_id, config, 0)[:-1] + "*")):
                steps, returns, evals, sps = read_run(cwd)
                if not len(steps):
                    continue
                curve = running_mean(returns, window)
                seed = int(cwd.rsplit("__", 1)[1])
                row = {"env_id": env_id, "config": config, "seed": seed, "steps_run": int(steps[-1])}
                if a.suite == "cartpole":
                    solved = steps_to_reach(steps, returns, 475, window)
                    row["steps_to_solve"] = solved if solved is not None else ""
                    row["final_mean20"] = round(float(curve[-1]), 1)
                else:
                    row["final_mean100_train"] = round(float(curve[-1]), 1)
                    row["eval_deterministic_mean"] = round(float(np.mean(evals)), 1) if evals else ""
                    row["eval_deterministic_std"] = round(float(np.std(evals)), 1) if evals else ""
                    row["last_sps"] = round(sps)
                rows.append(row)
                first = not any(r["config"] == config and r["env_id"] == env_id for r in rows[:-1])
                color = f"C{list(CONFIGS[a.suite]).index(config)}"  # one colour per config, a line per seed
                ax.plot(steps, curve, lw=1, color=color, alpha=0.8, label=config if first else None)
                if evals:  # the trained policy's mean action, after training: what the RL Zoo's numbers are
                    ax.errorbar(steps[-1], np.mean(evals), yerr=np.std(evals), fmt="o", ms=4, color=color, capsize=3)
        for label, score in ANCHORS.get(env_id, [("solved: 475", 475)] if a.suite == "cartpole" else []):
            ax.axhline(score, color="gray", lw=0.8, ls="--")
            ax.annotate(label, (0, score), fontsize=7, color="gray", va="bottom")
            ax.set_ylim(top=max(ax.get_ylim()[1], score * 1.06))  # room for the label above the line
        ax.set(title=env_id, xlabel="env steps", ylabel=f"mean return of the last {window} training episodes")
        ax.legend(fontsize=6, loc="lower right")
    dots = "; dots: deterministic evaluation after training (mean +- std, 10 episodes)" if a.suite == "mujoco" else ""
    fig.suptitle(f"trpo.py, {a.suite}: lines: training returns (sampled actions){dots}", fontsize=10)
    fig.tight_layout()
    write_csv(result(f"trpo_learning_{a.suite}.csv"), rows)
    fig.savefig(result(f"trpo_learning_{a.suite}.png"), dpi=120)
    for row in rows:
        print(row)
    if a.suite == "cartpole":
        for config in CONFIGS["cartpole"]:
            solved = [r["steps_to_solve"] for r in rows if r["config"] == config and r["steps_to_solve"] != ""]
            n = sum(r["config"] == config for r in rows)
            print(f"{config}: solved {len(solved)}/{n}: {spread(solved)}")


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("command", choices=["run", "summarize"])
    p.add_argument("suite", choices=list(CONFIGS))
    p.add_argument("--envs", nargs="+", default=None)
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--stop-after", type=float, default=None, help="seconds; then stop the runs (partial results)")
    a = p.parse_args()
    run(a) if a.command == "run" else summarize(a)
