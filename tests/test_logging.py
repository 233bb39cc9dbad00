"""What is logged is what happened: wandb and TensorBoard hold every point of metrics.csv; evaluation folders;
errors that fit the mistake; the device named first. For all six scripts where the feature is shared."""

import csv
import glob
import importlib
import json
import os
import shutil
import struct
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import ROOT, TINY_RUNS, train

SCRIPTS = list(TINY_RUNS)


def metrics(run_dir):
    with open(os.path.join(run_dir, "metrics.csv")) as f:
        return [(int(r["global_step"]), r["metric"], float(r["value"])) for r in csv.DictReader(f)]


def wandb_records(path):
    """The records of a .wandb file: a LevelDB-style log of protobuf records in 32 KiB blocks of chunks, each
    chunk with a 7-byte header (crc32, length, type: 1 full, 2 first, 3 middle, 4 last)."""
    from wandb.proto import wandb_internal_pb2

    data, pos, block, record, records = open(path, "rb").read(), 7, 32768, b"", []
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        record, pos = record + data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind in (1, 4):  # a full record, or the last chunk of one
            records.append(wandb_internal_pb2.Record())
            records[-1].ParseFromString(record)
            record = b""
        elif kind == 0:
            break
    return records


def wandb_history(run_dir):
    """The history rows of the offline wandb run, once its service has written them all (its exit record: under
    pytest, wandb.finish() can return before the service has flushed the file)."""
    (path,) = glob.glob(os.path.join(run_dir, "wandb", "offline-run-*", "run-*.wandb"))
    deadline = time.time() + 60
    records = wandb_records(path)
    while not any(r.WhichOneof("record_type") == "exit" for r in records):
        assert time.time() < deadline, "the offline run was never closed"
        time.sleep(0.2)
        records = wandb_records(path)
    history = [r.history for r in records if r.WhichOneof("record_type") == "history"]
    return [{item.nested_key[0]: json.loads(item.value_json) for item in h.item} for h in history]


# ---------------------------------------------------------------- wandb and TensorBoard hold every point


def test_wandb_gets_every_point_of_metrics_csv(in_tmp, monkeypatch):
    """Three evaluation games end at one global_step, and training episodes of several envs often do: logged with
    step=global_step, wandb merged them and kept the last. With global_step as a logged x axis, none is lost."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    run_dir = train("reinforce", num_envs=4, eval_episodes=3, track=True)
    rows = metrics(run_dir)
    episodes = [(s, m, v) for s, m, v in rows if m in ("charts/episodic_return", "eval/episodic_return")]
    steps = [s for s, m, _ in episodes]
    assert len(steps) > len(set(steps)), "the run must have several points at one step to show anything"
    own = ("_runtime", "_step", "_timestamp", "global_step")  # wandb's bookkeeping, and the x axis itself
    logged = [
        (int(r["global_step"]), m, float(v)) for r in wandb_history(run_dir) for m, v in r.items() if m not in own
    ]
    assert sorted(logged) == sorted(rows)


def test_track_with_capture_video_logs_the_evaluation_videos(in_tmp, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    run_dir = train("reinforce", eval_episodes=2, capture_video=True, track=True)
    assert (
        len(glob.glob(os.path.join(run_dir, "wandb", "offline-run-*", "files", "media", "videos", "*", "*.mp4"))) == 2
    )


def test_tensorboard_holds_the_scalars_of_metrics_csv(in_tmp):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = train("reinforce", eval_episodes=2, tensorboard=True)
    events = EventAccumulator(run_dir)
    events.Reload()
    rows = metrics(run_dir)
    assert set(events.Tags()["scalars"]) == {m for _, m, _ in rows}
    for tag in events.Tags()["scalars"]:
        expected = [(s, v) for s, m, v in rows if m == tag]
        assert [e.step for e in events.Scalars(tag)] == [s for s, _ in expected], tag
        np.testing.assert_allclose([e.value for e in events.Scalars(tag)], [v for _, v in expected], rtol=1e-6)


def test_tensorboard_on_resume_drops_the_events_after_the_checkpoint(in_tmp, monkeypatch):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    trpo = importlib.import_module("trpo")
    save = trpo.Run.save

    def keep_each(run, step, state):
        save(run, step, state)
        shutil.copy(os.path.join(run.dir, "checkpoint.pt"), os.path.join(run.dir, f"checkpoint-{step}.pt"))

    monkeypatch.setattr(trpo.Run, "save", keep_each)
    run_dir = train("trpo", tensorboard=True, checkpoint_every=384, total_timesteps=512)
    # as if killed at step 512 before its last checkpoint: the one of step 384 is the last on disk
    shutil.copy(os.path.join(run_dir, "checkpoint-384.pt"), os.path.join(run_dir, "checkpoint.pt"))
    with open(os.path.join(run_dir, "args.json")) as f:
        saved = json.load(f)
    trpo.train(trpo.Args(**{**saved, "resume": run_dir, "total_timesteps": 768}))
    events = EventAccumulator(run_dir)
    events.Reload()
    steps = [e.step for e in events.Scalars("losses/value_loss")]
    assert steps == [128, 256, 384, 512, 640, 768], "512 once: the first run's, logged after the checkpoint, is gone"


# ---------------------------------------------------------------- evaluation you can keep


def evaluate_cli(name, checkpoint, *flags):
    cmd = [sys.executable, os.path.join(ROOT, f"{name}.py"), "--eval-checkpoint", checkpoint, *flags]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


def test_eval_checkpoint_writes_a_new_folder_each_time(in_tmp):
    run_dir = train("reinforce", save_model=True)
    model = os.path.join(run_dir, "reinforce.pt")
    for _ in range(2):
        out = evaluate_cli("reinforce", model, "--eval-episodes", "3", "--capture-video")
        assert out.returncode == 0, out.stderr
    folders = sorted(glob.glob(os.path.join(run_dir, "eval-*")))
    assert len(folders) == 2
    for folder in folders:
        with open(os.path.join(folder, "scores.json")) as f:
            record = json.load(f)
        scores = record["returns"]
        assert len(scores) == 3 and len(glob.glob(os.path.join(folder, "videos", "*.mp4"))) == 3
        assert record["mean"] == pytest.approx(np.mean(scores)) and record["std"] == pytest.approx(np.std(scores))
        assert record["args"]["env_id"] == "CartPole-v1" and record["args"]["eval_episodes"] == 3
        assert not record["args"]["eval_deterministic"]
    assert not os.path.exists(os.path.join(run_dir, "videos")), "training-time videos stay where they were"


def test_eval_env_id_overrides_the_checkpoints_and_must_fit(in_tmp):
    run_dir = train("reinforce", save_model=True)
    model = os.path.join(run_dir, "reinforce.pt")
    # CartPole-v0: the same spaces, a 200-step time limit
    out = evaluate_cli("reinforce", model, "--eval-episodes", "2", "--env-id", "CartPole-v0", "--eval-deterministic")
    assert out.returncode == 0, out.stderr
    assert "CartPole-v0: mean return" in out.stdout
    (folder,) = glob.glob(os.path.join(run_dir, "eval-*"))
    with open(os.path.join(folder, "scores.json")) as f:
        record = json.load(f)
    assert record["args"]["env_id"] == "CartPole-v0" and record["args"]["eval_deterministic"]
    assert max(record["returns"]) <= 200
    out = evaluate_cli("reinforce", model, "--env-id", "Acrobot-v1")
    assert out.returncode == 1 and out.stderr.strip() == (
        "error: Acrobot-v1 has observations of size 6 and 3 discrete actions; the network takes 4 and 2 discrete ones"
    )
    assert len(glob.glob(os.path.join(run_dir, "eval-*"))) == 1, "no folder for an evaluation that cannot run"


def test_atari_eval_env_id_override_checks_the_action_count(in_tmp):
    run_dir = train("ppo_atari", save_model=True)
    out = evaluate_cli("ppo_atari", os.path.join(run_dir, "ppo_atari.pt"), "--env-id", "PongNoFrameskip-v4")
    # the last line: ALE prints its banner on stderr first
    assert out.returncode == 1 and out.stderr.strip().splitlines()[-1] == (
        "error: PongNoFrameskip-v4 has 6 actions; the network has 4 (another game's)"
    )


def test_ppo_eval_deterministic_plays_the_argmax(monkeypatch):
    import torch

    ppo = importlib.import_module("ppo_atari")
    agent = ppo.Agent(4)
    with torch.no_grad():  # FIRE (action 1) most likely everywhere: the ball is served, the paddle never moves
        agent.actor.weight.zero_()
        agent.actor.bias.copy_(torch.tensor([0.0, 5.0, 0.0, 0.0]))

    def no_sampling(logits):
        raise AssertionError("sampled although deterministic")

    monkeypatch.setattr(ppo, "sample_actions", no_sampling)
    args = ppo.Args(env_id="BreakoutNoFrameskip-v4", eval_episodes=1, eval_deterministic=True)
    scores = ppo.evaluate(agent, args, torch.device("cpu"))
    assert len(scores) == 1


@pytest.mark.parametrize("name", ["reinforce", "natural_pg", "trpo"])
def test_eval_deterministic_takes_the_most_likely_action(name):
    import torch

    module = importlib.import_module(name)
    for discrete in (True, False):
        agent = module.Agent(3, 2, discrete)
        with torch.no_grad():
            for p in agent.actor.parameters():
                p.normal_()
            obs = torch.randn(64, 3)
            out = agent.actor(obs)
            mode = out.argmax(-1) if discrete else out
            assert torch.equal(agent.sample(obs, deterministic=True), mode)
            assert not torch.equal(agent.sample(obs), mode)  # sampled: 64 draws differ from the mode somewhere


def test_training_evaluation_prints_its_mean_line(in_tmp, capsys):
    train("reinforce", eval_episodes=2)
    assert "CartPole-v1: mean return" in capsys.readouterr().out


def test_an_evaluation_prints_a_line_per_game(in_tmp, capsys):
    train("reinforce", eval_episodes=3)
    lines = capsys.readouterr().out.splitlines()
    games = [line for line in lines if line.startswith("eval episode ")]
    assert [line.split(":")[0] for line in games] == ["eval episode 1/3", "eval episode 2/3", "eval episode 3/3"]
    assert lines[-1].startswith("CartPole-v1: mean return") and lines[-1].endswith(" over 3 episodes")


# ---------------------------------------------------------------- errors that fit the mistake


def test_track_online_without_credentials_fails_before_the_run_folder(in_tmp):
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(HOME=str(in_tmp), NETRC=str(in_tmp / "no-netrc"), WANDB_CONFIG_DIR=str(in_tmp / "wandb-config"))
    cmd = [sys.executable, os.path.join(ROOT, "reinforce.py"), "--track", "--total-timesteps", "300"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines()[-1] == (
        "error: --track needs a wandb login: run `wandb login`, set WANDB_API_KEY, or WANDB_MODE=offline"
    )
    assert "Traceback" not in out.stderr and not os.path.exists("runs")


def test_no_sdl_noise_when_recording_video(in_tmp):
    cmd = [sys.executable, os.path.join(ROOT, "reinforce.py"), "--total-timesteps", "300", "--eval-episodes", "1"]
    env = {k: v for k, v in os.environ.items() if k not in ("XDG_RUNTIME_DIR", "SDL_VIDEODRIVER", "DISPLAY")}
    out = subprocess.run([*cmd, "--capture-video"], capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0 and "XDG_RUNTIME_DIR" not in out.stderr, out.stderr


@pytest.mark.parametrize("name", SCRIPTS)
def test_the_first_line_of_a_run_names_the_device(in_tmp, capsys, name):
    train(name, cuda=False)
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("device: cpu (") and first.endswith(" kernels)"), first
