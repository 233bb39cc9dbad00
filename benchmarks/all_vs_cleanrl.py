"""CleanRL's ppo_atari.py, dqn_atari.py and rainbow_atari.py against ours, side by side on this machine.

    python benchmarks/all_vs_cleanrl.py --cleanrl ~/cleanrl --cleanrl-python ~/cleanrl-venv/bin/python
        [--scripts ppo dqn rainbow] [--repeats 2] [--env-id BreakoutNoFrameskip-v4]

For each script and repeat, a pair of runs one after the other, never at the same time: CleanRL's
cleanrl/<script>_atari.py with its own interpreter (its checkout on PYTHONPATH for cleanrl_utils) and our
<script>_atari.py with this one, each copied alone into a fresh empty temporary folder and started there, same game,
same seed, same settings, output unbuffered. Which of the two goes first alternates from one repeat to the next.

The rate compared is the steady one: steps per second between the first progress line past a given step and the
last one, from the lines' arrival times, so that interpreter start, env creation and (DQN, Rainbow) the fast
random-action steps before learning starts are left out, as is any running average from the start. Our scripts
print `step N/...` every 5 s; CleanRL prints `SPS: ...` at known steps (PPO: after each iteration of 8 x 128 steps;
DQN and Rainbow: every 100 steps once learning has started), checked against the `global_step=N` lines of its
finished games. The whole-run rate (steps / wall time from start to exit) is given beside it.

Settings (the flags both scripts take; ours adds --eval-episodes 0 --checkpoint-every 0, as CleanRL neither
evaluates nor checkpoints):
  ppo:     defaults (8 envs x 128 steps), 24,576 steps; steady from step 2,048
  dqn:     26,000 steps, learning starts at 10,000, replay of 50,000, epsilon at 0.01 from step 5,200; from 12,000
  rainbow: 13,000 steps, learning starts at 5,000, replay of 20,000; steady from step 6,000
A pair took 5.5 (ppo), 14 (dqn) and 11 (rainbow) minutes on a quiet 2-core AVX2 CPU (--repeats 2 of all three: 64
minutes); expect about half that on an AVX-512 one.

Prints and writes to benchmarks/results/all_vs_cleanrl.txt each rate and the ratio ours / CleanRL, with the command,
date, machine (CPU model, SIMD flags, cores) and both sides' torch, gymnasium and ale-py. Run it with nothing else on
the machine: rates collapse when anything else runs, and differ 2x between CPUs of one kind, so compare ratios taken
in one call. --scale 0.1 shrinks every step count for a quick check that both sides run and parse (no file written
unless --out is given).
"""

import argparse
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass

from common import Finished, Rate, Report, median, progress_points, result, run_alone, script, steady_rate, versions

ALGOS = ("ppo", "dqn", "rainbow")
# CleanRL's script runs as it is; ale-py 0.9 and later register the Atari ids on import, which CleanRL's pinned
# gymnasium 0.29 does not do by itself, so the interpreter imports ale_py (when there is one) before the script.
LAUNCH = """
import runpy, sys
try:
    import ale_py  # noqa
except ImportError:
    pass
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@dataclass
class Setting:
    total: int
    after: int  # steady rate from the first progress line past this step
    flags: dict  # flags both scripts take


SETTINGS = {
    "ppo": Setting(24_576, 2_048, {}),
    "dqn": Setting(26_000, 12_000, {"learning-starts": 10_000, "buffer-size": 50_000, "exploration-fraction": 0.2}),
    "rainbow": Setting(13_000, 6_000, {"learning-starts": 5_000, "buffer-size": 20_000}),
}
OURS_EXTRA = ["--eval-episodes", "0", "--checkpoint-every", "0"]
PPO_BATCH = 8 * 128  # CleanRL's and our default num_envs x num_steps


def scaled(algo: str, scale: float) -> Setting:
    s = SETTINGS[algo]
    if scale == 1:
        return s
    size = lambda n, unit=100: max(unit, int(n * scale) // unit * unit)  # noqa: E731
    if algo == "ppo":
        return Setting(max(4 * PPO_BATCH, size(s.total, PPO_BATCH)), PPO_BATCH, {})
    flags = {k: (size(v) if k != "exploration-fraction" else v) for k, v in s.flags.items()}
    return Setting(size(s.total), size(s.after), flags)


def flag_list(env_id: str, seed: int, setting: Setting) -> list[str]:
    flags = ["--env-id", env_id, "--seed", str(seed), "--total-timesteps", str(setting.total)]
    for name, value in setting.flags.items():
        flags += [f"--{name}", str(value)]
    return flags


def cleanrl_steps(algo: str, setting: Setting) -> list[int]:
    """The steps at which CleanRL prints its `SPS:` lines: PPO after each iteration, DQN and Rainbow at each
    global_step > learning_starts that is a multiple of 100 (and so of the train frequency, 4)."""
    if algo == "ppo":
        return [PPO_BATCH * k for k in range(1, setting.total // PPO_BATCH + 1)]
    first = (setting.flags["learning-starts"] // 100 + 1) * 100
    return list(range(first, setting.total, 100))


def cleanrl_points(algo: str, setting: Setting, finished: Finished) -> list[tuple[float, int]]:
    """(arrival time, step) of CleanRL's `SPS:` lines, their steps from cleanrl_steps; checked against their number
    and the `global_step=N` lines of its finished games (which must fall between the SPS lines of their steps)."""
    expected = cleanrl_steps(algo, setting)
    times = [t for t, line in finished.lines if line.startswith("SPS:")]
    problem = f"{len(times)} SPS lines, {len(expected)} expected" if len(times) != len(expected) else None
    points, i = list(zip(times, expected, strict=False)), 0
    for t, line in finished.lines:
        if problem or not line.startswith("global_step="):
            continue
        game_step = int(line.split("=", 1)[1].split(",")[0])
        while i < len(points) and points[i][0] < t:  # the SPS lines before this game's line
            i += 1
        if (i > 0 and game_step < points[i - 1][1]) or (i < len(points) and game_step > points[i][1]):
            problem = f"a game that ended at step {game_step:,} is printed among SPS lines of other steps"
    if problem:
        raise ValueError(
            f"CleanRL's {algo}_atari.py: {problem}; its SPS lines are not where this benchmark expects them "
            "(another CleanRL version?)"
        )
    return points


@dataclass
class Side:
    rate: Rate
    whole: float  # steps / wall time from start to exit

    def __str__(self) -> str:
        return f"{self.rate} [whole run {self.whole:,.1f} SPS]"


def run_cleanrl(a, algo: str, setting: Setting) -> Side:
    path = os.path.join(a.cleanrl, "cleanrl", f"{algo}_atari.py")
    env = {**os.environ, "PYTHONPATH": os.path.abspath(a.cleanrl), "PYTHONUNBUFFERED": "1"}
    cmd = [a.cleanrl_python, "-u", "-c", LAUNCH, os.path.basename(path), *flag_list(a.env_id, a.seed, setting)]
    finished = run_alone(cmd, env=env, copy=[path], echo=a.echo).check()
    return Side(steady_rate(cleanrl_points(algo, setting, finished), setting.after), setting.total / finished.wall)


def run_ours(a, algo: str, setting: Setting) -> Side:
    path = script(f"{algo}_atari")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [a.python, "-u", os.path.basename(path), *flag_list(a.env_id, a.seed, setting), *OURS_EXTRA]
    finished = run_alone(cmd, env=env, copy=[path], echo=a.echo).check()
    return Side(steady_rate(progress_points(finished.lines), setting.after), setting.total / finished.wall)


def check_setup(a) -> None:
    for algo in a.scripts:
        path = os.path.join(a.cleanrl, "cleanrl", f"{algo}_atari.py")
        if not os.path.isfile(path):
            sys.exit(f"error: --cleanrl {a.cleanrl}: no {path}; give the root of a CleanRL checkout")
    env = {**os.environ, "PYTHONPATH": os.path.abspath(a.cleanrl)}
    probe = subprocess.run(
        [a.cleanrl_python, "-c", "import cleanrl_utils, gymnasium, ale_py, tyro, torch"],
        capture_output=True,
        text=True,
        env=env,
    )
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["it does not run"])[-1]
        sys.exit(f"error: --cleanrl-python {a.cleanrl_python}: {last}; see benchmarks/README.md for its venv")


def checkout_commit(folder: str) -> str:
    """The commit of a git checkout at folder ("not a git checkout" if folder is not the root of one)."""
    git = subprocess.run(["git", "-C", folder, "rev-parse", "--show-toplevel", "HEAD"], capture_output=True, text=True)
    lines = git.stdout.split()
    if git.returncode != 0 or os.path.realpath(lines[0]) != os.path.realpath(folder):
        return "not a git checkout"
    dirty = subprocess.run(["git", "-C", folder, "status", "--porcelain"], capture_output=True, text=True).stdout
    return f"commit {lines[1][:12]}{', with local changes' if dirty.strip() else ''}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cleanrl", required=True, help="root of a CleanRL checkout (holds cleanrl/, cleanrl_utils/)")
    parser.add_argument("--cleanrl-python", required=True, help="the interpreter of CleanRL's venv")
    parser.add_argument("--python", default=sys.executable, help="the interpreter of ours (default: this one)")
    parser.add_argument("--scripts", nargs="+", choices=ALGOS, default=list(ALGOS))
    parser.add_argument("--repeats", type=int, default=2, help="pairs per script")
    parser.add_argument("--env-id", default="BreakoutNoFrameskip-v4")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every step count (a quick check)")
    parser.add_argument("--out", default=None, help="default: benchmarks/results/all_vs_cleanrl.txt (at --scale 1)")
    parser.add_argument("--echo", action="store_true", help="print the runs' output as it comes")
    a = parser.parse_args()
    a.cleanrl_python = os.path.abspath(os.path.expanduser(a.cleanrl_python))
    a.cleanrl = os.path.expanduser(a.cleanrl)
    out = a.out or (result("all_vs_cleanrl.txt") if a.scale == 1 else None)
    check_setup(a)

    report = Report(out)
    cleanrl_env = {**os.environ, "PYTHONPATH": os.path.abspath(a.cleanrl)}
    report.say(f"ours:          {a.python}: {versions(a.python)}")
    report.say(f"CleanRL's:     {a.cleanrl_python}: {versions(a.cleanrl_python, cleanrl_env)}")
    report.say(f"CleanRL:       {os.path.abspath(a.cleanrl)} ({checkout_commit(a.cleanrl)})")
    report.say(f"threads:       OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '(unset: torch picks)')}")
    if a.scale != 1:
        report.say(f"--scale {a.scale}: a quick check, not a measurement")
    summary, complete = [], False
    try:
        for algo in a.scripts:
            setting = scaled(algo, a.scale)
            flags = shlex.join(flag_list(a.env_id, a.seed, setting))
            report.say(f"\n{algo}: both with {flags} (ours also {' '.join(OURS_EXTRA)})")
            report.say(f"steady rate from the first progress line past step {setting.after:,}")
            pairs = []
            for r in range(a.repeats):
                order = ["cleanrl", "ours"] if r % 2 == 0 else ["ours", "cleanrl"]
                sides = {}
                for who in order:
                    sides[who] = (run_cleanrl if who == "cleanrl" else run_ours)(a, algo, setting)
                ratio = sides["ours"].rate.sps / sides["cleanrl"].rate.sps
                whole = sides["ours"].whole / sides["cleanrl"].whole
                pairs.append((sides["cleanrl"], sides["ours"], ratio, whole))
                report.say(f"repeat {r + 1} ({' first, then '.join(order)}):")
                report.say(f"  CleanRL {algo}_atari.py: {sides['cleanrl']}")
                report.say(f"  ours    {algo}_atari.py: {sides['ours']}")
                report.say(f"  ratio ours / CleanRL: {ratio:.2f} steady ({whole:.2f} whole run)")
            summary.append(
                f"| {algo}_atari.py | {median(p[0].rate.sps for p in pairs):,.1f} | "
                f"{median(p[1].rate.sps for p in pairs):,.1f} | {median(p[2] for p in pairs):.2f} "
                f"({', '.join(f'{p[2]:.2f}' for p in pairs)}) | {median(p[3] for p in pairs):.2f} | {len(pairs)} |"
            )
        complete = True
    except (RuntimeError, ValueError) as error:
        report.say(f"stopped: {error}")
        raise
    finally:
        if not complete:
            report.say("incomplete: stopped before the end")
        if summary:
            report.say(f"\n{a.env_id}, medians over the pairs:\n")
            report.say(
                "| script | CleanRL steady SPS | ours steady SPS | ratio ours / CleanRL (each pair) |"
                " whole-run ratio | pairs |"
            )
            report.say("|---|---|---|---|---|---|")
            for line in summary:
                report.say(line)
        report.write()


if __name__ == "__main__":
    main()
