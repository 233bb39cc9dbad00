"""--bf16 against fp32 in the three Atari scripts: one update at each script's batch, one acting forward pass, and
whole runs' steady rates.

    python benchmarks/all_bf16.py [--update-repeats 60] [--repeats 2] [--scripts ppo dqn rainbow]

Update: the script's network (default layout) forward and backward at its default batch with its optimizer, the loss
on random frames (PPO: minibatch 256, the clipped surrogate + value loss, Agent's bf16 switch; DQN: batch 32, target
and online forward, TD loss; Rainbow: batch 32, Nature and DER networks, fresh noise, rainbow_loss() (online forward
on s, target and online forwards on s', projection, cross-entropy); DQN's and Rainbow's under one autocast region,
as their train() runs them), medians of --update-repeats, fp32 and bf16 alternating. Acting: one forward pass at the
acting batch of the defaults (PPO 8 frames, DQN and Rainbow 1; Rainbow with fresh noise, as each step draws it),
fp32 and under bfloat16 autocast: DQN and Rainbow act in fp32 with --bf16, this is the measurement behind that.
Whole runs: each script at its defaults, alone in an empty folder, with and without --bf16 alternating, the steady
rate from its progress lines (PPO 16,384 steps; DQN and Rainbow past learning starts). Writes
benchmarks/results/all_bf16.txt with the machine's capability (whether the CPU has bfloat16 hardware: AVX512-BF16 or
AMX). Run it with nothing else on the machine; --repeats 0 times the updates and acting only (on a CPU that emulates
bf16, whole runs with it take long).
"""

import argparse
import sys

import torch
import torch.nn.functional as F
from common import Report, import_script, median, median_ms, result, script, steady_run


def frames(n: int) -> torch.Tensor:
    return torch.randint(0, 256, (n, 4, 84, 84), dtype=torch.uint8)


def autocast(bf16: bool):
    return torch.autocast("cpu", torch.bfloat16, enabled=bf16)


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
    q_net = dqn.QNetwork(4, 4).to(memory_format=torch.channels_last)
    target_net = dqn.QNetwork(4, 4).to(memory_format=torch.channels_last).requires_grad_(False)
    optimizer = torch.optim.Adam(q_net.parameters(), lr=1e-4, fused=True)
    obs, next_obs, actions = frames(32), frames(32), torch.randint(0, 4, (32,))

    def update():
        with autocast(bf16):
            with torch.no_grad():
                y = dqn.td_target(torch.ones(32), torch.zeros(32), target_net(next_obs), 0.99)
            q_sa = q_net(obs).gather(1, actions[:, None]).squeeze(1)
        loss = F.mse_loss(q_sa, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return update


def rainbow_update(bf16: bool, network: str):
    rb = import_script("rainbow_atari")
    config = {name: getattr(rb.Args(), name) for name in rb.NETWORK_FLAGS} | {"network": network}
    q_net, target_net = (rb.RainbowNetwork(4, 4, **config) for _ in range(2))
    target_net.requires_grad_(False)
    optimizer = torch.optim.Adam(q_net.parameters(), lr=6.25e-5, eps=1.5e-4, fused=True)
    batch = (frames(32), torch.randint(0, 4, (32,)), torch.randn(32), torch.full((32,), 0.97), frames(32))

    def update():
        q_net.reset_noise()
        target_net.reset_noise()
        with autocast(bf16):
            losses = rb.rainbow_loss(q_net, target_net, *batch, double=True)[0]
        loss = losses.mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return update


def acting(name: str):
    """One forward pass at the acting batch of the defaults, fp32 or under autocast (the script's own way: PPO's
    Agent switch; the replay scripts act in fp32 whatever --bf16 says, so this times what bf16 acting would cost)."""
    module = import_script(f"{name}_atari")
    if name == "ppo":
        nets = {bf16: module.Agent(4, bf16).to(memory_format=torch.channels_last) for bf16 in (False, True)}
    elif name == "dqn":
        nets = dict.fromkeys((False, True), module.QNetwork(4, 4).to(memory_format=torch.channels_last))
    else:
        config = {flag: getattr(module.Args(), flag) for flag in module.NETWORK_FLAGS}
        nets = dict.fromkeys((False, True), module.RainbowNetwork(4, 4, **config))
    obs = frames(8 if name == "ppo" else 1)

    def act(bf16: bool):
        def forward():
            if name == "rainbow":
                nets[bf16].reset_noise()  # fresh noise at each step
            with torch.no_grad(), autocast(bf16 and name != "ppo"):  # PPO: the Agent's own switch
                return nets[bf16](obs)

        return forward

    return act


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
        frames_acted = "8 frames" if name == "ppo" else "1 frame"
        parts = [(f"update, {what}", make, a.update_repeats) for what, make in UPDATES[name]]
        parts += [(f"acting, {name}_atari.py, {frames_acted}", acting(name), 10 * a.update_repeats)]
        for what, make, repeats in parts:
            fp32, bf16 = make(False), make(True)
            times = {"fp32": [], "bf16": []}
            for _ in range(3):  # alternating blocks, so that a drift of the machine's speed falls on both
                times["fp32"].append(median_ms(fp32, repeats // 3 + 2))
                times["bf16"].append(median_ms(bf16, repeats // 3 + 2))
            t32, t16 = median(times["fp32"]), median(times["bf16"])
            report.say(f"{what}: fp32 {t32:.2f} ms, bf16 {t16:.2f} ms: bf16 {t32 / t16:.2f}x")
    for name in a.scripts if a.repeats > 0 else ():  # --repeats 0: the updates and acting only
        rates = {False: [], True: []}
        for _ in range(a.repeats):
            for bf16 in (False, True):
                rates[bf16].append(run_rate(name, bf16))
        r32, r16 = median(rates[False]), median(rates[True])
        each = ", ".join(f"{x:.0f}/{y:.0f}" for x, y in zip(rates[False], rates[True], strict=True))
        report.say(f"{name}_atari.py steady SPS: fp32 {r32:.1f}, bf16 {r16:.1f}: bf16 {r16 / r32:.2f}x (pairs {each})")
    report.write()
