"""benchmarks/atari_seeds.py: the statistics the README's Atari results are restated with."""

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
import atari_seeds  # noqa: E402
import metrics_match  # noqa: E402


def test_iqm_is_the_mean_of_the_middle_half():
    assert atari_seeds.iqm(np.arange(1, 16)) == pytest.approx(np.mean(np.arange(4, 13)))  # 15 runs: 3 dropped each end
    assert atari_seeds.iqm([4.0, 1.0, 3.0, 2.0]) == pytest.approx(2.5)  # 4 runs: the middle two
    rng = np.random.default_rng(0)
    x = rng.normal(size=12)
    outlier = x.copy()
    outlier[np.argmax(x)] = 1e9  # a runaway run does not move it; it would move the mean
    assert atari_seeds.iqm(outlier) == pytest.approx(atari_seeds.iqm(x))
    naive = np.mean([v for v in x if np.sum(x < v) >= 3 and np.sum(x > v) >= 3])  # rank 4..9 of 12
    assert atari_seeds.iqm(x) == pytest.approx(naive)


def test_human_normalization_with_the_published_random_and_human_scores():
    # Mnih et al. 2015: KungFuMaster random 258.5, human 22,736.3; Freeway 0.0 and 29.6; RoadRunner 11.5 and 7,845.0
    assert atari_seeds.human_normalized("KungFuMaster", 14346) == pytest.approx((14346 - 258.5) / (22736.3 - 258.5))
    assert atari_seeds.human_normalized("Freeway", 29.6) == pytest.approx(1.0)
    assert atari_seeds.human_normalized("RoadRunner", 11.5) == 0
    assert atari_seeds.human_normalized("RoadRunner", 9600) == pytest.approx(1.2240, abs=1e-4)


def test_stratified_bootstrap_resamples_within_games():
    # one seed per game: nothing to resample, the interval is the point
    one = {"a": [0.5], "b": [1.0], "c": [2.0], "d": [3.0]}
    assert atari_seeds.stratified_bootstrap(one, atari_seeds.iqm, 200) == (1.5, 1.5)
    # games far apart: a resample keeps each game's count, so the mean over games stays within each game's range
    per_game = {"low": [0.0, 0.1, 0.2], "high": [10.0, 10.1, 10.2]}
    low, high = atari_seeds.stratified_bootstrap(per_game, np.mean, 2000)
    assert 5.0 <= low < np.mean([0.1, 10.1]) < high <= 5.2


def test_reads_the_result_files(tmp_path):
    line = "KangarooNoFrameskip-v4 seed {}: DER preset 100k steps: {} +- 1.0 (10 games); random 0.0 +- 0.0 (10 games)"
    for seed, score in [(1, 1510.0), (2, 700.0)]:
        (tmp_path / f"rainbow_atari_der_kangaroo_seed{seed}.txt").write_text(line.format(seed, score) + "\n")
    rows = "".join(f"{step},charts/episodic_return,{step % 7}\n" for step in range(1, 151))
    (tmp_path / "ppo_atari_breakout_1m_seed2_metrics.csv").write_text("global_step,metric,value\n" + rows)
    # another file whose name the glob also matches (a replay of seed 2, say) is not a seed of its own
    (tmp_path / "ppo_atari_breakout_1m_seed2_replay_metrics.csv").write_text(
        "global_step,metric,value\n1,charts/episodic_return,99\n"
    )
    assert atari_seeds.der_runs(str(tmp_path)) == {"Kangaroo": {1: 1510.0, 2: 700.0}}
    last = atari_seeds.last_games_runs(str(tmp_path), "ppo_atari_breakout_1m")
    assert last == {2: pytest.approx(np.mean([step % 7 for step in range(51, 151)]))}
    text = atari_seeds.seeds_line("Kangaroo", {1: 1510.0, 2: 700.0}, 779)
    seeds = "Kangaroo: 2 seeds (seed 1 1,510.0, seed 2 700.0)"
    assert text == f"{seeds}: mean 1,105.0, min-max 700.0-1,510.0; published 779"


def test_a_cut_run_is_found_in_the_frozen_copy_whose_benchmark_resumes(tmp_path):
    import atari_seeds_run

    label, command, files, folders = atari_seeds_run.planned([2], ["der"], ["Krull"])[0]
    copies = []
    for name, script in [("old", "python ../../rainbow_atari.py --preset der"), ("new", "... --resume ...")]:
        copy = tmp_path / f"frozen-{name}"
        (copy / "benchmarks").mkdir(parents=True)
        (copy / command[1]).write_text(script)
        run = copy / "benchmarks" / "out" / "runs" / "KrullNoFrameskip-v4__rainbow_der__2__1796573050"
        run.mkdir(parents=True)
        (run / "checkpoint.pt").write_bytes(b"")
        copies.append(str(copy))
    # the old copy's benchmark would start the run again: only the new copy's cut run is resumed
    assert atari_seeds_run.cut_run(copies, command, folders) == (copies[1], str(run))
    other_seed = atari_seeds_run.planned([3], ["der"], ["Krull"])[0]
    assert atari_seeds_run.cut_run(copies, other_seed[1], other_seed[3]) is None
    (run / "rainbow_der.pt").write_bytes(b"")  # the model the benchmark saves at its end: the run was not cut
    assert atari_seeds_run.cut_run(copies, command, folders) is None
    (run / "rainbow_der.pt").unlink()
    (run / "checkpoint.pt").unlink()  # cut before its first checkpoint: started again
    assert atari_seeds_run.cut_run(copies, command, folders) is None


def test_metrics_match_tells_a_replay_of_the_same_algorithm_from_another(tmp_path, monkeypatch, capsys):
    """benchmarks/metrics_match.py, the check that an old seed's code and today's run the same algorithm."""
    old = "global_step,metric,value\n"
    old += "".join(
        f"{s},charts/episodic_return,{s % 7}.0\n{s},losses/td_loss,{1 / s!r}\n" for s in range(100, 1100, 100)
    )
    (tmp_path / "old.csv").write_text(old + "1100,charts/episodic_return,3.0\n")

    def verdict(new: str) -> str:  # its command line, run in this process (a subprocess per call costs seconds)
        (tmp_path / "new.csv").write_text(new)
        monkeypatch.setattr(sys, "argv", ["metrics_match.py", str(tmp_path / "old.csv"), str(tmp_path / "new.csv")])
        with pytest.raises(SystemExit) as status:
            metrics_match.main()
        last = capsys.readouterr().out.splitlines()[-2]  # before the load average line
        assert status.value.code == {"SAME": 0, "DIFFERENT": 1, "nothing": 2}[last.split()[0].rstrip(":")], last
        return last

    # a replay cut at step 600: compared up to there; a rate (charts/SPS) and a last-bit difference do not count
    replay = "\n".join(old.splitlines()[:13]) + "\n600,charts/SPS,123.0\n"
    assert verdict(replay).startswith("SAME")
    assert verdict(replay.replace("0.002\n", "0.0020000000000000005\n")).startswith("SAME")
    assert verdict(replay.replace("500,charts/episodic_return,3.0", "500,charts/episodic_return,4.0")) == "DIFFERENT"
    assert verdict(replay.replace("0.002\n", "0.0021\n")) == "DIFFERENT"  # a loss off by 5%
    assert verdict(replay.replace("500,losses/td_loss", "500,losses/q_values")).startswith("DIFFERENT")
    # the order of the log calls within a step does not count; a half-written last line (a killed run) is dropped
    swapped = replay.replace("300,charts/episodic_return,6.0\n300,losses/td_loss,0.0033333333333333335\n", "")
    swapped = swapped.replace(
        "400,", "300,losses/td_loss,0.0033333333333333335\n300,charts/episodic_return,6.0\n400,", 1
    )
    assert swapped != replay and verdict(swapped).startswith("SAME")
    assert verdict(replay + "700,losses/td_lo").startswith("SAME")
    # a replay longer than the old run: compared up to the old run's end
    assert verdict(old + "1100,charts/episodic_return,3.0\n1200,charts/episodic_return,5.0\n").startswith("SAME")
    # a NaN logged by both runs is equal; by one only, not
    (tmp_path / "old.csv").write_text(replay.replace("0.002\n", "nan\n"))
    assert verdict(replay.replace("0.002\n", "nan\n")).startswith("SAME")
    assert verdict(replay) == "DIFFERENT"
    assert verdict("global_step,metric,value\n").startswith("nothing to compare")  # no rows: exit status 2
