"""Where rainbow_atari.py's update spends its time: each part of one update, timed on its own, at the default flags
(Nature network, batch 32) and at --preset der's (DER network).

    python benchmarks/rainbow_atari_update_profile.py [--repeats 200]

The parts, in the order the update runs them (the same calls as train() and rainbow_loss()): drawing 32 slots from
the sum tree, gathering their n-step transitions, fresh noise for both networks, the online forward on s, the
target's forward on s', the online forward on s' (double Q-learning), the projection of the target distribution,
the cross-entropy, backward, Adam, and the new priorities. Medians of --repeats, each part's share of their sum.
Writes benchmarks/results/rainbow_atari_update_profile.txt. Run it with nothing else on the machine.
"""

import argparse
import dataclasses
import time

import numpy as np
import torch
from common import Report, import_script, median, result

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
    report.write()
