"""dqn_atari.py: the replay memory against the env's own observations, the math against naive
references, and the user's view (the memory check is in test_families.py)."""

import functools
import glob
import os

import numpy as np
import pytest
import torch
from ale_py.vector_env import AtariVectorEnv
from conftest import TINY_RUNS, assert_fails_before_training, read_metrics

import dqn_atari as dqn

TINY = TINY_RUNS["dqn_atari"]


# ---------------------------------------------------------------- the replay memory against the env


def play_into_memory(monkeypatch, num_envs=2, slots_per_env=150, steps=1000):
    """Random actions on Breakout with a 700-frame time limit (games end often, by game over and by
    truncation), stored in a small memory that wraps around several times. Beside it, a plain record of
    what the env returned: record[(env, slot)] = the observation written there, its game, and the step
    taken from it."""
    monkeypatch.setattr(dqn, "AtariVectorEnv", functools.partial(AtariVectorEnv, max_num_frames_per_episode=700))
    envs = dqn.make_envs("BreakoutNoFrameskip-v4", num_envs)
    memory = dqn.ReplayMemory(
        num_envs * slots_per_env, num_envs, envs.single_observation_space.shape, torch.device("cpu")
    )
    obs, info = envs.reset(seed=0)
    memory.reset(obs)
    lives, game = info["lives"], np.arange(num_envs)
    record = {(e, 0): dict(obs=obs[e], game=game[e]) for e in range(num_envs)}
    rng = np.random.default_rng(0)
    seen = dict(life_losses=0, game_over_terminations=0, truncations=0)

    def check_current_slots():  # each env's newest slot rebuilds the observation the env returned
        envs_t = torch.arange(num_envs)
        rebuilt = memory.transitions(envs_t, memory.cur)[0].numpy()
        for e in range(num_envs):
            np.testing.assert_array_equal(rebuilt[e], record[(e, int(memory.cur[e]))]["obs"])

    for _ in range(steps):
        actions = rng.integers(0, 4, num_envs)
        next_obs, reward, terminated, truncated, info = envs.step(actions)
        game_over = dqn.is_game_over(terminated, truncated, info["lives"], lives)
        lives = info["lives"]
        before = memory.cur.clone()
        memory.add(actions, reward, terminated, next_obs, game_over, info.get("final_obs"))
        for e in range(num_envs):
            step = dict(action=actions[e], reward=np.sign(reward[e]), terminated=terminated[e], truncated=truncated[e])
            record[(e, int(before[e]))].update(step)
            if game_over[e]:
                record[(e, (int(before[e]) + 1) % slots_per_env)] = dict(obs=info["final_obs"][e], game=game[e])
                game[e] = game.max() + 1
            record[(e, int(memory.cur[e]))] = dict(obs=next_obs[e], game=game[e])
        seen["life_losses"] += int((terminated & ~game_over).sum())
        seen["game_over_terminations"] += int((terminated & game_over).sum())
        seen["truncations"] += int(truncated.sum())
        check_current_slots()
    envs.close()
    return memory, record, seen


@pytest.fixture(scope="module")
def played():
    monkeypatch = pytest.MonkeyPatch()
    try:
        yield play_into_memory(monkeypatch)
    finally:
        monkeypatch.undo()


def all_valid_slots(memory):
    envs, slots = torch.meshgrid(torch.arange(len(memory.env_ids)), torch.arange(memory.slots), indexing="ij")
    envs, slots = envs.reshape(-1), slots.reshape(-1)
    valid = memory.valid(envs, slots)
    return envs[valid], slots[valid], int((~valid).sum())


def test_played_data_covers_life_losses_game_ends_truncations_and_wraps(played):
    memory, record, seen = played
    assert seen["life_losses"] >= 20 and seen["game_over_terminations"] >= 3 and seen["truncations"] >= 3
    assert 1000 > 3 * memory.slots  # each env's ring wrapped around more than 3 times


def test_every_sampleable_transition_is_what_the_env_returned(played):
    """s and s' rebuilt from single frames equal, bit for bit, the env's observations (zero frames before a
    game's start, the continuing stack after a life loss, the final observation at a game's end), and no
    transition spans two games."""
    memory, record, _ = played
    envs, slots, invalid = all_valid_slots(memory)
    obs, actions, rewards, terminations, next_obs = memory.transitions(envs, slots)
    for k, (e, i) in enumerate(zip(envs.tolist(), slots.tolist(), strict=True)):
        here, after = record[(e, i)], record[(e, (i + 1) % memory.slots)]
        assert here["game"] == after["game"], "a transition crosses from one game into the next"
        np.testing.assert_array_equal(obs[k].numpy(), here["obs"])
        np.testing.assert_array_equal(next_obs[k].numpy(), after["obs"])
        assert (actions[k], rewards[k], terminations[k]) == (here["action"], here["reward"], here["terminated"])
    # what is left out: each env's newest slot and the 3 oldest (history overwritten), and each game's end
    games_in_memory = len({(e, r["game"]) for (e, _), r in record.items()})
    assert invalid <= len(memory.env_ids) * 4 + games_in_memory
    assert len(envs) >= 0.9 * memory.slots * len(memory.env_ids)


def test_samples_are_valid_and_cover_the_memory(played):
    memory, _, _ = played
    torch.manual_seed(0)
    envs, slots = memory.sample_slots(20000)
    assert memory.valid(envs, slots).all()
    valid_envs, valid_slots, _ = all_valid_slots(memory)
    drawn = set(zip(envs.tolist(), slots.tolist(), strict=True))
    assert drawn == set(zip(valid_envs.tolist(), valid_slots.tolist(), strict=True))  # uniform draws reach all


def test_game_ends_are_stored_as_the_env_defines_them(played):
    """A termination (life loss or the last life) is stored as terminated: no bootstrap; a truncation is not,
    and its s' is the final observation of the cut game, from info["final_obs"]."""
    memory, record, seen = played
    envs, slots, _ = all_valid_slots(memory)
    terminations = memory.transitions(envs, slots)[3]
    truncated = [record[(e, i)]["truncated"] for e, i in zip(envs.tolist(), slots.tolist(), strict=True)]
    terminated = [record[(e, i)]["terminated"] for e, i in zip(envs.tolist(), slots.tolist(), strict=True)]
    assert sum(truncated) >= 1 and sum(terminated) >= 5
    np.testing.assert_array_equal(terminations.numpy(), np.array(terminated, dtype=np.float32))


def test_td_target_through_the_memory_matches_a_naive_loop(played):
    """y = r + gamma (1 - terminated) max_a' Q_theta'(s', a'), computed one transition at a time from the
    env's own observations: terminations not bootstrapped, truncations bootstrapped from the final obs."""
    memory, record, _ = played
    envs, slots, _ = all_valid_slots(memory)
    keys = list(zip(envs.tolist(), slots.tolist(), strict=True))
    pick = [k for k in keys if record[k]["terminated"] or record[k]["truncated"]] + keys[:20]
    envs_p, slots_p = torch.tensor([k[0] for k in pick]), torch.tensor([k[1] for k in pick])
    torch.manual_seed(0)
    target_net = dqn.QNetwork(4, 4)
    _, _, rewards, terminations, next_obs = memory.transitions(envs_p, slots_p)
    with torch.no_grad():
        got = dqn.td_target(rewards, terminations, target_net(next_obs), 0.9)
        for k, (e, i) in enumerate(pick):
            r = record[(e, i)]
            s_next = record[(e, (i + 1) % memory.slots)]["obs"]  # the final obs where the game ended
            y = float(r["reward"])
            if not r["terminated"]:
                y += 0.9 * max(target_net(torch.from_numpy(s_next)[None])[0].tolist())
            assert got[k].item() == pytest.approx(y, rel=1e-5, abs=1e-5)


def test_td_target_matches_naive_loop_on_random_numbers():
    rng = np.random.default_rng(1)
    rewards, terminations = rng.normal(size=64), (rng.random(64) < 0.3).astype(np.float64)
    next_q = rng.normal(size=(64, 6))
    got = dqn.td_target(*(torch.tensor(x) for x in (rewards, terminations, next_q)), 0.99).numpy()
    expected = [r + (0.0 if t else 0.99 * max(q)) for r, t, q in zip(rewards, terminations, next_q, strict=True)]
    np.testing.assert_allclose(got, expected)


def test_bytes_per_transition():
    memory = dqn.ReplayMemory(1000, 2, (4, 84, 84), torch.device("cpu"))
    per_slot = [t for t in vars(memory).values() if isinstance(t, torch.Tensor) and t.shape[:2] == (2, 500)]
    total = sum(t.numel() * t.element_size() for t in per_slot)
    assert total / 1000 == dqn.ReplayMemory.bytes_per_slot((4, 84, 84)) == 84 * 84 + 5  # 7,061 bytes
    assert total / 1000 <= 7200


# ---------------------------------------------------------------- the other math


def test_linear_schedule():
    values = [dqn.linear_schedule(1.0, 0.01, 100, t) for t in (0, 50, 100, 1000)]
    np.testing.assert_allclose(values, [1.0, 0.505, 0.01, 0.01])
    # upwards too (--start-e below --end-e): the old max(end, ...) clamp sat at end from the first step
    values = [dqn.linear_schedule(0.1, 0.5, 100, t) for t in (0, 50, 100, 1000)]
    np.testing.assert_allclose(values, [0.1, 0.3, 0.5, 0.5])


def test_times_due_counts_the_multiples_passed():
    # one env: due at the multiples; 3 envs stepping 3 at a time: passing 4 and 8 at once counts both
    assert [dqn.times_due(4, t, 1) for t in range(1, 10)] == [0, 0, 0, 1, 0, 0, 0, 1, 0]
    assert [dqn.times_due(4, t, 3) for t in (3, 6, 9, 12)] == [0, 1, 1, 1]
    assert dqn.times_due(4, 8, 8) == 2


class CountingNet(dqn.QNetwork):
    calls = 0

    def forward(self, obs):
        CountingNet.calls += 1
        return torch.tensor([[0.0, 0.0, 1.0, 0.0]]).expand(len(obs), 4)  # action 2 is greedy


def test_epsilon_greedy():
    net, obs, rng = CountingNet(4, 4), np.zeros((5000, 4, 84, 84), dtype=np.uint8), np.random.default_rng(0)
    assert (dqn.epsilon_greedy(net, obs, 0.0, rng, "cpu") == 2).all()
    actions = dqn.epsilon_greedy(net, obs, 0.2, rng, "cpu")
    # greedy with probability 1 - eps, uniform otherwise: P(a = 2) = 0.8 + 0.2 / 4
    assert np.mean(actions == 2) == pytest.approx(0.85, abs=0.02)
    assert np.mean(actions == 0) == pytest.approx(0.05, abs=0.01)
    CountingNet.calls = 0
    actions = dqn.epsilon_greedy(net, obs[:8], 1.0, rng, "cpu")
    assert CountingNet.calls == 0 and set(actions) <= {0, 1, 2, 3}  # all explore: no forward pass


def test_network_shapes():
    q = dqn.QNetwork(4, 6)(torch.randint(0, 256, (3, 4, 84, 84), dtype=torch.uint8))
    assert q.shape == (3, 6)


# ---------------------------------------------------------------- refusing what cannot run


BAD = [
    (dict(buffer_size=0), "--buffer-size must be positive"),
    (dict(batch_size=0), "--batch-size must be positive"),
    (dict(buffer_size=16), "must hold --batch-size"),
    (dict(train_frequency=0), "--train-frequency must be positive"),
    (dict(target_network_frequency=0), "--target-network-frequency must be positive"),
    (dict(learning_starts=-1), "--learning-starts must be 0 or more"),
    (dict(exploration_fraction=0.0), "--exploration-fraction"),
    (dict(end_e=1.5), "--end-e must be between 0 and 1, got 1.5"),
    (dict(eval_epsilon=-0.1), "--eval-epsilon must be between 0 and 1, got -0.1"),
    (dict(env_id="Pendulum-v1"), "continuous actions"),
]
if not torch.cuda.is_available():
    BAD.append((dict(buffer_device="cuda"), "--buffer-device cuda needs a GPU"))


@pytest.mark.parametrize("overrides,message", BAD)
def test_bad_input_fails_before_training(in_tmp, overrides, message):
    assert_fails_before_training("dqn_atari", overrides, message)


# ---------------------------------------------------------------- end to end


def test_train_evaluate_and_video(in_tmp):
    # epsilon 1 throughout: an untrained greedy policy may never press FIRE, and games would not end
    flags = {"eval_episodes": 1, "capture_video": True, "end_e": 1.0}
    run_dir = dqn.train(dqn.Args(**{**TINY, **flags}))
    metrics = {row["metric"] for row in read_metrics(run_dir, skip=())}
    for name in ["charts/episodic_return", "charts/episodic_length", "charts/SPS", "charts/epsilon"]:
        assert name in metrics
    for name in ["losses/td_loss", "losses/q_values", "eval/episodic_return"]:
        assert name in metrics
    assert glob.glob(os.path.join(run_dir, "videos", "*.mp4"))
    # Breakout scores are whole non-negative numbers: a raw game score, not a sum of clipped signs
    returns = [float(r["value"]) for r in read_metrics(run_dir) if r["metric"] == "charts/episodic_return"]
    assert returns and all(r >= 0 and r == int(r) for r in returns)
    assert {float(r["value"]) for r in read_metrics(run_dir) if r["metric"] == "charts/epsilon"} == {1.0}
