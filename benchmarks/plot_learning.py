"""Learning curve of a run's raw game scores beside a reference run, as a PNG, with per-100k means.

    python benchmarks/plot_learning.py runs/<run>/metrics.csv \
        --reference benchmarks/results/ppo_atari_breakout_1m_cleanrl_seed1.csv --random 1.7 \
        --title "PPO, BreakoutNoFrameskip-v4, seed 1" --out benchmarks/results/ppo_atari_breakout_1m.png
"""

import argparse

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from common import game_scores  # noqa: E402


def summary(steps, scores, every=100_000):
    means = [scores[(steps > lo) & (steps <= lo + every)].mean() for lo in range(0, int(steps.max()), every)]
    return ", ".join(f"{m:.1f}" for m in means), scores[-100:].mean()


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("metrics")
    p.add_argument("--reference", default=None)
    p.add_argument("--reference-label", default="CleanRL ppo_atari.py (same machine kind)")
    p.add_argument("--label", default="ppo_atari.py (this repo)")
    p.add_argument("--random", type=float, default=None)
    p.add_argument("--published", type=float, default=None, help="a published final score, drawn as a line")
    p.add_argument("--published-label", default="published")
    p.add_argument("--window", type=int, default=100, help="games in the moving mean")
    p.add_argument("--title", default="")
    p.add_argument("--summary-every", type=int, default=100_000, help="steps per printed mean")
    p.add_argument("--out", required=True)
    a = p.parse_args()
    fig, ax = plt.subplots(figsize=(7, 4))
    for path, label in [(a.metrics, a.label), (a.reference, a.reference_label)]:
        if path is None:
            continue
        steps, scores = game_scores(path)
        k = min(a.window, len(scores))
        smooth = np.convolve(scores, np.ones(k) / k, mode="valid")
        (line,) = ax.plot(steps[len(steps) - len(smooth) :], smooth, label=f"{label}: mean of last {k} games")
        ax.plot(steps, scores, ".", alpha=0.15, markersize=2, color=line.get_color())
        means, last_100 = summary(steps, scores, every=a.summary_every)
        print(f"{label}: {len(scores)} games; means per {a.summary_every:,} steps: {means}; last 100: {last_100:.1f}")
    if a.random is not None:
        ax.axhline(a.random, color="gray", linestyle="--", label=f"random policy ({a.random})")
    if a.published is not None:
        ax.axhline(a.published, color="black", linestyle=":", label=f"{a.published_label} ({a.published:g})")
    ax.set_xlabel("agent steps (all envs; 4 frames each)")
    ax.set_ylabel("raw game score (all lives)")
    ax.set_title(a.title)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(a.out, dpi=120)
    print(f"wrote {a.out}")
