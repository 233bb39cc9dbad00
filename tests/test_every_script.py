"""The tests every script has, written once and run over the six (the algorithm tests stay in test_<script>.py)."""

import csv
import dataclasses
import glob
import importlib
import os
import re

import pytest
import torch
from conftest import ROOT, TINY_RUNS

SCRIPTS = list(TINY_RUNS)
# what a same-seed run also exercises in some scripts, and the loss it must have logged
SAME_SEED = {
    "dqn_atari": (dict(num_envs=2, loss="huber"), "losses/td_loss"),  # --num-envs > 1 and the Huber loss
    "rainbow_atari": (dict(num_envs=2, total_timesteps=240), "losses/cross_entropy"),  # --num-envs > 1
}


def train(name, **flags):
    module = importlib.import_module(name)
    return module.train(module.Args(**{**TINY_RUNS[name], **flags}))


def read_metrics(run_dir, skip=("charts/SPS",)):
    with open(os.path.join(run_dir, "metrics.csv")) as f:
        return [row for row in csv.DictReader(f) if row["metric"] not in skip]


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_flag_has_a_help_line(name):
    source = open(os.path.join(ROOT, f"{name}.py")).read()
    for field in dataclasses.fields(importlib.import_module(name).Args):
        after = source.split(f"    {field.name}: ", 1)[1].splitlines()[1].strip()
        assert after.startswith('"""') and len(after) > 10, f"{name}.py: --{field.name} has no help text"


@pytest.mark.parametrize("name", SCRIPTS)
def test_same_seed_same_metrics_other_seed_other_metrics(in_tmp, name):
    flags, loss = SAME_SEED.get(name, ({}, None))
    first, again, other = (read_metrics(train(name, **flags, seed=seed)) for seed in (7, 7, 8))
    assert loss is None or any(row["metric"] == loss for row in first)
    assert first == again
    assert first != other


@pytest.mark.parametrize("name", SCRIPTS)
def test_track_writes_an_offline_wandb_run(in_tmp, monkeypatch, name):
    monkeypatch.setenv("WANDB_MODE", "offline")
    run_dir = train(name, track=True, wandb_project_name=f"{name}-test")
    assert glob.glob(os.path.join(run_dir, "wandb", "offline-run-*", "run-*.wandb"))


# ---------------------------------------------------------------- checkpoints that cannot be evaluated

BREAKOUT = {"env_id": "BreakoutNoFrameskip-v4", "num_actions": 4}
CARTPOLE = {"env_id": "CartPole-v1", "obs_dim": 4, "action_dim": 2, "discrete": True, "normalize_obs": False}


def rainbow_mismatches(rb):
    """Weights of a 6-action network said to have 4 actions; a network config the weights do not fit; a config
    with a key the network does not take."""
    config = {name: getattr(rb.Args(), name) for name in rb.NETWORK_FLAGS}
    model = rb.RainbowNetwork(4, 6, **config).state_dict()
    configs = [(config, 4), ({**config, "dueling": False}, 6), ({**config, "colour": 1}, 6)]
    return [{**BREAKOUT, "model": model, "network": c, "num_actions": n} for c, n in configs]


# what differs between the scripts: checkpoints with the keys load_checkpoint expects whose model does not fit
MISMATCHED = {
    "reinforce": lambda m: [{**CARTPOLE, "model": m.Agent(4, 3, True).state_dict()}],  # 3 actions saved, 2 said
    "natural_pg": lambda m: [{**CARTPOLE, "model": m.Agent(4, 3, True).state_dict()}],
    "trpo": lambda m: [{**CARTPOLE, "model": m.Agent(4, 3, True).state_dict()}],
    "ppo_atari": lambda m: [{**BREAKOUT, "model": m.Agent(6).state_dict()}],  # 6 actions saved, 4 said
    "dqn_atari": lambda m: [{**BREAKOUT, "model": m.QNetwork(4, 6).state_dict()}],
    "rainbow_atari": rainbow_mismatches,
}


@pytest.mark.parametrize("name", SCRIPTS)
def test_corrupt_foreign_and_mismatched_checkpoints(tmp_path, name):
    """--eval-checkpoint of a file that is not this script's model stops in one line that says which and why."""
    module = importlib.import_module(name)
    garbage, missing, code, foreign = (tmp_path / f for f in ("garbage.pt", "missing.pt", "code.pt", "foreign.pt"))
    garbage.write_bytes(b"not a checkpoint at all")
    torch.save({"model": {}, "evil": module.Args()}, code)  # loading it needs unpickling code: refused
    torch.save({"q_net": {}}, foreign)
    cases = [(path, f"cannot read checkpoint {re.escape(str(path))}: ") for path in (garbage, missing, code)]
    cases.append((foreign, f"is not a {name}.py checkpoint"))
    for i, checkpoint in enumerate(MISMATCHED[name](module)):
        torch.save(checkpoint, tmp_path / f"mismatched-{i}.pt")
        cases.append((tmp_path / f"mismatched-{i}.pt", f"does not fit {name}.py's network"))
    for path, message in cases:
        with pytest.raises(SystemExit, match=message) as e:
            module.load_checkpoint(str(path), torch.device("cpu"))
        assert str(e.value).startswith("error: ") and "\n" not in str(e.value), path.name
