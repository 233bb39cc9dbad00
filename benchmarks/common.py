"""What the benchmarks share: where things go, the machine a figure was taken on, running a script in an empty folder
with its output timestamped, reading metrics.csv and progress lines, steady rates, medians, steps to a threshold,
a pool of background runs, and the header of a result file.

The benchmarks import it (`from common import ...`, or `import common`; Python puts benchmarks/ on the path when one
of them runs). The six scripts never do: each stays one file that imports nothing from this repository.
"""

import csv
import datetime
import glob
import importlib
import os
import platform
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results")


def result(name: str) -> str:
    """benchmarks/results/<name>."""
    return os.path.join(RESULTS, name)


def out_dir(name: str) -> str:
    """benchmarks/out/<name>/ (git-ignored): the runs and logs of a long benchmark."""
    return os.path.join(ROOT, "benchmarks", "out", name)


def script(name: str) -> str:
    """The path of one of the six scripts, e.g. script("ppo_atari")."""
    return os.path.join(ROOT, f"{name}.py")


def import_script(name: str):
    """Import one of the six scripts as a module (e.g. import_script("dqn_atari")), from the repository root."""
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    return importlib.import_module(name)


# ---------------------------------------------------------------- the machine

SIMD_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    """The SIMD flags of SIMD_FLAGS that this CPU has (from /proc/cpuinfo; empty where there is none)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        flags = []
    return [flag for flag in SIMD_FLAGS if flag in flags]


def torch_build(python: str | None = None) -> str:
    """torch's version and the CPU kernels it picks on this machine, of this interpreter or of another one."""
    code = "import torch; print(torch.__version__, torch.backends.cpu.get_cpu_capability())"
    if python is None:
        import torch

        version, kernels = torch.__version__, torch.backends.cpu.get_cpu_capability()
    else:
        out = subprocess.run([python, "-c", code], capture_output=True, text=True)
        if out.returncode != 0:
            return f"(no torch in {python})"
        version, kernels = out.stdout.split()
    return f"torch {version} ({kernels} kernels)"


VERSIONS = """
import importlib.metadata as metadata
import torch
found = []
for name in ("gymnasium", "ale-py", "numpy"):
    try:
        found.append(f"{name} {metadata.version(name)}")
    except metadata.PackageNotFoundError:
        found.append(f"no {name}")
kernels = torch.backends.cpu.get_cpu_capability()
print(", ".join([f"torch {torch.__version__} ({kernels} kernels)", *found]))
"""


def versions(python: str, env: dict | None = None) -> str:
    """torch (and the CPU kernels it picks here), gymnasium, ale-py and numpy of an interpreter."""
    out = subprocess.run([python, "-c", VERSIONS], capture_output=True, text=True, env=env)
    return out.stdout.strip() if out.returncode == 0 else f"(could not read: {out.stderr.strip()[-200:]})"


def machine() -> str:
    """One line: CPU model, SIMD flags, cores, memory, torch."""
    try:
        memory = f", {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB RAM"
    except (ValueError, OSError, AttributeError):
        memory = ""
    flags = " ".join(cpu_flags()) or "none of " + "/".join(SIMD_FLAGS[:3])
    python = sys.version.split()[0]
    return f"{cpu_model()}, {os.cpu_count()} cores{memory}; SIMD: {flags}; {torch_build()}; Python {python}"


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def header(argv: list[str] | None = None) -> list[str]:
    """The first lines of a result file: the command, the date, the machine and its load."""
    argv = sys.argv if argv is None else argv
    command = shlex.join(["python", os.path.relpath(argv[0], ROOT), *argv[1:]])
    return [
        f"command: {command}",
        f"date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"machine: {machine()}",
        f"load average before (1, 5, 15 min): {load()}",
    ]


class Report:
    """Lines printed as they come and written to a result file at the end, after header()."""

    def __init__(self, out: str | None, argv: list[str] | None = None):
        self.out, self.lines = out, []
        for line in header(argv):
            self.say(line)

    def say(self, text: str = "") -> None:
        print(text, flush=True)
        self.lines.append(text)

    def write(self) -> None:
        self.say(f"load average after (1, 5, 15 min): {load()}")
        if self.out:
            os.makedirs(os.path.dirname(os.path.abspath(self.out)), exist_ok=True)
            with open(self.out, "w") as f:
                f.write("\n".join(self.lines) + "\n")
            print(f"wrote {self.out}")


# ---------------------------------------------------------------- running a script, timed


@dataclass
class Finished:
    """A finished process: its wall time, its output lines with their arrival times (seconds after the start), its
    exit status and, where it wrote one, the last charts/SPS of its metrics.csv."""

    command: list[str]
    returncode: int
    wall: float
    lines: list[tuple[float, str]] = field(default_factory=list)
    logged_sps: float | None = None

    def check(self) -> "Finished":
        if self.returncode != 0:
            tail = "\n".join(line for _, line in self.lines[-20:])
            raise RuntimeError(f"{shlex.join(self.command)} exited with {self.returncode}:\n{tail}")
        return self


def run_timed(command: list[str], cwd: str, env: dict | None = None, echo: bool = False) -> Finished:
    """Run a command in cwd, reading its stdout and stderr line by line as they arrive (run Python with -u or
    PYTHONUNBUFFERED=1, or the lines arrive in blocks), and time it from start to exit."""
    start = time.perf_counter()
    proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in proc.stdout:
        lines.append((time.perf_counter() - start, line.rstrip("\n")))
        if echo:
            print(f"    {line.rstrip()}", flush=True)
    proc.wait()
    return Finished(command, proc.returncode, time.perf_counter() - start, lines)


def run_alone(command: list[str], env: dict | None = None, copy: Iterable[str] = (), echo: bool = False) -> Finished:
    """run_timed in a fresh empty temporary folder (removed afterwards), with the files of `copy` copied into it
    first (the command may name them by their base name), reading the last charts/SPS of the run's metrics.csv
    before the folder goes."""
    with tempfile.TemporaryDirectory(prefix="bench-") as folder:
        for path in copy:
            shutil.copy(path, folder)
        finished = run_timed(command, folder, env, echo)
        found = find_metrics(folder)
        if found:
            sps = metric(found, "charts/SPS")[1]
            finished.logged_sps = float(sps[-1]) if len(sps) else None
    return finished


def run_pool(queue: list[tuple[str, list[str]]], jobs: int, stop_after: float | None = None) -> None:
    """Run (folder, command) pairs, `jobs` at a time, each in its folder (made here) with its output in log.txt
    there, one torch thread each (OMP_NUM_THREADS=1). After stop_after seconds the running ones get SIGINT (the
    scripts flush their metrics on the way out) and the rest are skipped."""
    running, start, stopped = [], time.time(), False
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    queue = list(queue)
    while queue or running:
        while queue and len(running) < jobs:
            cwd, command = queue.pop(0)
            os.makedirs(cwd)
            print(shlex.join(command), flush=True)
            with open(os.path.join(cwd, "log.txt"), "w") as log:
                running.append(subprocess.Popen(command, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, env=env))
        time.sleep(5)
        running = [p for p in running if p.poll() is None]
        if stop_after and time.time() - start > stop_after and not stopped:  # out of time: stop, keep the logs
            print(f"stopping {len(running)} runs and skipping {len(queue)} after {stop_after} s", flush=True)
            for p in running:
                p.send_signal(signal.SIGINT)  # once: a second SIGINT would stop a script before it has written
            queue, stopped = [], True


def snapshot(names: Iterable[str], folder: str) -> None:
    """Copy scripts (file names in the repository root) into folder, so that long runs use one version of each
    even while the files are edited."""
    os.makedirs(folder, exist_ok=True)
    for name in names:
        shutil.copy(os.path.join(ROOT, name), os.path.join(folder, name))


# ---------------------------------------------------------------- metrics.csv


def find_metrics(folder: str) -> str | None:
    """The metrics.csv of the run a script made in folder (runs/<run>/metrics.csv), if any."""
    found = sorted(glob.glob(os.path.join(folder, "runs", "*", "metrics.csv")))
    return found[-1] if found else None


def read_metrics(path: str) -> list[dict]:
    """The rows of a metrics.csv (global_step, metric, value); the last line is dropped when a running run has
    not finished writing it."""
    with open(path) as f:
        text = f.read()
    return list(csv.DictReader(text.split("\n")[:-1]))


def metric(rows_or_path: list[dict] | str, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(global_step, value) arrays of one metric."""
    rows = read_metrics(rows_or_path) if isinstance(rows_or_path, str) else rows_or_path
    picked = [r for r in rows if r["metric"] == name]
    return np.array([int(float(r["global_step"])) for r in picked]), np.array([float(r["value"]) for r in picked])


def game_scores(path: str) -> tuple[np.ndarray, np.ndarray]:
    """(global_step, episodic_return) per finished game, from a metrics.csv or a two-column csv
    (global_step, episodic_return), such as a CleanRL run's exported scores."""
    rows = read_metrics(path)
    if rows and "metric" in rows[0]:
        return metric(rows, "charts/episodic_return")
    return np.array([float(r["global_step"]) for r in rows]), np.array([float(r["episodic_return"]) for r in rows])


# ---------------------------------------------------------------- progress lines and rates

OUR_PROGRESS = re.compile(r"^step ([\d,]+)/")  # our scripts, every 5 s: "step 41,984/999,424 | 303 SPS | ..."


def progress_points(lines: list[tuple[float, str]], pattern: re.Pattern = OUR_PROGRESS) -> list[tuple[float, int]]:
    """(arrival time, step) of each progress line."""
    points = []
    for t, line in lines:
        m = pattern.search(line)
        if m:
            points.append((t, int(m.group(1).replace(",", ""))))
    return points


@dataclass
class Rate:
    sps: float
    first_step: int
    last_step: int
    seconds: float

    def __str__(self) -> str:
        return f"{self.sps:,.1f} SPS over steps {self.first_step:,}-{self.last_step:,} ({self.seconds:.0f} s)"


def steady_rate(points: list[tuple[float, int]], after: int = 0) -> Rate:
    """Steps per second between the first point past step `after` and the last one: the rate once the start-up
    (interpreter, envs, a replay memory filled with random actions) is behind, not a running average from the
    start."""
    kept = [(t, s) for t, s in points if s > after]
    if len(kept) < 2 or kept[-1][0] <= kept[0][0]:
        raise ValueError(f"fewer than two progress points after step {after:,} ({len(points)} in all)")
    (t0, s0), (t1, s1) = kept[0], kept[-1]
    return Rate((s1 - s0) / (t1 - t0), s0, s1, t1 - t0)


def steady_run(command: list[str], after: int, env: dict | None = None, copy: Iterable[str] = ()) -> Rate:
    """Run one of our scripts alone (run_alone; give python -u) and return its steady rate past step `after`."""
    return steady_rate(progress_points(run_alone(command, env=env, copy=copy).check().lines), after)


# ---------------------------------------------------------------- numbers


def median(values: Iterable[float]) -> float:
    return statistics.median(list(values))


def median_ms(fn: Callable[[], object], repeats: int, skip: float = 0.1) -> float:
    """Median milliseconds of fn(), the first `skip` fraction of the calls left out (warm-up)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times[int(repeats * skip) :]) * 1e3


def running_mean(x: np.ndarray, n: int) -> np.ndarray:
    """Mean of the last n values at each point (fewer at the start)."""
    return np.array([x[max(0, i - n + 1) : i + 1].mean() for i in range(len(x))])


def steps_to_reach(steps: np.ndarray, returns: np.ndarray, threshold: float, window: int = 20) -> int | None:
    """The first global_step at which the mean return of the last `window` episodes is at least the threshold
    (only once `window` episodes are done); None if never."""
    curve = running_mean(np.asarray(returns, dtype=float), window)
    reached = np.flatnonzero((curve >= threshold) & (np.arange(len(curve)) >= window - 1))
    return int(steps[reached[0]]) if len(reached) else None


def spread(values: list[int]) -> str:
    """The median and range of the runs that got there ("median M, range A-B"), "-" if none did."""
    if not values:
        return "-"
    return f"median {np.median(values):,.0f}, range {min(values):,}-{max(values):,}"


def write_csv(path: str, rows: list[dict]) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
