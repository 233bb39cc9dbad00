"""Where rainbow_atari.py's update spends its time: each part of one update, timed on its own, at the default flags
(Nature network, batch 32) and at --preset der's (DER network).

    python benchmarks/rainbow_atari_update_profile.py [--repeats 200]

The parts, in the order the update runs them (the same calls as train() and rainbow_loss()): drawing 32 slots from
the sum tree, gathering their n-step transitions, fresh noise for both networks, the online forward on s, the
target's forward on s', the online forward on s' (double Q-learning), the projection of the target distribution,
the cross-entropy, backward, Adam, and the new priorities. Medians of --repeats, each part's share of their sum.

Then how close the Nature network's update runs to the machine: its FLOPs (torch.utils.flop_counter: the online
forward and backward on s, the two forwards on s') over its time, beside the rate of one 2048^3 matrix product and of
the update's largest product alone (the first noisy layer's [32, 3136] x [3136, 512]). And the whole update (as
train() does it) against candidates with the same math, in turn (each round starting with the next one), medians
of --repeats: the online network over s and s' in one pass of 2B (its backward covers 2B); the noisy layers' weights
composed, W = mu + sigma * f(eps_out) f(eps_in)^T and one product, as most implementations do it (instead of two
products of B rows); denormals flushed to zero (a control: there are none to flush, so it shows the noise).
Writes benchmarks/results/rainbow_atari_update_profile.txt. Run it with nothing else on the machine.
"""

import argparse
import contextlib
import dataclasses
import time
from functools import partial

import numpy as np
import torch
import torch.nn.functional as F
from common import Report, import_script, median, median_ms, result
from torch.utils.flop_counter import FlopCounterMode

rb = import_script("rainbow_atari")


def profile(args, repeats: int) -> dict[str, float]:
    torch.manual_seed(0)
    config = {name: getattr(args, name) for name in rb.NETWORK_FLAGS}
    q_net = rb.RainbowNetwork(4, 4, **config)
    target_net = rb.RainbowNetwork(4, 4, **config).requires_grad_(False)
    optimizer = torch.optim.Adam(q_net.parameters(), lr=args.learning_rate, eps=args.adam_eps, fused=True)
    alpha = args.prioritized_replay_alpha
    memory = rb.ReplayMemory(20_000, 1, (4, 84, 84), torch.device("cpu"), args.n_step, args.gamma, alpha)
    rng = np.random.default_rng(0)
    obs = rng.integers(0, 256, (1, 4, 84, 84), dtype=np.uint8)
    memory.reset(obs)
    no = np.zeros(1, dtype=bool)
    for _ in range(5_000):
        memory.add(rng.integers(0, 4, 1), rng.normal(size=1), no, obs, no, None)
    times: dict[str, list[float]] = {}

    def timed(name, fn, *args):
        start = time.perf_counter()
        out = fn(*args)
        times.setdefault(name, []).append((time.perf_counter() - start) * 1e3)
        return out

    def reset_noise():
        q_net.reset_noise()
        target_net.reset_noise()

    def cross_entropy(target, out, weights):
        return (weights.float() * -(target * out.log_softmax(dim=1)).sum(1)).mean()

    for _ in range(repeats):
        envs_b, slots_b, weights = timed("sample from the sum tree", memory.sample, args.batch_size, 0.5)
        s, a, returns, discounts, s_next = timed("gather n-step transitions", memory.transitions, envs_b, slots_b)
        timed("reset noise (both networks)", reset_noise)
        out = timed("online forward on s", q_net, s)[torch.arange(len(a)), a]
        with torch.no_grad():
            next_out = timed("target forward on s'", target_net, s_next)
            online_next = timed("online forward on s' (double)", q_net, s_next)
            next_actions = q_net.q_values(online_next).argmax(dim=1)
            probs = next_out[torch.arange(len(a)), next_actions].softmax(dim=1)
            target = timed("projection", rb.project_distribution, returns, discounts, probs, q_net.support)
        loss = timed("cross-entropy", cross_entropy, target, out, weights)
        optimizer.zero_grad(set_to_none=True)
        timed("backward", loss.backward)
        timed("Adam step", optimizer.step)
        td_errors = -(target * out.detach().log_softmax(dim=1)).sum(1)
        timed("new priorities", memory.update_priorities, envs_b, slots_b, td_errors)
    skip = repeats // 10
    return {name: median(values[skip:]) for name, values in times.items()}


def composed_forward(layer, x: torch.Tensor) -> torch.Tensor:
    """A noisy layer with its weight composed first: W = mu + sigma * (f(eps_out) f(eps_in)^T), then one product."""
    if not layer.training:
        return F.linear(x, layer.weight_mu, layer.bias_mu)
    weight = layer.weight_mu + layer.weight_sigma * torch.outer(layer.eps_out, layer.eps_in)
    return F.linear(x, weight, layer.bias_mu + layer.bias_sigma * layer.eps_out)


@contextlib.contextmanager
def variant(name: str):
    """The candidate `name` switched on for the block (the noisy layers' forward, or denormals flushed)."""
    plain = rb.NoisyLinear.forward
    if name == "composed noisy weights":
        rb.NoisyLinear.forward = composed_forward
    torch.set_flush_denormal(name == "denormals flushed to zero")
    try:
        yield
    finally:
        rb.NoisyLinear.forward = plain
        torch.set_flush_denormal(False)


def candidates(repeats: int, report: Report) -> None:
    """The whole update (Nature network, batch 32, random frames) as train() does it and with each candidate."""
    torch.manual_seed(0)
    args = rb.Args()
    config = {name: getattr(args, name) for name in rb.NETWORK_FLAGS}
    q_net = rb.RainbowNetwork(4, 4, **config)
    target_net = rb.RainbowNetwork(4, 4, **config).requires_grad_(False)
    optimizer = torch.optim.Adam(q_net.parameters(), lr=args.learning_rate, eps=args.adam_eps, fused=True)
    batch = args.batch_size
    s, s_next = (torch.randint(0, 256, (batch, 4, 84, 84), dtype=torch.uint8) for _ in range(2))
    a, returns, discounts = torch.randint(0, 4, (batch,)), torch.randn(batch), torch.full((batch,), 0.97)
    rows = torch.arange(batch)

    def loss(one_pass: bool) -> torch.Tensor:
        if one_pass:  # the online network over s and s' at once; the s' half detached
            both = q_net(torch.cat([s, s_next]))
            out, online_next = both[:batch][rows, a], both[batch:].detach()
        else:
            out = q_net(s)[rows, a]
            with torch.no_grad():
                online_next = q_net(s_next)
        with torch.no_grad():
            next_out = target_net(s_next)[rows, q_net.q_values(online_next).argmax(dim=1)]
            target = rb.project_distribution(returns, discounts, next_out.softmax(dim=1), q_net.support)
        return -(target * out.log_softmax(dim=1)).sum(dim=1).mean()

    def update(one_pass: bool = False) -> None:
        q_net.reset_noise()
        target_net.reset_noise()
        optimizer.zero_grad(set_to_none=True)
        loss(one_pass).backward()
        optimizer.step()

    with FlopCounterMode(display=False) as counter:
        update()
    flops = counter.get_total_flops()
    big = torch.randn(2048, 2048)
    x, w = torch.randn(batch, 3136), torch.randn(512, 3136)
    gemm = 2 * 2048**3 / median_ms(lambda: big @ big, 20) / 1e6
    fc = 2 * batch * 3136 * 512 / median_ms(lambda: F.linear(x, w), 200) / 1e6
    names = ["as train() does it", "online net over s and s' in one pass", "composed noisy weights"]
    names += ["denormals flushed to zero"]
    times: dict[str, list[float]] = {name: [] for name in names}
    for i in range(repeats):
        for name in names[i % len(names) :] + names[: i % len(names)]:  # each round starts with the next one
            with variant(name):
                one_pass = name == "online net over s and s' in one pass"
                times[name].append(median_ms(partial(update, one_pass), 1, skip=0))
    skip = repeats // 10
    plain = median(times[names[0]][skip:])
    report.say(f"\nthe update of the Nature network, batch {batch}: {flops / 1e9:.2f} GFLOP")
    report.say(f"  as train() does it: {plain:.1f} ms, {flops / plain / 1e6:.0f} GFLOP/s")
    product = f"[{batch}, 3136] x [3136, 512] {fc:.0f} GFLOP/s"
    report.say(f"  the machine: a 2048^3 matrix product {gemm:.0f} GFLOP/s; {product}")
    report.say("candidates with the same math, the whole update (in turn, rotating the order; medians):")
    for name in names:
        ms = median(times[name][skip:])
        report.say(f"  {name:40s} {ms:7.1f} ms  {plain / ms:5.2f}x")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--out", default=result("rainbow_atari_update_profile.txt"))
    a = parser.parse_args()
    report = Report(a.out)
    report.say(f"torch threads: {torch.get_num_threads()}")
    der = dataclasses.replace(rb.Args(), preset="der", **rb.DER_PRESET)
    for label, args in [("defaults (Nature network, batch 32)", rb.Args()), ("--preset der (DER network)", der)]:
        parts = profile(args, a.repeats)
        total = sum(parts.values())
        report.say(f"\n{label}: {total:.1f} ms in all (sum of the parts' medians)")
        for name, ms in parts.items():
            report.say(f"  {name:32s} {ms:7.2f} ms  {100 * ms / total:5.1f}%")
    candidates(a.repeats, report)
    report.write()
