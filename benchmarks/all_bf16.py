"""--bf16 against fp32 in the three Atari scripts: one update at each script's batch, and whole runs' steady rates.

    python benchmarks/all_bf16.py [--update-repeats 60] [--repeats 2] [--scripts ppo dqn rainbow]

Update: the script's network (default layout) forward and backward at its default batch with Adam, the loss on random
frames (PPO: minibatch 256, the clipped surrogate + value loss; DQN: batch 32, target and online forward, TD loss;
Rainbow: batch 32, Nature and DER networks, online and target forward, cross-entropy over the atoms), medians of
--update-repeats, fp32 and bf16 alternating. Whole runs: each script at its defaults, alone in an empty folder,
with and without --bf16 alternating, the steady rate from its progress lines (PPO 16,384 steps; DQN and Rainbow past
learning starts). Writes benchmarks/results/all_bf16.txt with the machine's capability (whether the CPU has bfloat16
hardware: AVX512-BF16 or AMX). Run it with nothing else on the machine.
"""

import argparse
import sys

import torch
import torch.nn.functional as F
from common import Report, import_script, median, median_ms, result, script, steady_run


def frames(n: int) -> torch.Tensor:
    return torch.randint(0, 256, (n, 4, 84, 84), dtype=torch.uint8)


def ppo_update(bf16: bool):
    ppo = import_script("ppo_atari")
    agent = ppo.Agent(4, bf16).to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(agent.parameters(), lr=2.5e-4, eps=1e-5)
    obs, actions, advantages, returns = frames(256), torch.randint(0, 4, (256,)), torch.randn(256), torch.randn(256)
    old_logprob = torch.full((256,), -1.4)

    def update():
        logits, values = agent(obs)
        logprob, entropy = ppo.logprob_and_entropy(logits, actions)
        loss = ppo.clipped_surrogate((logprob - old_logprob).exp(), advantages, 0.1)
        loss = loss + 0.5 * ((values - returns) ** 2).mean() - 0.01 * entropy.mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(agent.parameters(), 0.5)
        optimizer.step()

    return update


def dqn_update(bf16: bool):
    dqn = import_script("dqn_atari")
    q_net = dqn.QNetwork(4, 4, bf16).to(memory_format=torch.channels_last)
    target_net = dqn.QNetwork(4, 4, bf16).to(memory_format=torch.channels_last).requires_grad_(False)
    optimizer = torch.optim.Adam(q_net.parameters(), lr=1e-4, fused=True)
    obs, next_obs, actions = frames(32), frames(32), torch.randint(0, 4, (32,))

    def update():
        with torch.no_grad():
            y = dqn.td_target(torch.ones(32), torch.zeros(32), target_net(next_obs), 0.99)
        loss = F.mse_loss(q_net(obs).gather(1, actions[:, None]).squeeze(1), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return update


def rainbow_update(bf16: bool, network: str):
    rb = import_script("rainbow_atari")
    config = {name: getattr(rb.Args(), name) for name in rb.NETWORK_FLAGS} | {"network": network}
    q_net, target_net = (rb.RainbowNetwork(4, 4, **config, bf16=bf16) for _ in range(2))
    optimizer = torch.optim.Adam(q_net.parameters(), lr=6.25e-5, eps=1.5e-4)
    obs, next_obs, actions = frames(32), frames(32), torch.randint(0, 4, (32,))
    target = torch.softmax(torch.randn(32, 51), dim=1)

    def update():
        with torch.no_grad():
            target_net(next_obs)  # the target's forward, as in the loss (the projection itself is not timed here)
        log_p = torch.log_softmax(q_net(obs)[torch.arange(32), actions], dim=1)
        loss = -(target * log_p).sum(1).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return update


UPDATES = {
    "ppo": [("ppo_atari.py, minibatch 256", ppo_update)],
    "dqn": [("dqn_atari.py, batch 32", dqn_update)],
    "rainbow": [
        ("rainbow_atari.py, Nature network, batch 32", lambda bf16: rainbow_update(bf16, "nature")),
        ("rainbow_atari.py, DER network, batch 32", lambda bf16: rainbow_update(bf16, "der")),
    ],
}
RUNS = {  # flags of a whole run, and the step after which its rate is steady
    "ppo": (["--total-timesteps", "16384"], 2048),
    "dqn": (["--total-timesteps", "14000", "--learning-starts", "8000"], 9000),
    "rainbow": (["--total-timesteps", "6000", "--learning-starts", "2000", "--buffer-size", "20000"], 2500),
}


def run_rate(name: str, bf16: bool) -> float:
    flags, after = RUNS[name]
    cmd = [sys.executable, "-u", script(f"{name}_atari"), *flags, "--eval-episodes", "0", "--checkpoint-every", "0"]
    return steady_run(cmd + (["--bf16"] if bf16 else []), after=after).sps


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--update-repeats", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=2, help="pairs of whole runs (fp32, bf16) per script")
    parser.add_argument("--scripts", nargs="+", default=["ppo", "dqn", "rainbow"], choices=list(RUNS))
    parser.add_argument("--out", default=result("all_bf16.txt"))
    a = parser.parse_args()
    report = Report(a.out)
    capability = torch.backends.cpu.get_cpu_capability()
    native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    report.say(f"torch kernels: {capability}; bfloat16 hardware (AVX512-BF16 or AMX): {'yes' if native else 'no'}")
    report.say(f"torch threads: {torch.get_num_threads()}")
    for name in a.scripts:
        for what, make in UPDATES[name]:
            fp32, bf16 = make(False), make(True)
            times = {"fp32": [], "bf16": []}
            for _ in range(3):  # alternating blocks, so that a drift of the machine's speed falls on both
                times["fp32"].append(median_ms(fp32, a.update_repeats // 3 + 2))
                times["bf16"].append(median_ms(bf16, a.update_repeats // 3 + 2))
            t32, t16 = median(times["fp32"]), median(times["bf16"])
            report.say(f"update, {what}: fp32 {t32:.1f} ms, bf16 {t16:.1f} ms: bf16 {t32 / t16:.2f}x")
    for name in a.scripts if a.repeats > 0 else ():  # --repeats 0: the updates only (on a CPU that emulates bf16)
        rates = {False: [], True: []}
        for _ in range(a.repeats):
            for bf16 in (False, True):
                rates[bf16].append(run_rate(name, bf16))
        r32, r16 = median(rates[False]), median(rates[True])
        each = ", ".join(f"{x:.0f}/{y:.0f}" for x, y in zip(rates[False], rates[True], strict=True))
        report.say(f"{name}_atari.py steady SPS: fp32 {r32:.1f}, bf16 {r16:.1f}: bf16 {r16 / r32:.2f}x (pairs {each})")
    report.write()
