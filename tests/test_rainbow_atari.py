"""rainbow_atari.py: the replay memory's n-step transitions against the env's own observations, the sum tree, the
six components' math against naive references written here, and the user's view (switches, presets, errors)."""

import functools
import glob
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from ale_py.vector_env import AtariVectorEnv
from conftest import ROOT, TINY_RUNS, assert_fails_before_training, read_metrics

import rainbow_atari as rb

# a few hundred steps, one update per step from step 100 on, DER's small network: seconds per run
TINY = TINY_RUNS["rainbow_atari"]
N_STEP, GAMMA = 4, 0.9


# ---------------------------------------------------------------- the replay memory against the env


def play_into_memory(monkeypatch, num_envs=2, slots_per_env=150, steps=1000):
    """Random actions on Breakout with a 700-frame time limit (games end by game over and by truncation), stored in
    a small memory that wraps around several times. Beside it a plain record of what the env returned:
    record[(env, slot)] = the observation written there, its game, whether it is a game's final observation, and
    the step taken from it."""
    monkeypatch.setattr(rb, "AtariVectorEnv", functools.partial(AtariVectorEnv, max_num_frames_per_episode=700))
    envs = rb.make_envs("BreakoutNoFrameskip-v4", num_envs)
    shape = envs.single_observation_space.shape
    memory = rb.ReplayMemory(num_envs * slots_per_env, num_envs, shape, torch.device("cpu"), N_STEP, GAMMA, 0.5)
    obs, info = envs.reset(seed=0)
    memory.reset(obs)
    lives, game = info["lives"], np.arange(num_envs)
    record = {(e, 0): dict(obs=obs[e], game=game[e], final=False) for e in range(num_envs)}
    rng = np.random.default_rng(0)
    seen = dict(life_losses=0, game_over_terminations=0, truncations=0)
    for _ in range(steps):
        actions = rng.integers(0, 4, num_envs)
        next_obs, reward, terminated, truncated, info = envs.step(actions)
        game_over = rb.is_game_over(terminated, truncated, info["lives"], lives)
        lives = info["lives"]
        before = memory.cur.clone()
        memory.add(actions, reward, terminated, next_obs, game_over, info.get("final_obs"))
        for e in range(num_envs):
            step = dict(action=actions[e], reward=np.sign(reward[e]), terminated=terminated[e])
            record[(e, int(before[e]))].update(step)
            if game_over[e]:
                final = dict(obs=info["final_obs"][e], game=game[e], final=True)
                record[(e, (int(before[e]) + 1) % slots_per_env)] = final
                game[e] = game.max() + 1
            record[(e, int(memory.cur[e]))] = dict(obs=next_obs[e], game=game[e], final=False)
        # each env's newest slot rebuilds the observation the env returned
        rebuilt = memory.stack_at(memory.env_ids, memory.cur).numpy()
        np.testing.assert_array_equal(rebuilt, next_obs)
        seen["life_losses"] += int((terminated & ~game_over).sum())
        seen["game_over_terminations"] += int((terminated & game_over).sum())
        seen["truncations"] += int(truncated.sum())
    envs.close()
    return memory, record, seen


@pytest.fixture(scope="module")
def played():
    monkeypatch = pytest.MonkeyPatch()
    try:
        yield play_into_memory(monkeypatch)
    finally:
        monkeypatch.undo()


def all_slots(memory):
    envs, slots = torch.meshgrid(torch.arange(len(memory.env_ids)), torch.arange(memory.slots), indexing="ij")
    return envs.reshape(-1), slots.reshape(-1)


def valid_slots(memory):
    envs, slots = all_slots(memory)
    valid = memory.valid(envs, slots)
    return envs[valid], slots[valid]


def naive_n_step(record, e, t, slots):
    """The lecture's n-step target, one step at a time from the record: sum gamma^k r_{t+k} until n steps or the
    episode's end; no bootstrap after a termination, bootstrap from the final observation after a truncation."""
    ret, terminated = 0.0, False
    for k in range(N_STEP):
        step = record[(e, (t + k) % slots)]
        ret += GAMMA**k * step["reward"]
        if step["terminated"]:
            terminated = True
            break
        if record[(e, (t + k + 1) % slots)]["final"]:  # the game was cut here: s_{t+k+1} is its final observation
            break
    m = k + 1
    return ret, m, 0.0 if terminated else GAMMA**m, record[(e, (t + m) % slots)]


def test_played_data_covers_life_losses_game_ends_truncations_and_wraps(played):
    memory, record, seen = played
    assert seen["life_losses"] >= 20 and seen["game_over_terminations"] >= 3 and seen["truncations"] >= 3
    assert 1000 > 3 * memory.slots  # each env's ring wrapped around more than 3 times


def test_every_n_step_transition_matches_a_naive_loop_over_what_the_env_returned(played):
    """s_t and s_{t+m} rebuilt from single frames equal the env's observations bit for bit, the n-step return and
    discount equal the naive loop across life losses, game overs and truncations, and nothing spans two games."""
    memory, record, _ = played
    envs, slots = valid_slots(memory)
    obs, actions, returns, discounts, next_obs = memory.transitions(envs, slots)
    horizons = set()
    for k, (e, t) in enumerate(zip(envs.tolist(), slots.tolist(), strict=True)):
        ret, m, discount, after = naive_n_step(record, e, t, memory.slots)
        here = record[(e, t)]
        assert here["game"] == after["game"], "a transition crosses from one game into the next"
        np.testing.assert_array_equal(obs[k].numpy(), here["obs"])
        np.testing.assert_array_equal(next_obs[k].numpy(), after["obs"])
        assert actions[k] == here["action"]
        assert returns[k].item() == pytest.approx(ret, abs=1e-6)
        assert discounts[k].item() == pytest.approx(discount, abs=1e-6)
        horizons.add((m, discount == 0))
    # full n-step windows, windows cut by a termination and windows cut by a truncation (bootstrapped) all occur
    assert (
        (N_STEP, False) in horizons and any(d for m, d in horizons) and any(m < N_STEP and not d for m, d in horizons)
    )
    assert len(envs) >= 0.9 * memory.slots * len(memory.env_ids)


def test_invalid_slots_and_only_they_have_priority_zero(played):
    memory, _, _ = played
    envs, slots = all_slots(memory)
    priorities = memory.tree.get(envs * memory.slots + slots)
    np.testing.assert_array_equal((priorities > 0).numpy(), memory.valid(envs, slots).numpy())
    # each env's n newest slots (their n steps are not stored yet) and the game ends are left out
    assert (~memory.valid(envs, slots)).sum() >= N_STEP * len(memory.env_ids)
    assert memory.tree.total().item() == pytest.approx(priorities.sum().item())


def test_sampling_follows_the_priorities_and_never_draws_an_invalid_slot(played):
    """After random priority updates, draws through memory.sample (stratified) match P(i) = p_i^alpha / sum_k p_k^alpha
    (chi-square), and the importance weights equal (N P(i))^-beta / max_j w_j computed naively per minibatch."""
    memory, _, _ = played
    envs, slots = valid_slots(memory)
    saved = memory.tree.nodes.clone(), memory.max_priority.clone()
    try:
        torch.manual_seed(0)
        td_errors = torch.rand(len(envs)) * 3
        memory.update_priorities(envs, slots, td_errors)
        expected = (td_errors.double() + memory.eps) ** 0.5
        np.testing.assert_allclose(memory.tree.get(envs * memory.slots + slots).numpy(), expected.numpy())
        assert memory.max_priority.item() == pytest.approx(expected.max().item())
        counts = torch.zeros(len(memory.env_ids) * memory.slots)
        for _ in range(400):
            e, s, weights = memory.sample(256, beta=0.6)
            assert memory.valid(e, s).all()
            counts += torch.bincount(e * memory.slots + s, minlength=len(counts))
            p = memory.tree.get(e * memory.slots + s).numpy()
            n_valid, total = len(envs), expected.sum().item()
            naive = [(n_valid * (pi / total)) ** -0.6 for pi in p]
            np.testing.assert_allclose(weights.numpy(), np.array(naive) / max(naive), rtol=1e-9)
        flat = envs * memory.slots + slots
        frequencies = expected / expected.sum() * counts.sum().double()
        chi2 = (((counts[flat].double() - frequencies) ** 2) / frequencies).sum().item()
        df = len(flat) - 1
        assert chi2 < df + 5 * (2 * df) ** 0.5  # 5 standard deviations of a chi-square with df degrees of freedom
        assert counts.sum() == counts[flat].sum()  # no draw outside the valid slots
    finally:
        memory.tree.nodes, memory.max_priority = saved


def test_bytes_per_transition():
    memory = rb.ReplayMemory(1000, 2, (4, 84, 84), torch.device("cpu"))
    per_slot = [t for t in vars(memory).values() if isinstance(t, torch.Tensor) and t.shape[:2] == (2, 500)]
    total = sum(t.numel() * t.element_size() for t in per_slot) + memory.frames.numel() + memory.tree.nodes.numel() * 8
    assert rb.ReplayMemory.bytes_per_slot((4, 84, 84)) == 84 * 84 + 5 + 16  # 7,077 bytes
    assert total / 1000 <= 84 * 84 + 5 + 2 * 16  # the tree pads to 1,024 leaves here
    assert total / 1000 <= 7200


# ---------------------------------------------------------------- the sum tree


def test_sum_tree_totals_after_random_batch_updates_and_sampling_frequencies():
    torch.manual_seed(0)
    tree = rb.SumTree(777, torch.device("cpu"))
    priorities = torch.zeros(777, dtype=torch.float64)
    for _ in range(50):  # batches of updates, some to priority 0, against plain assignment
        index, values = torch.randperm(777)[:64], torch.rand(64, dtype=torch.float64) * (torch.rand(64) < 0.8)
        tree.set(index, values)
        priorities[index] = values
    assert tree.leaves == 1024 and tree.total().item() == pytest.approx(priorities.sum().item(), rel=1e-12)
    nodes = tree.nodes
    inner = torch.arange(1, tree.leaves)
    np.testing.assert_allclose(nodes[inner].numpy(), (nodes[2 * inner] + nodes[2 * inner + 1]).numpy(), rtol=1e-12)
    # u ~ U[0, total) finds leaf i with probability p_i / total: chi-square over 400k draws
    draws = tree.find(torch.rand(400_000, dtype=torch.float64) * tree.total())
    counts = torch.bincount(draws, minlength=777).double()
    positive = priorities > 0
    assert counts[~positive].sum() == 0 and len(counts) == 777
    expected = priorities[positive] / priorities.sum() * 400_000
    chi2 = (((counts[positive] - expected) ** 2) / expected).sum().item()
    df = int(positive.sum()) - 1
    assert chi2 < df + 5 * (2 * df) ** 0.5
    # the edges: mass 0 draws the first positive leaf, mass = total (rounding) the last positive one
    first, last = torch.nonzero(positive)[0].item(), torch.nonzero(positive)[-1].item()
    assert tree.find(torch.tensor([0.0, tree.total().item()], dtype=torch.float64)).tolist() == [first, last]


def test_importance_weights_against_their_formula():
    rng = np.random.default_rng(0)
    all_p = rng.random(500) + 0.01  # p_i^alpha of the N valid transitions
    drawn = all_p[rng.integers(500, size=32)]
    P = drawn / all_p.sum()
    naive = (500 * P) ** -0.7
    got = rb.importance_weights(torch.tensor(drawn), 0.7).numpy()
    np.testing.assert_allclose(got, naive / naive.max(), rtol=1e-12)


# ---------------------------------------------------------------- the other math


def test_n_step_return_matches_a_naive_loop_on_random_episodes():
    rng = np.random.default_rng(1)
    rewards = torch.tensor(rng.integers(-1, 2, (200, 5)), dtype=torch.int8)
    terminations = torch.tensor(rng.random((200, 5)) < 0.15)
    episode_ends = terminations | torch.tensor(rng.random((200, 5)) < 0.1)  # the others are truncations
    returns, m, terminated = rb.n_step_return(rewards, terminations, episode_ends, 0.95)
    for b in range(200):
        ret, steps, term = 0.0, 0, False
        for k in range(5):
            ret += 0.95**k * int(rewards[b, k])
            steps += 1
            if episode_ends[b, k]:
                term = bool(terminations[b, k])
                break
        assert (returns[b].item(), int(m[b]), bool(terminated[b])) == (pytest.approx(ret, abs=1e-6), steps, term)
    assert 0 < int((m < 5).sum()) < 200


def naive_projection(returns, discounts, next_probs, support):
    """(Phi T Z)_i = sum_j [1 - |clip(R + gamma^m z_j) - z_i| / dz]_0^1 p_j, one atom at a time."""
    v_min, v_max, atoms = support[0], support[-1], len(support)
    dz = (v_max - v_min) / (atoms - 1)
    out = np.zeros_like(next_probs)
    for b in range(len(returns)):
        for j in range(atoms):
            tz = min(max(returns[b] + discounts[b] * support[j], v_min), v_max)
            for i in range(atoms):
                out[b, i] += max(0.0, 1 - abs(tz - support[i]) / dz) * next_probs[b, j]
    return out


def test_distribution_projection_matches_a_naive_per_atom_loop():
    rng = np.random.default_rng(2)
    support = np.linspace(-10, 10, 51)
    returns = np.concatenate([rng.normal(0, 5, 12), [25.0, -25.0, 0.0, 3.3]])  # past both edges too
    discounts = np.concatenate([rng.random(12), [0.99, 0.99, 0.0, 0.5]])  # 0: a termination
    next_probs = rng.dirichlet(np.ones(51), 16)
    got = rb.project_distribution(
        *(torch.tensor(x, dtype=torch.float32) for x in (returns, discounts, next_probs, support))
    ).numpy()
    np.testing.assert_allclose(got, naive_projection(returns, discounts, next_probs, support), atol=1e-5)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-5)  # mass conserved
    assert got[-4, -1] == pytest.approx(1.0) and got[-3, 0] == pytest.approx(1.0)  # clipped to the edges
    assert got[-2, 25] == pytest.approx(1.0)  # a termination with R = 0: all mass on z = 0


def test_distribution_projection_is_exact_when_the_target_lands_on_atoms():
    support = torch.linspace(-10, 10, 21)  # dz = 1
    next_probs = torch.softmax(torch.randn(3, 21), dim=1)
    got = rb.project_distribution(torch.tensor([2.0, 0.0, -1.0]), torch.ones(3), next_probs, support)
    shifted = torch.zeros(3, 21)  # z_j + R is atom j + R: the probabilities move R atoms, piling up at the edges
    for b, r in enumerate([2, 0, -1]):
        for j in range(21):
            shifted[b, min(max(j + r, 0), 20)] += next_probs[b, j]
    torch.testing.assert_close(got, shifted, atol=1e-6, rtol=0)


def test_double_q_picks_with_the_online_net_and_values_with_the_target_net():
    torch.manual_seed(0)
    config = dict(network="der", dueling=True, distributional=False, n_atoms=51, v_min=-10, v_max=10, noisy=False)
    q_net, target_net = (rb.RainbowNetwork(4, 5, **config, sigma0=0.5) for _ in range(2))
    obs, next_obs = (torch.randint(0, 256, (64, 4, 84, 84), dtype=torch.uint8) for _ in range(2))
    actions, returns, discounts = torch.randint(5, (64,)), torch.randn(64), torch.rand(64)
    with torch.no_grad():
        q_sa = q_net(obs)[:, :, 0].gather(1, actions[:, None])[:, 0]
        q_next_target = target_net(next_obs)[:, :, 0]
        a_star = q_net(next_obs)[:, :, 0].argmax(1)
        for double, y in [
            (True, returns + discounts * q_next_target.gather(1, a_star[:, None])[:, 0]),
            (False, returns + discounts * q_next_target.max(1).values),
        ]:
            losses, td_errors, _ = rb.rainbow_loss(
                q_net, target_net, obs, actions, returns, discounts, next_obs, double
            )
            torch.testing.assert_close(losses.detach(), (y - q_sa) ** 2)
            torch.testing.assert_close(td_errors, (y - q_sa).abs())


def test_cross_entropy_loss_against_its_formula():
    torch.manual_seed(0)
    config = dict(network="der", dueling=False, distributional=True, n_atoms=11, v_min=-5, v_max=5, noisy=False)
    q_net, target_net = (rb.RainbowNetwork(4, 3, **config, sigma0=0.5) for _ in range(2))
    obs, next_obs = (torch.randint(0, 256, (8, 4, 84, 84), dtype=torch.uint8) for _ in range(2))
    actions, returns, discounts = torch.randint(3, (8,)), torch.randn(8), torch.rand(8)
    losses, _, q_sa = rb.rainbow_loss(q_net, target_net, obs, actions, returns, discounts, next_obs, double=True)
    with torch.no_grad():
        a_star = q_net.q_values(q_net(next_obs)).argmax(1)
        p_next = target_net(next_obs)[torch.arange(8), a_star].softmax(1)
        target = rb.project_distribution(returns, discounts, p_next, q_net.support)
        log_p = q_net(obs)[torch.arange(8), actions].log_softmax(1)
        torch.testing.assert_close(losses.detach(), -(target * log_p).sum(1))
        torch.testing.assert_close(q_sa, (log_p.exp() * torch.linspace(-5, 5, 11)).sum(1))


def test_dueling_shapes_and_mean_zero_advantage():
    frames = torch.randint(0, 256, (5, 4, 84, 84), dtype=torch.uint8)
    for distributional, atoms in [(True, 51), (False, 1)]:
        config = dict(dueling=True, distributional=distributional, n_atoms=51, v_min=-10, v_max=10, noisy=True)
        net = rb.RainbowNetwork(4, 6, network="nature", sigma0=0.5, **config)
        net.reset_noise()
        out = net(frames)
        assert out.shape == (5, 6, atoms) and net.q_values(out).shape == (5, 6)
        x = net.torso(frames.float() / 255)
        value = net.value(x).view(5, 1, atoms)
        # Q - V = A - mean_a A: zero mean over the actions, for every atom
        torch.testing.assert_close((out - value).mean(dim=1), torch.zeros(5, atoms), atol=1e-5, rtol=0)
        assert not torch.allclose(out[:, 0], out[:, 1])  # the actions still differ
    plain = rb.RainbowNetwork(4, 6, "nature", False, False, 51, -10, 10, noisy=False, sigma0=0.5)
    assert plain.value is None and plain(frames).shape == (5, 6, 1)
    assert rb.RainbowNetwork(4, 6, "der", False, True, 51, -10, 10, False, 0.5)(frames).shape == (5, 6, 51)


def test_noisy_linear_is_factorised_and_off_in_eval_mode():
    layer = rb.NoisyLinear(7, 5, sigma0=0.5)
    np.testing.assert_allclose(layer.weight_sigma.detach().numpy(), 0.5 / 7**0.5)
    np.testing.assert_allclose(layer.bias_sigma.detach().numpy(), 0.5 / 7**0.5)
    torch.manual_seed(3)
    layer.reset_noise()
    torch.manual_seed(3)
    x_in, x_out = torch.randn(7), torch.randn(5)
    f_in, f_out = x_in.sign() * x_in.abs().sqrt(), x_out.sign() * x_out.abs().sqrt()  # f(x) = sgn(x) sqrt(|x|)
    with torch.no_grad():
        # the effective weights and bias of the noisy layer, read off its outputs
        bias = layer(torch.zeros(1, 7))[0]
        weight = (layer(torch.eye(7)) - bias).T  # [5, 7]
        eps_w = (weight - layer.weight_mu) / layer.weight_sigma
        torch.testing.assert_close(eps_w, torch.outer(f_out, f_in), atol=1e-5, rtol=1e-4)  # rank one: factorised
        torch.testing.assert_close(bias, layer.bias_mu + layer.bias_sigma * f_out)
        assert torch.linalg.matrix_rank(eps_w) == 1
        x = torch.randn(3, 7)
        noisy = layer(x)
        layer.reset_noise()
        assert not torch.allclose(layer(x), noisy)  # new noise, new output
        layer.eval()
        mean = layer(x)
        layer.reset_noise()
        torch.testing.assert_close(layer(x), mean)
        torch.testing.assert_close(mean, F.linear(x, layer.weight_mu, layer.bias_mu))


def test_update_gradients_equal_the_plain_noisy_formulation(monkeypatch):
    """The factorised noisy layers (two products, no [out, in] noise matrix) give the loss and the gradients of the
    plain formulation, W = mu + sigma * f(eps_out) f(eps_in)^T and one product, on a fixed batch."""
    torch.manual_seed(0)
    config = dict(network="der", dueling=True, distributional=True, n_atoms=11, v_min=-5, v_max=5, noisy=True)
    q_net, target_net = (rb.RainbowNetwork(4, 3, **config, sigma0=0.5) for _ in range(2))
    q_net.reset_noise()
    target_net.reset_noise()
    obs, next_obs = (torch.randint(0, 256, (16, 4, 84, 84), dtype=torch.uint8) for _ in range(2))
    actions, returns, discounts = torch.randint(3, (16,)), torch.randn(16), torch.rand(16)

    def loss_and_grads():
        q_net.zero_grad()
        losses, _, _ = rb.rainbow_loss(q_net, target_net, obs, actions, returns, discounts, next_obs, double=True)
        losses.mean().backward()
        return losses.detach(), {name: p.grad.clone() for name, p in q_net.named_parameters()}

    factorised = loss_and_grads()

    def plain(layer, x):
        weight = layer.weight_mu + layer.weight_sigma * torch.outer(layer.eps_out, layer.eps_in)
        return F.linear(x, weight, layer.bias_mu + layer.bias_sigma * layer.eps_out)

    monkeypatch.setattr(rb.NoisyLinear, "forward", plain)
    losses, grads = loss_and_grads()
    torch.testing.assert_close(factorised[0], losses)
    assert grads.keys() == factorised[1].keys() and any("sigma" in name for name in grads)
    for name, grad in grads.items():
        torch.testing.assert_close(factorised[1][name], grad, atol=1e-6, rtol=1e-4, msg=name)


def test_linear_schedule_goes_both_ways():
    np.testing.assert_allclose(
        [rb.linear_schedule(1.0, 0.01, 100, t) for t in (0, 50, 100, 1000)], [1, 0.505, 0.01, 0.01]
    )
    np.testing.assert_allclose([rb.linear_schedule(0.4, 1.0, 100, t) for t in (0, 50, 100, 1000)], [0.4, 0.7, 1, 1])


# ---------------------------------------------------------------- flags, presets and refusing what cannot run


def test_der_preset_sets_the_defaults_and_explicit_flags_win():
    rainbow = rb.parse_args([])
    assert (rainbow.n_step, rainbow.learning_rate, rainbow.target_network_frequency) == (3, 6.25e-5, 8000)
    der = rb.parse_args(["--preset", "der"])
    assert {name: getattr(der, name) for name in rb.DER_PRESET} == rb.DER_PRESET
    assert rb.parse_args(["--preset=der"]).n_step == 20
    for argv in (["--preset", "der", "--n-step", "5"], ["--n-step", "5", "--preset", "der"]):
        args = rb.parse_args(argv)
        assert args.n_step == 5 and args.train_frequency == 1 and args.sigma0 == 0.1


@pytest.mark.parametrize(
    "argv,n_step", [(["--help"], 3), (["--preset", "der", "--help"], 20), (["-h", "--preset=der"], 20)]
)
def test_help_shows_the_defaults_of_the_preset_given(argv, n_step):
    out = subprocess.run(
        [sys.executable, os.path.join(ROOT, "rainbow_atari.py"), *argv], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    n_step_help = " ".join(out.stdout.split("--n-step", 1)[1].split("--", 1)[0].replace("│", " ").split())
    assert f"(default: {n_step})" in n_step_help


BAD = [
    (dict(buffer_size=0), "--buffer-size must be positive"),
    (dict(batch_size=0), "--batch-size must be positive"),
    (dict(n_step=0), "--n-step must be positive"),
    (dict(buffer_size=16), "must hold --batch-size"),
    (dict(train_frequency=0), "--train-frequency must be positive"),
    (dict(target_network_frequency=0), "--target-network-frequency must be positive"),
    (dict(learning_starts=2), "--learning-starts must be at least --n-step"),
    (dict(adam_eps=0.0), "--adam-eps"),
    (dict(exploration_fraction=0.0), "--exploration-fraction"),
    (dict(end_e=1.5), "between 0 and 1"),
    (dict(prioritized_replay_beta=1.5), "between 0 and 1"),
    (dict(prioritized_replay_alpha=-1.0), "--prioritized-replay-alpha must be 0 or more"),
    (dict(prioritized_replay_eps=0.0), "--prioritized-replay-eps must be positive"),
    (dict(sigma0=-0.1), "--sigma0 must be 0 or more"),
    (dict(n_atoms=1), "--n-atoms must be 2 or more"),
    (dict(v_min=10.0), "--v-min must be below --v-max"),
    (dict(env_id="Pendulum-v1"), "continuous actions"),
]
if not torch.cuda.is_available():
    BAD.append((dict(buffer_device="cuda"), "--buffer-device cuda needs a GPU"))


@pytest.mark.parametrize("overrides,message", BAD)
def test_bad_input_fails_before_training(in_tmp, overrides, message):
    assert_fails_before_training("rainbow_atari", overrides, message)


# ---------------------------------------------------------------- end to end


SWITCHES = {
    "all six": {},
    "--no-double": dict(double=False),
    "--no-prioritized": dict(prioritized=False),
    "--no-dueling": dict(dueling=False),
    "--n-step 1": dict(n_step=1),
    "--no-distributional": dict(distributional=False),
    "--no-noisy": dict(noisy=False),
}


@pytest.mark.parametrize("switch", SWITCHES)
def test_each_switch_runs_end_to_end_and_changes_what_it_should(in_tmp, monkeypatch, switch):
    """Each component off alone: the run trains, logs and saves, and the component is really gone (counted forward
    passes, priority updates, n-step windows, saved layers, logged loss and epsilon)."""
    args = rb.Args(**{**TINY, **SWITCHES[switch], "save_model": True})
    calls = dict(forward=0, update_priorities=0, n_steps=set())
    forward, update, n_step_return = rb.RainbowNetwork.forward, rb.ReplayMemory.update_priorities, rb.n_step_return

    def counted_forward(self, obs):
        calls["forward"] += 1
        return forward(self, obs)

    def counted_update(self, *a):
        calls["update_priorities"] += 1
        return update(self, *a)

    def recorded_n_step_return(rewards, *a):
        calls["n_steps"].add(rewards.shape[1])
        return n_step_return(rewards, *a)

    monkeypatch.setattr(rb.RainbowNetwork, "forward", counted_forward)
    monkeypatch.setattr(rb.ReplayMemory, "update_priorities", counted_update)
    monkeypatch.setattr(rb, "n_step_return", recorded_n_step_return)
    run_dir = rb.train(args)
    metrics = read_metrics(run_dir)
    names = {row["metric"] for row in metrics}
    updates = TINY["total_timesteps"] - TINY["learning_starts"]  # one per step after the warm-up
    loss_name = "losses/cross_entropy" if args.distributional else "losses/td_loss"
    assert {loss_name, "losses/q_values", "charts/beta"} <= names
    assert all(np.isfinite(float(r["value"])) for r in metrics)
    assert calls["update_priorities"] == (updates if args.prioritized else 0)
    assert calls["n_steps"] == {args.n_step}
    epsilons = {float(r["value"]) for r in metrics if r["metric"] == "charts/epsilon"}
    assert epsilons == {0.0} if args.noisy else [pytest.approx(args.end_e)] == list(epsilons)  # noisy: greedy
    if args.noisy:  # acting: one forward per step after the warm-up; learning: 3 per update, 2 without double
        assert calls["forward"] == updates + (3 if args.double else 2) * updates
    model = torch.load(os.path.join(run_dir, "rainbow_atari.pt"), weights_only=True)["model"]
    assert any(k.startswith("value.") for k in model) == args.dueling
    assert any(k.endswith("weight_sigma") for k in model) == args.noisy
    last_layer = [v for k, v in model.items() if k.startswith("advantage.2.") and v.dim() == 2][0]
    assert last_layer.shape[0] == 4 * (args.n_atoms if args.distributional else 1)  # Breakout: 4 actions


def test_train_save_evaluate_and_video(in_tmp, monkeypatch):
    # epsilon 1 in evaluation: an untrained greedy policy may never press FIRE, and the game would not end
    flags = {**TINY, "total_timesteps": 600, "learning_starts": 500, "network": "nature", "train_frequency": 4}
    flags.update(save_model=True, eval_episodes=1)
    run_dir = rb.train(rb.Args(**{**flags, "capture_video": True, "eval_epsilon": 1.0}))
    metrics = read_metrics(run_dir)
    assert {"charts/episodic_return", "charts/episodic_length", "eval/episodic_return"} <= {
        r["metric"] for r in metrics
    }
    assert glob.glob(os.path.join(run_dir, "videos", "*.mp4"))
    returns = [float(r["value"]) for r in metrics if r["metric"] == "charts/episodic_return"]
    assert returns and all(r >= 0 and r == int(r) for r in returns)  # raw Breakout scores, not clipped sums

    q_net, env_id = rb.load_checkpoint(os.path.join(run_dir, "rainbow_atari.pt"), torch.device("cpu"))
    modes = []
    real_epsilon_greedy = rb.epsilon_greedy
    spy = lambda net, *a: modes.append(net.training) or real_epsilon_greedy(net, *a)  # noqa: E731
    monkeypatch.setattr(rb, "epsilon_greedy", spy)
    scores = rb.evaluate(q_net, rb.Args(env_id=env_id, eval_episodes=1, eval_epsilon=1.0, seed=0), torch.device("cpu"))
    assert modes and not any(modes) and len(scores) == 1  # evaluation uses the mean network: noise off
    assert q_net.training  # and gives the network back as it was, noisy
