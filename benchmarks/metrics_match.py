"""Does today's code still run the algorithm that wrote an old result? Two metrics.csv files compared row by row.

    python benchmarks/metrics_match.py OLD_metrics.csv NEW_metrics.csv [--out benchmarks/results/<name>.txt]

A seed's result may be reused beside new seeds only if the code that wrote it runs the same algorithm as the code
that runs the new ones. Re-run today's script with the old run's flags and seed for a while (a short replay: stop
it with Ctrl-C), then compare its metrics.csv with the old one's rows up to the replay's last step. A seeded run
repeats bit for bit only on the same CPU kernels (AVX2 vs AVX-512, thread count), so replay on the old run's kind of
CPU. Every game's return, every logged loss and Q-value equal: the same algorithm, down to the random numbers it
draws. charts/SPS (a wall-clock rate) is left out; values that differ only in the last bits (a float computed in
another order) do not count: their number and the largest relative difference are given, the first 10 listed.
Exit status 0 for SAME, 1 for DIFFERENT, 2 when a file has no rows.
"""

import argparse
import csv
import math
import sys

from common import Report


def rows(path: str) -> list[tuple[int, str, float]]:
    """(step, metric, value) sorted by step, then metric (the order of the log calls within a step does not count);
    a row that does not parse ends the file (the half-written last line of a killed run)."""
    out = []
    with open(path) as f:
        for r in csv.DictReader(f):
            try:
                out.append((int(r["global_step"]), r["metric"], float(r["value"])))
            except (TypeError, ValueError):
                break
    return sorted((r for r in out if r[1] != "charts/SPS"), key=lambda r: r[:2])  # stable: same-step games in order


def equal(x: float, y: float) -> bool:
    return x == y or (math.isnan(x) and math.isnan(y))  # a NaN logged by both runs is the same NaN


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old")
    parser.add_argument("new")
    parser.add_argument("--out", default=None, help="also write the report to this file")
    a = parser.parse_args()
    old, new = rows(a.old), rows(a.new)
    report = Report(a.out)
    report.say(f"old: {a.old}\nnew: {a.new}")
    if not old or not new:
        report.say(f"nothing to compare: no rows in {a.old if not old else a.new}")
        report.write()
        sys.exit(2)
    last = min(old[-1][0], new[-1][0])  # the shorter run's last logged step: both compared up to there
    old, new = [r for r in old if r[0] <= last], [r for r in new if r[0] <= last]
    report.say(f"compared: the rows of both up to step {last:,}, charts/SPS left out")
    same = [(s, m) for s, m, _ in old] == [(s, m) for s, m, _ in new]
    if not same:
        report.say(f"the rows' steps or metrics differ ({len(old)} old rows, {len(new)} new)")
    else:
        off = [(x, y) for x, y in zip(old, new, strict=True) if not equal(x[2], y[2])]
        worst = max((abs(x[2] - y[2]) / max(abs(x[2]), 1e-30) for x, y in off), default=0.0)
        games = sum(m == "charts/episodic_return" for _, m, _ in old)
        report.say(
            f"{len(old)} rows, {games} games; {len(off)} values differ, the largest relative difference {worst:.1e}"
        )
        for (step, metric, x), (_, _, y) in off[:10]:
            report.say(f"  step {step:,} {metric}: old {x!r}, new {y!r}")
        games_equal = all(not m.startswith("charts/episodic") for (_, m, _), _ in off)
        same = games_equal and worst < 1e-12  # also False when a value is NaN in one run only
    report.say("SAME: every game equal, every other value equal up to its last bits" if same else "DIFFERENT")
    report.write()
    sys.exit(0 if same else 1)


if __name__ == "__main__":
    main()
