"""Does today's code still run the algorithm that wrote an old result? Two metrics.csv files compared row by row.

    python benchmarks/metrics_match.py OLD_metrics.csv NEW_metrics.csv [--out benchmarks/results/<name>.txt]

A seed's result may be reused beside new seeds only if the code that wrote it runs the same algorithm as the code
that runs the new ones. Re-run today's script with the old run's flags and seed for a while (a short replay: stop
it with Ctrl-C), then compare its metrics.csv with the old one's rows up to the replay's last step. A seeded run
repeats bit for bit only on the same CPU kernels (AVX2 vs AVX-512, thread count), so replay on the old run's kind of
CPU. Every game's return, every logged loss and Q-value equal: the same algorithm, down to the random numbers it
draws. charts/SPS (a wall-clock rate) is left out; values that differ only in the last bits (a float computed in
another order) are listed with their relative difference.
"""

import argparse
import csv

from common import Report


def rows(path: str) -> list[tuple[int, str, float]]:
    with open(path) as f:
        table = csv.DictReader(f)
        return [(int(r["global_step"]), r["metric"], float(r["value"])) for r in table if r["metric"] != "charts/SPS"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old")
    parser.add_argument("new")
    parser.add_argument("--out", default=None, help="also write the report to this file")
    a = parser.parse_args()
    old, new = rows(a.old), rows(a.new)
    last = new[-1][0]  # the replay's last logged step; its rows are compared with the old run's up to there
    old = [r for r in old if r[0] <= last]
    report = Report(a.out)
    report.say(f"old: {a.old}\nnew: {a.new}\ncompared: the old rows up to step {last:,}, charts/SPS left out")
    if [(s, m) for s, m, _ in old] != [(s, m) for s, m, _ in new]:
        report.say(f"DIFFERENT: the rows' steps or metrics differ ({len(old)} old rows, {len(new)} new)")
    else:
        off = [(x, y) for x, y in zip(old, new, strict=True) if x[2] != y[2]]
        worst = max((abs(x[2] - y[2]) / max(abs(x[2]), 1e-30) for x, y in off), default=0.0)
        games = sum(m == "charts/episodic_return" for _, m, _ in old)
        report.say(
            f"{len(old)} rows, {games} games; {len(off)} values differ, the largest relative difference {worst:.1e}"
        )
        for (step, metric, x), (_, _, y) in off[:10]:
            report.say(f"  step {step:,} {metric}: old {x!r}, new {y!r}")
        games_equal = all(not m.startswith("charts/episodic") for (_, m, _), _ in off)
        same = games_equal and worst < 1e-12
        report.say("SAME: every game equal, every other value equal up to its last bits" if same else "DIFFERENT")
    report.write()


if __name__ == "__main__":
    main()
