"""Every Atari figure of the README over its seeds: the mean, the spread, and for Atari-100k the IQM.

    python benchmarks/atari_seeds.py [--resamples 10000]

Reads what the learning benchmarks wrote into benchmarks/results/:
  rainbow_atari_der_<game>_seed<k>.txt        (bash benchmarks/rainbow_atari_der.sh <Game>NoFrameskip-v4 <k>): the
                                               mean of the 10 evaluation games after 100k steps of --preset der
  ppo_atari_breakout_1m_seed<k>_metrics.csv   (bash benchmarks/ppo_atari_breakout_1m.sh <k>): the last 100 games
  dqn_atari_breakout_500k_seed<k>_metrics.csv (bash benchmarks/dqn_atari_breakout_500k.sh <k>): the last 100 games
and writes benchmarks/results/atari_seeds.txt: per game and script each seed's score, the mean over the seeds and
their min-max (with three seeds a min-max says more than an interval would).

Atari-100k, the 5 games of the DER benchmark: each run's score human-normalized, (score - random) / (human -
random), with the random and human scores of Mnih et al. 2015 that the Atari-100k papers use; then the interquartile
mean (IQM) over all games x seeds, the mean of the middle half of the runs (Agarwal et al. 2021, "Deep RL at the
Edge of the Statistical Precipice": robust to an outlier run, less noisy than the median), with a 95% stratified
bootstrap interval (each game's seeds resampled with replacement, --resamples times; percentiles 2.5 and 97.5), and
the IQM of the 5 games' means over their seeds. Beside them, DER's published per-game means (van Hasselt et al.
2019) normalized the same way, and their IQM over the same 5 games: a figure of 5 means, comparable with the IQM of
our 5 means (while games have different numbers of seeds, the IQM over runs weighs them unequally).
It is not the 26-game Atari-100k IQM of the papers: 5 games, chosen before the runs.
"""

import argparse
import glob
import os
import re

import numpy as np
from common import Report, game_scores, result

# random and human scores (Mnih et al. 2015, as the Atari-100k papers normalize them)
RANDOM = {"Breakout": 1.7, "RoadRunner": 11.5, "KungFuMaster": 258.5, "Freeway": 0.0, "Krull": 1598.0, "Kangaroo": 52.0}
HUMAN = {"Breakout": 30.5, "RoadRunner": 7845.0, "KungFuMaster": 22736.3, "Freeway": 29.6, "Krull": 2665.5}
HUMAN |= {"Kangaroo": 3035.0}
DER_PUBLISHED = {"RoadRunner": 9600, "KungFuMaster": 14346, "Freeway": 27.9, "Krull": 2851, "Kangaroo": 779}
DER_LINE = re.compile(r"^(\w+)NoFrameskip-v4 seed (\d+): DER preset 100k steps: ([-\d.]+) \+- ([-\d.]+)")


def human_normalized(game: str, score: float) -> float:
    return (score - RANDOM[game]) / (HUMAN[game] - RANDOM[game])


def iqm(scores: np.ndarray) -> float:
    """The interquartile mean: the mean of the runs left when the lowest and the highest quarter (floor(n / 4)
    each) are dropped, as scipy.stats.trim_mean(scores, 0.25) computes it."""
    scores = np.sort(np.ravel(scores))
    cut = len(scores) // 4
    return float(scores[cut : len(scores) - cut].mean())


def stratified_bootstrap(per_game: dict[str, list[float]], statistic, resamples: int, seed: int = 0):
    """95% percentile interval of statistic(all runs) when each game's runs are resampled with replacement."""
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(resamples):
        drawn = [rng.choice(runs, size=len(runs), replace=True) for runs in per_game.values()]
        values.append(statistic(np.concatenate(drawn)))
    return float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))


def der_runs(folder: str) -> dict[str, dict[int, float]]:
    """{game: {seed: the mean of its 10 evaluation games}} from the DER result lines."""
    runs: dict[str, dict[int, float]] = {}
    for path in sorted(glob.glob(os.path.join(folder, "rainbow_atari_der_*_seed*.txt"))):
        with open(path) as f:
            match = DER_LINE.match(f.readline())
        if match is None:
            raise SystemExit(f"{path}: not a line written by rainbow_atari_der.sh")
        game, seed, score = match[1], int(match[2]), float(match[3])
        runs.setdefault(game, {})[seed] = score
    return runs


def last_games_runs(folder: str, name: str) -> dict[int, float]:
    """{seed: the mean of the last 100 training games} of <name>_seed<k>_metrics.csv."""
    runs = {}
    for path in glob.glob(os.path.join(folder, f"{name}_seed*_metrics.csv")):
        if seed := re.fullmatch(rf"{re.escape(name)}_seed(\d+)_metrics\.csv", os.path.basename(path)):
            runs[int(seed[1])] = float(game_scores(path)[1][-100:].mean())
    return dict(sorted(runs.items()))


def seeds_line(label: str, runs: dict[int, float], published: float | None = None) -> str:
    scores = list(runs.values())
    each = ", ".join(f"seed {seed} {score:,.1f}" for seed, score in runs.items())
    line = f"{label}: {len(scores)} seed{'s' if len(scores) > 1 else ''} ({each}): mean {np.mean(scores):,.1f}"
    line += f", min-max {min(scores):,.1f}-{max(scores):,.1f}" if len(scores) > 1 else ""
    return line + (f"; published {published:,}" if published is not None else "")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--resamples", type=int, default=10_000)
    parser.add_argument("--results", default=result(""), help="the folder of result files to read")
    parser.add_argument("--out", default=result("atari_seeds.txt"))
    a = parser.parse_args()
    report = Report(a.out)
    der = der_runs(a.results)
    report.say("rainbow_atari.py --preset der, Atari-100k (the mean of 10 evaluation games per seed):")
    for game, runs in der.items():
        report.say("  " + seeds_line(game, runs, DER_PUBLISHED.get(game)))
    for label, name in [("ppo_atari.py, Breakout 1M", "ppo_atari_breakout_1m"),
                        ("dqn_atari.py, Breakout 500k", "dqn_atari_breakout_500k")]:  # fmt: skip
        runs = last_games_runs(a.results, name)
        if runs:
            report.say(f"{label} (the mean of the last 100 training games per seed):")
            report.say("  " + seeds_line("Breakout", runs))
    games = [game for game in DER_PUBLISHED if game in der]
    normalized = {game: [human_normalized(game, score) for score in der[game].values()] for game in games}
    report.say(f"\nhuman-normalized, (score - random) / (human - random), {len(games)} games:")
    for game in games:
        ours, theirs = np.mean(normalized[game]), human_normalized(game, DER_PUBLISHED[game])
        seeds = f"(mean of {len(normalized[game])} seeds)"
        report.say(f"  {game:13s} ours {ours:6.3f} {seeds}, DER published {theirs:6.3f}")
    runs = np.concatenate([normalized[game] for game in games])
    low, high = stratified_bootstrap(normalized, iqm, a.resamples)
    seeds = ", ".join(f"{game} {len(normalized[game])}" for game in games)
    report.say(f"IQM over {len(runs)} runs (seeds per game: {seeds}): {iqm(runs):.3f}, 95% stratified bootstrap")
    report.say(f"  interval [{low:.3f}, {high:.3f}] ({a.resamples:,} resamples); the mean {runs.mean():.3f}")
    means = np.array([np.mean(normalized[game]) for game in games])
    report.say(f"IQM of the {len(games)} games' means over their seeds (as DER's below): {iqm(means):.3f}")
    published = np.array([human_normalized(game, DER_PUBLISHED[game]) for game in games])
    report.say(f"DER published, the same {len(games)} games: IQM {iqm(published):.3f}, mean {published.mean():.3f}")
    if min(len(runs) for runs in normalized.values()) < 2:
        report.say("(a game with one seed has nothing to resample: the interval is too narrow until each has three)")
    report.say("(5 games, not the 26 of the Atari-100k benchmark: not comparable with a 26-game IQM)")
    report.write()
