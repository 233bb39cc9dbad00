"""--bf16 in the Atari scripts: the networks' forward passes under bfloat16 autocast (PPO's acting and learning, the
replay scripts' updates; their acting stays fp32), their outputs, the losses, the optimizer and everything saved in
fp32. Tiny on purpose: a CPU without bfloat16 hardware emulates it, slowly."""

import os

import pytest
import torch
from conftest import TINY_RUNS, read_metrics, train

import dqn_atari as dqn
import ppo_atari as ppo
import rainbow_atari as rb

ATARI = ["ppo_atari", "dqn_atari", "rainbow_atari"]
# bf16 keeps 8 bits of mantissa: each output is within about 2^-8 of fp32, relatively; the losses on a fixed batch
# were measured within 1% (AVX-512 kernels), the tolerance leaves 3x that
LOSS_RTOL = 0.03


def frames(n, seed=0):
    return torch.randint(0, 256, (n, 4, 84, 84), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def both(network, loss):
    """loss(network) in fp32, then with the network's forward passes in bf16 (PPO's Agent has the switch)."""
    network.bf16 = False
    fp32 = loss(network)
    network.bf16 = True
    bf16 = loss(network)
    network.bf16 = False
    return fp32, bf16


def test_ppo_loss_in_bf16_is_within_tolerance_of_fp32():
    torch.manual_seed(0)
    agent = ppo.Agent(4).to(memory_format=torch.channels_last)
    obs, actions = frames(64), torch.randint(0, 4, (64,), generator=torch.Generator().manual_seed(1))
    returns = torch.randn(64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        old_logprob = ppo.logprob_and_entropy(agent(obs)[0], actions)[0] - 0.05  # a ratio away from 1

    def loss(net):
        logits, values = net(obs)
        assert logits.dtype == values.dtype == torch.float32  # outputs back in fp32
        logprob, entropy = ppo.logprob_and_entropy(logits, actions)
        pg = ppo.clipped_surrogate((logprob - old_logprob).exp(), returns, 0.1)
        return (pg + 0.5 * ((values - returns) ** 2).mean() - 0.01 * entropy.mean()).item()

    fp32, bf16 = both(agent, loss)
    assert bf16 == pytest.approx(fp32, rel=LOSS_RTOL) and bf16 != fp32  # close, and bf16 did run


def fp32_and_bf16(loss):
    """loss() in fp32, then under bfloat16 autocast, as the replay scripts' updates run with --bf16."""
    fp32 = loss()
    with torch.autocast("cpu", torch.bfloat16):
        return fp32, loss()


def test_dqn_loss_in_bf16_is_within_tolerance_of_fp32():
    torch.manual_seed(0)
    q_net, target_net = dqn.QNetwork(4, 4), dqn.QNetwork(4, 4)
    obs, next_obs = frames(32, 0), frames(32, 1)
    actions = torch.randint(0, 4, (32,), generator=torch.Generator().manual_seed(2))
    rewards, terminations = torch.ones(32), torch.zeros(32)

    def loss():
        with torch.no_grad():
            y = dqn.td_target(rewards, terminations, target_net(next_obs), 0.99)
        q_sa = q_net(obs).gather(1, actions[:, None]).squeeze(1)
        assert q_sa.dtype == torch.float32  # Q back in fp32
        return torch.nn.functional.mse_loss(q_sa, y).item()

    fp32, bf16 = fp32_and_bf16(loss)
    assert bf16 == pytest.approx(fp32, rel=LOSS_RTOL) and bf16 != fp32


@pytest.mark.parametrize("network", ["der", "nature"])
def test_rainbow_loss_in_bf16_is_within_tolerance_of_fp32(network):
    torch.manual_seed(0)
    config = {name: getattr(rb.Args(), name) for name in rb.NETWORK_FLAGS} | {"network": network}
    q_net = rb.RainbowNetwork(4, 4, **config)
    q_net.eval()  # the mean weights: the same network for both passes
    obs = frames(32)
    actions = torch.randint(0, 4, (32,), generator=torch.Generator().manual_seed(2))

    def loss():
        out = q_net(obs)  # [B, A, K] logits over the atoms
        assert out.dtype == torch.float32
        target = torch.softmax(torch.randn(32, out.shape[2], generator=torch.Generator().manual_seed(3)), dim=1)
        log_p = torch.log_softmax(out[torch.arange(32), actions], dim=1)  # the cross-entropy to a target distribution
        return -(target * log_p).sum(1).mean().item()

    fp32, bf16 = fp32_and_bf16(loss)
    assert bf16 == pytest.approx(fp32, rel=LOSS_RTOL) and bf16 != fp32


def test_ppo_bf16_scores_the_rollouts_actions_as_the_update_does(in_tmp):
    """The rollout scores N frames at a time, the update a minibatch of many: under bf16 they must not give the
    same action another log-probability. With one epoch of one minibatch, the logged KL is the first minibatch's,
    before any step: it must be 0, up to rounding."""
    run_dir = train("ppo_atari", bf16=True, update_epochs=1, num_minibatches=1)
    kls = [float(r["value"]) for r in read_metrics(run_dir) if r["metric"] == "losses/approx_kl"]
    assert kls and all(abs(kl) < 1e-6 for kl in kls), kls


def forward_passes(monkeypatch, name) -> set:
    """The (frames, autocast on) of each forward pass of the replay script's network from now on (PPO: none)."""
    calls = set()
    if name != "ppo_atari":
        network = dqn.QNetwork if name == "dqn_atari" else rb.RainbowNetwork
        forward = network.forward
        record = lambda self, obs: calls.add((len(obs), torch.is_autocast_enabled("cpu"))) or forward(self, obs)
        monkeypatch.setattr(network, "forward", record)
    return calls


@pytest.mark.parametrize("name", ATARI)
def test_a_bf16_run_trains_saves_fp32_and_resumes_with_or_without_it(in_tmp, monkeypatch, name):
    # the replay scripts learn from batches of 4, not 32: emulated bfloat16 (AVX2 CPUs) is slow, the test is the path
    small = {"batch_size": 4} if name != "ppo_atari" else {}
    total = TINY_RUNS[name]["total_timesteps"]
    calls = forward_passes(monkeypatch, name)
    # DQN, Rainbow: the update's forward passes (batches of 4) in bf16 with the flag, acting (one env: 1 frame) in fp32
    expected = lambda bf16: {(1, False), (4, bf16)} if name != "ppo_atari" else set()
    run_dir = train(name, bf16=True, checkpoint_every=total // 2, **small)
    assert calls == expected(True)
    rows = read_metrics(run_dir)
    assert any(r["metric"].startswith("losses/") for r in rows)  # it did update, and logged a loss
    values = [float(r["value"]) for r in rows]
    assert all(v == v and abs(v) != float("inf") for v in values)
    state = torch.load(os.path.join(run_dir, "checkpoint.pt"), weights_only=True)
    floats = [t for t in state["model"].values() if t.is_floating_point()]
    assert floats and all(t.dtype == torch.float32 for t in floats)
    # a little further each time (one PPO iteration, a few replay updates): the flag may change on resume
    tiny = TINY_RUNS[name]
    more = tiny["num_envs"] * tiny["num_steps"] if name == "ppo_atari" else 40
    calls.clear()
    assert train(name, bf16=False, resume=run_dir, total_timesteps=total + more, **small) == run_dir
    assert calls == expected(False)  # no autocast without the flag
    calls.clear()
    assert train(name, bf16=True, resume=run_dir, total_timesteps=total + 2 * more, **small) == run_dir
    assert calls == expected(True)
    assert torch.load(os.path.join(run_dir, "checkpoint.pt"), weights_only=True)["global_step"] >= total + 2 * more


def test_the_first_line_warns_where_bf16_has_no_hardware(monkeypatch, capsys):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    ppo.pick_device(False, bf16=True)
    ppo.pick_device(False, bf16=False)
    first, second = capsys.readouterr().out.splitlines()
    assert first.endswith("kernels; no bfloat16 hardware: --bf16 is emulated here, slower than fp32)")
    assert second.endswith(" kernels)")
