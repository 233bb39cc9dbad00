"""PPO on Atari: the clipped surrogate objective, in one file.

PPO improves a stochastic policy pi_theta with the policy gradient, reusing each batch of
experience for several epochs. Reusing data means the new policy drifts away from the one that
collected it (pi_theta_old); TRPO bounds that drift with a KL constraint and a line search, PPO
instead clips the likelihood ratio so the objective stops rewarding moves beyond 1 +- epsilon:

    r_t(theta) = pi_theta(a_t | s_t) / pi_theta_old(a_t | s_t)                 (likelihood ratio)
    L^CLIP(theta) = E_t[ min(r_t A_t, clip(r_t, 1 - epsilon, 1 + epsilon) A_t) ]
    A_t = sum_l (gamma lambda)^l delta_{t+l},  delta_t = r_t + gamma V(s_{t+1}) - V(s_t)  (GAE)

A_t is the lecture's reward-to-go with a baseline subtracted (r_{t,to-go} - r_base(s_t), with
r_base = V): GAE interpolates between the one-step TD error (lambda = 0) and the full
reward-to-go minus the baseline (lambda = 1).

Papers: Schulman et al. 2017, "Proximal Policy Optimization Algorithms"; Schulman et al. 2016,
"High-Dimensional Continuous Control Using Generalized Advantage Estimation"; Huang et al. 2022,
"The 37 Implementation Details of Proximal Policy Optimization" (the Atari details used here).

Examples:
    python ppo_atari.py --env-id BreakoutNoFrameskip-v4
    python ppo_atari.py --env-id ALE/Pong-v5 --total-timesteps 2000000 --save-model --track
    python ppo_atari.py --eval-checkpoint runs/<run>/ppo_atari.pt --eval-episodes 10 --capture-video
    torchrun --nproc-per-node 4 ppo_atari.py --env-id BreakoutNoFrameskip-v4    # 4 processes (GPUs), one model

Install, for this file alone (training and its evaluation):
    pip install "torch>=2.5" "gymnasium>=1.1" "ale-py>=0.12" opencv-python-headless "tyro>=0.9.29" numpy
and for a flag that needs more: --tensorboard: tensorboard; --track: "wandb>=0.31"; --capture-video: moviepy.
(opencv-python-headless is OpenCV without display libraries: gymnasium's evaluation env resizes frames with it.)

Symbols: gamma -> args.gamma, lambda -> args.gae_lambda, epsilon -> args.clip_coef,
c1 (value loss weight) -> args.vf_coef, c2 (entropy bonus) -> args.ent_coef, alpha -> args.learning_rate.

Deliberate departures from the paper (all from CleanRL / Huang et al. 2022, so results compare):
- the value loss is clipped too (around the old value, by epsilon);
- advantages are normalized per minibatch; gradients are clipped to a global norm of 0.5;
- a life loss ends the episode for learning (no bootstrap through it) but the game goes on;
  the logged episodic_return is the raw score of the whole game, what papers report.
"""

import copy
import csv
import difflib
import importlib.util
import json
import math
import os
import random
import signal
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import timedelta
from functools import partial
from typing import NoReturn

import gymnasium as gym
import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import tyro
from ale_py.vector_env import AtariVectorEnv


@dataclass
class Args:
    # --- shared: begin ---
    exp_name: str = os.path.basename(__file__)[: -len(".py")]
    """the name of this experiment (part of the run folder's name)"""
    seed: int = 1
    """seed of python, numpy, torch and the environments (sub-env i gets seed + i)"""
    torch_deterministic: bool = True
    """use torch's deterministic algorithms (same seed -> same run on one machine)"""
    cuda: bool = True
    """use the GPU when one is there"""
    track: bool = False
    """log to Weights & Biases (WANDB_MODE=offline works without network)"""
    wandb_project_name: str = "rl-lecture"
    """the wandb project"""
    wandb_entity: str | None = None
    """the wandb entity (team or user)"""
    capture_video: bool = False
    """record videos of the evaluation episodes into the run folder's videos/"""
    save_model: bool = False
    """save the trained weights into the run folder"""
    eval_episodes: int = 10
    """whole games played with the trained policy after training (0: none)"""
    eval_checkpoint: str | None = None
    """evaluate this saved model instead of training (uses --eval-episodes, --capture-video)"""
    tensorboard: bool = False
    """also write the metrics as TensorBoard scalars into the run folder (tensorboard --logdir runs)"""
    resume: str | None = None
    """continue the run in this folder (runs/<run>) from its checkpoint.pt; flags that shape the run must match"""
    # --- shared: end ---
    env_id: str = "BreakoutNoFrameskip-v4"
    """gymnasium Atari id: <Game>NoFrameskip-v4, or ALE/<Game>-v5 (sticky actions, p=0.25)"""
    total_timesteps: int = 10_000_000
    """total agent steps over all envs (each is 4 emulator frames)"""
    checkpoint_every: int = 400_000
    """agent steps between checkpoints of the whole training state into runs/<run>/checkpoint.pt (0: none)"""
    bf16: bool = False
    """the networks' forward passes (acting and learning) in bfloat16 under torch.autocast; the losses, the optimizer
    and checkpoints stay fp32. Fast where the hardware has bf16 (GPUs since Ampere, CPUs with AMX or AVX512-BF16)"""
    eval_deterministic: bool = False
    """evaluate with the most likely action (argmax of the logits) instead of a sampled one"""
    dist_timeout: float = 300.0
    """under torchrun: seconds to wait for the other processes (joining, each exchange) before stopping with an error"""

    # Algorithm: the defaults of CleanRL's ppo_atari.py (from OpenAI baselines' Atari PPO2; Huang et al. 2022). The
    # paper's Atari table (Schulman et al. 2017, Table 5) differs: 3 epochs, c1 = 1, lr and epsilon annealed
    num_envs: int = 8
    """parallel game instances"""
    num_steps: int = 128
    """steps per env per rollout; batch = num_envs * num_steps"""
    num_minibatches: int = 4
    """minibatches per epoch (must divide the batch)"""
    update_epochs: int = 4
    """epochs over each batch (K)"""
    learning_rate: float = 2.5e-4
    """Adam step size alpha (annealed linearly unless --no-anneal-lr)"""
    anneal_lr: bool = True
    """anneal the learning rate linearly: lr (1 - (i - 1) / I) at iteration i of I, lr / I at the last"""
    gamma: float = 0.99
    """discount factor gamma"""
    gae_lambda: float = 0.95
    """GAE lambda (0: one-step TD error, 1: reward-to-go minus baseline)"""
    clip_coef: float = 0.1
    """surrogate clipping epsilon"""
    clip_vloss: bool = True
    """clip the value loss around the old values as well"""
    norm_adv: bool = True
    """normalize advantages per minibatch"""
    ent_coef: float = 0.01
    """entropy bonus coefficient c2"""
    vf_coef: float = 0.5
    """value loss coefficient c1"""
    max_grad_norm: float = 0.5
    """global gradient-norm clip"""
    target_kl: float | None = None
    """stop the epochs of an update early once the approximate KL passes this"""


# --- family atari: begin ---
def make_envs(env_id: str, num_envs: int) -> AtariVectorEnv:
    """The DeepMind preprocessing (Mnih et al. 2015; Machado et al. 2018), done in ale-py's C++ threads:
    up to 30 no-ops at reset, FIRE at reset, 4 frames per step max-pooled over the last two, 84x84
    grayscale, 4-frame stack, 108k-frame time limit. A life loss returns terminated=True and the game
    goes on (life_loss_info; episodic_life would restart the game). Rewards come back raw: the script
    logs the real score and clips for learning. SameStep autoreset: a game over returns the next
    game's first observation at once, so every step returned is a real transition."""
    game, sticky = atari_game(env_id)
    preprocessing = dict(noop_max=30, use_fire_reset=True, episodic_life=False, life_loss_info=True)
    preprocessing |= dict(reward_clipping=False, autoreset_mode="SameStep", repeat_action_probability=sticky)
    # one emulator thread per core: the default left the rollout 1.6x slower here (measured); under torchrun, per
    # core of this process's share of the machine
    cores = (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", 1)) or 1
    return AtariVectorEnv(game, num_envs, num_threads=min(num_envs, cores), **preprocessing)


def is_game_over(terminated, truncated, lives, prev_lives) -> np.ndarray:
    """Which envs finished a whole game this step. A termination is a life loss or the game's end; at
    the end the env has already reset (SameStep) and lives jump back up, so a game is over when a
    termination comes without lives going down (or the time limit cut it)."""
    return truncated | (terminated & (lives >= prev_lives))


# --- family atari: end ---


def layer_init(layer: nn.Module, std: float = np.sqrt(2), bias: float = 0.0) -> nn.Module:
    # impl detail: orthogonal weights, zero bias (Huang et al. 2022, detail 2)
    nn.init.orthogonal_(layer.weight, std)
    nn.init.constant_(layer.bias, bias)
    return layer


class Agent(nn.Module):
    """Nature-CNN torso (Mnih et al. 2015) shared by the policy pi_theta(a|s) and the baseline V(s)."""

    def __init__(self, num_actions: int, bf16: bool = False):
        super().__init__()
        self.bf16 = bf16
        self.torso = nn.Sequential(
            layer_init(nn.Conv2d(4, 32, 8, stride=4)),  # [B, 32, 20, 20]
            nn.ReLU(),
            layer_init(nn.Conv2d(32, 64, 4, stride=2)),  # [B, 64, 9, 9]
            nn.ReLU(),
            layer_init(nn.Conv2d(64, 64, 3, stride=1)),  # [B, 64, 7, 7]
            nn.ReLU(),
            nn.Flatten(),  # [B, 3136]
            layer_init(nn.Linear(64 * 7 * 7, 512)),
            nn.ReLU(),
        )
        self.actor = layer_init(nn.Linear(512, num_actions), std=0.01)  # near-uniform initial policy
        self.critic = layer_init(nn.Linear(512, 1), std=1.0)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 frames [B, 4, 84, 84] -> (action logits [B, A], V(s) [B])."""
        # channels_last (NHWC) convolutions: 1.25x faster update on this CPU; scale to [0, 1] in place
        x = obs.contiguous(memory_format=torch.channels_last).float().mul_(1.0 / 255.0)
        # --bf16: convolutions and matmuls in bfloat16 (8 bits of mantissa), the outputs back in fp32: the
        # log-probabilities, the likelihood ratio and the losses are differences of nearby numbers, computed in fp32
        with torch.autocast(x.device.type, torch.bfloat16, enabled=self.bf16):
            hidden = self.torso(x)
            logits, value = self.actor(hidden), self.critic(hidden)
        return logits.float(), value.squeeze(-1).float()


def logprob_and_entropy(logits: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """log pi_theta(a|s) = z_a - log sum_b exp z_b of the given actions [B], and the entropy
    H[pi_theta(.|s)] = -sum_a pi_theta(a|s) log pi_theta(a|s) [B], for the logits z [B, A] of a categorical policy.
    The one function both the rollout (pi_theta_old) and the update (pi_theta) score actions with."""
    logp_all = torch.log_softmax(logits, dim=-1)
    return logp_all.gather(-1, actions.unsqueeze(-1)).squeeze(-1), -(logp_all.exp() * logp_all).sum(-1)


def sample_actions(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """a ~ pi_theta(.|s) and log pi_theta(a|s), for a categorical policy given by logits [B, A]."""
    actions = torch.multinomial(torch.log_softmax(logits, dim=-1).exp(), 1).squeeze(-1)
    return actions, logprob_and_entropy(logits, actions)[0]


def gae(rewards, values, next_values, terminations, truncations, gamma: float, gae_lambda: float) -> torch.Tensor:
    """Generalized advantage estimation over a rollout, all tensors [T, N].

    delta_t = r_t + gamma (1 - terminated_t) V(s'_t) - V(s_t)
    A_t     = delta_t + gamma lambda (1 - episode_over_t) A_{t+1}

    s'_t is the state after step t: s_{t+1}, or the last observation of an episode cut by the time
    limit, which is bootstrapped (the task did not end, only our patience). A termination is not
    bootstrapped. The sum never runs across an episode's end (episode_over = terminated or truncated).
    """
    episode_over = torch.maximum(terminations, truncations)
    deltas = rewards + gamma * (1.0 - terminations) * next_values - values
    advantages = torch.zeros_like(rewards)
    last = torch.zeros_like(rewards[0])
    for t in reversed(range(rewards.shape[0])):
        last = deltas[t] + gamma * gae_lambda * (1.0 - episode_over[t]) * last
        advantages[t] = last
    return advantages


def clipped_surrogate(ratio: torch.Tensor, advantages: torch.Tensor, clip_coef: float) -> torch.Tensor:
    """The policy loss -L^CLIP = -E[min(r_t A_t, clip(r_t, 1 - eps, 1 + eps) A_t)], with the likelihood ratio
    r_t(theta) = pi_theta(a_t | s_t) / pi_theta_old(a_t | s_t) (ratio [B], computed in log space by the caller).

    Why clipping replaces TRPO's line search: the min takes the pessimistic of the two terms, so once
    r_t leaves [1 - eps, 1 + eps] in the direction that would increase the objective the gradient is
    zero; plain first-order SGD can then take many steps on one batch without the policy running far
    from pi_theta_old, which TRPO ensures with a KL constraint, conjugate gradient and a line search.
    """
    return -torch.min(ratio * advantages, torch.clamp(ratio, 1 - clip_coef, 1 + clip_coef) * advantages).mean()


def train(args: Args) -> str | None:
    """Collect num_steps x num_envs transitions, compute GAE, optimize L^CLIP for update_epochs epochs
    of shuffled minibatches; repeat. Returns the run folder (None on the processes other than rank 0)."""
    # torchrun starts world_size copies of this script (see the appendix); without it, rank 0 of 1
    rank, world_size = torchrun_place()
    check_args(args, world_size)
    batch_size = args.num_envs * args.num_steps  # this process's batch
    minibatch_size = batch_size // args.num_minibatches
    # global_step and --total-timesteps count the steps of all processes: world_size x num_envs per step
    global_batch = world_size * batch_size
    num_iterations = args.total_timesteps // global_batch
    # sub-env i of process r is seeded with seed + r * num_envs + i; each process draws its own actions
    seed = args.seed + rank * args.num_envs
    seed_everything(seed, args.torch_deterministic)
    device = join_processes(args, rank, world_size)
    with Run(args, num_iterations * global_batch, writer=rank == 0) as run:
        envs = make_envs(args.env_id, args.num_envs)
        num_actions = envs.single_action_space.n
        agent = Agent(num_actions, args.bf16).to(device, memory_format=torch.channels_last)
        # impl detail: Adam eps 1e-5 instead of 1e-8 (Huang et al. 2022, detail 3)
        optimizer = torch.optim.Adam(agent.parameters(), lr=args.learning_rate, eps=1e-5)

        # Rollout storage; observations stay uint8 (1 byte per pixel) on the device.
        T, N = args.num_steps, args.num_envs
        obs = torch.zeros((T, N, *envs.single_observation_space.shape), dtype=torch.uint8, device=device)
        actions = torch.zeros((T, N), dtype=torch.long, device=device)
        logprobs = torch.zeros((T, N), device=device)
        values = torch.zeros((T, N), device=device)
        final_values = torch.zeros((T, N), device=device)  # V(the observation the time limit cut off)
        rewards = np.zeros((T, N), np.float32)  # on the host while the envs step; copied for GAE
        terminations = np.zeros((T, N), np.float32)
        truncations = np.zeros((T, N), np.float32)

        next_obs_np, info = envs.reset(seed=run.env_seed(seed))
        scores = GameScores(info["lives"])  # the raw score of each env's game, over all its lives

        model = lambda: {"model": agent.state_dict(), "env_id": args.env_id, "num_actions": int(num_actions)}
        checkpoint = lambda: model() | {"optimizer": optimizer.state_dict()}  # to go on (the envs restart their games)
        global_step = resume(run, agent, optimizer, seed, args)  # 0 for a new run
        # under torchrun the update goes through DDP, which averages the gradients (appendix); alone, the agent
        learner = nn.parallel.DistributedDataParallel(agent) if world_size > 1 else agent
        for iteration in range(global_step // global_batch + 1, num_iterations + 1):
            if args.anneal_lr:
                # impl detail: linear learning-rate annealing, to lr / I at the last iteration (Huang et al. 2022, 4)
                optimizer.param_groups[0]["lr"] = args.learning_rate * (1.0 - (iteration - 1.0) / num_iterations)

            # ---- act and observe: one rollout of T steps in N envs, with pi_theta_old ----
            games = []  # (step, score, length) of the games that end in this rollout
            with torch.inference_mode():
                for step in range(T):
                    obs[step] = torch.from_numpy(next_obs_np).to(device, non_blocking=True)
                    logits, values[step] = agent(obs[step])
                    actions[step], logprobs[step] = sample_actions(logits)
                    next_obs_np, reward, terminated, truncated, info = envs.step(actions[step].cpu().numpy())
                    global_step += world_size * N  # the processes step in lockstep, one rollout per iteration
                    # impl detail: learn from clipped rewards sign(r) in {-1, 0, 1} (Mnih et al. 2015)
                    rewards[step] = np.sign(reward)
                    terminations[step], truncations[step] = terminated, truncated
                    games += scores.step(global_step, reward, terminated, truncated, info["lives"])[1]
                    if truncated.any():  # rare: bootstrap from the observation the time limit cut off
                        final_value = agent(torch.from_numpy(info["final_obs"]).to(device))[1]
                        final_values[step] = torch.where(torch.from_numpy(truncated).to(device), final_value, 0.0)
                next_value = agent(torch.from_numpy(next_obs_np).to(device))[1]

                # ---- advantages: reward-to-go minus the baseline V, by GAE(lambda) ----
                rewards_t, terminations_t, truncations_t = (
                    torch.from_numpy(x).to(device) for x in (rewards, terminations, truncations)
                )
                # V(s'_t): the next row of values, the final observation's value where truncated
                next_values = torch.cat([values[1:], next_value.unsqueeze(0)])
                next_values = torch.where(truncations_t.bool(), final_values, next_values)
                advantages = gae(
                    rewards_t, values, next_values, terminations_t, truncations_t, args.gamma, args.gae_lambda
                )
                returns = advantages + values  # targets for V: lambda-returns

            # ---- learn: update_epochs epochs of shuffled minibatches on the clipped surrogate ----
            b_obs = obs.flatten(0, 1)
            b_actions, b_logprobs = actions.reshape(-1), logprobs.reshape(-1)
            b_advantages, b_returns, b_values = advantages.reshape(-1), returns.reshape(-1), values.reshape(-1)
            clipfracs = []
            for _epoch in range(args.update_epochs):
                b_inds = torch.randperm(batch_size, device=device)
                for start in range(0, batch_size, minibatch_size):
                    mb = b_inds[start : start + minibatch_size]
                    logits, new_values = learner(b_obs[mb])
                    new_logprob, entropy = logprob_and_entropy(logits, b_actions[mb])
                    entropy = entropy.mean()

                    # lecture: r_t(theta) = pi_theta(a_t|s_t) / pi_theta_old(a_t|s_t), computed in log space
                    logratio = new_logprob - b_logprobs[mb]
                    ratio = logratio.exp()
                    with torch.no_grad():
                        # impl detail: KL(pi_old || pi_theta) ~ E[(r - 1) - log r] (Schulman's k3 estimator)
                        old_approx_kl = (-logratio).mean()
                        approx_kl = ((ratio - 1) - logratio).mean()
                        clipfracs.append(((ratio - 1.0).abs() > args.clip_coef).float().mean())

                    mb_advantages = b_advantages[mb]
                    if args.norm_adv:
                        # impl detail: per-minibatch advantage normalization (Huang et al. 2022, detail 7); under
                        # torchrun over this process's part of the minibatch, as CleanRL's ppo_atari_multigpu.py
                        mb_advantages = (mb_advantages - mb_advantages.mean()) / (mb_advantages.std() + 1e-8)
                    pg_loss = clipped_surrogate(ratio, mb_advantages, args.clip_coef)

                    # baseline V(s): regression to the lambda-returns
                    v_loss = (new_values - b_returns[mb]) ** 2
                    if args.clip_vloss:
                        # impl detail: value clipping around the old values (Huang et al. 2022, detail 9)
                        v_clipped = b_values[mb] + (new_values - b_values[mb]).clamp(-args.clip_coef, args.clip_coef)
                        v_loss = torch.max(v_loss, (v_clipped - b_returns[mb]) ** 2)
                    v_loss = 0.5 * v_loss.mean()

                    # PPO's objective: maximize L^CLIP - c1 L^VF + c2 H[pi_theta]
                    loss = pg_loss + args.vf_coef * v_loss - args.ent_coef * entropy
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    nn.utils.clip_grad_norm_(agent.parameters(), args.max_grad_norm)
                    optimizer.step()
                if args.target_kl is not None and mean_over_processes(approx_kl, world_size) > args.target_kl:
                    break  # every process on the same mean KL, or their next exchanges would not pair up

            # how much of the returns' variance the baseline explains (1: all, 0: none)
            explained_var = 1 - (b_returns - b_values).var() / b_returns.var().clamp(min=1e-8)
            losses = dict(value_loss=v_loss, policy_loss=pg_loss, entropy=entropy, old_approx_kl=old_approx_kl)
            losses |= dict(
                approx_kl=approx_kl, clipfrac=torch.stack(clipfracs).mean(), explained_variance=explained_var
            )
            # the iteration's one exchange: the losses' means, every process's games, and a stop any process got
            losses, games, stop = exchange(losses, games, run.signal, world_size)
            run.log_games(games)
            charts = {"charts/learning_rate": optimizer.param_groups[0]["lr"], "charts/SPS": run.sps(global_step)}
            run.log(global_step, {f"losses/{k}": v for k, v in losses.items()} | charts)
            run.step_done(global_step, checkpoint, stop=stop)
        envs.close()
        run.step_done(global_step, checkpoint, final=True)
        return run.finish(global_step, model(), partial(evaluate, agent, args, device))  # rank 0 saves and evaluates


# ---------------------------------------------------------------- Appendix: the plumbing
# Everything below serves the algorithm above and can be skipped on a first read: the block every script
# shares (run folder, metrics, checkpoints, resume, signals, the non-finite guard, evaluation records), the
# checks of the input, loading a saved model, and the evaluation.


# --- shared: begin ---
def fail(message: str) -> NoReturn:
    """Stop before training with a one-line error saying what was wrong and what to do."""
    raise SystemExit(f"error: {message}")


def seed_everything(seed: int, torch_deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # needed by deterministic cuBLAS
    torch.backends.cudnn.benchmark = not torch_deterministic
    torch.use_deterministic_algorithms(torch_deterministic)  # cuDNN's deterministic convolutions too
    # deterministic mode also fills new tensors with NaN to expose reads of uninitialized memory;
    # nothing here reads such memory, and the fill cost 20% of the update on CPU (measured)
    torch.utils.deterministic.fill_uninitialized_memory = False


def pick_device(cuda: bool, say: bool = True, bf16: bool = False) -> torch.device:
    """The GPU with --cuda when torch sees one, else the CPU; said in the run's first line, with a warning where
    --bf16 has no bfloat16 hardware to run on (emulated then: the update 7-13x slower on an AVX2 CPU, measured)."""
    device = torch.device("cuda" if cuda and torch.cuda.is_available() else "cpu")
    # CPU kernels of another SIMD width round differently: a seeded run is reproducible on the same kind only
    kind = torch.cuda.get_device_name(device) if device.type == "cuda" else torch.backends.cpu.get_cpu_capability()
    kind += "" if device.type == "cuda" else " kernels"
    cpu_bf16 = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    if bf16 and not (torch.cuda.is_bf16_supported(including_emulation=False) if device.type == "cuda" else cpu_bf16):
        kind += "; no bfloat16 hardware: --bf16 is emulated here, slower than fp32"
    if say:
        print(f"device: {device.type} ({kind})", flush=True)
    return device


# A flag's domain: (test, what the flag must be). Every flag that is a number or a string has one, declared once:
# the shared flags' below, the algorithm's in the script's DOMAINS; a float must also be finite.
POSITIVE = (lambda v: v > 0, "positive")
NON_NEGATIVE = (lambda v: v >= 0, "0 or more")
PROBABILITY = (lambda v: 0 <= v <= 1, "between 0 and 1")
DISCOUNT = (lambda v: 0 < v <= 1, "in (0, 1]")
COUNT = (lambda v: 0 < v <= 2**20, "positive, at most 2**20")  # envs, epochs, iterations: what a run can do
NAME = (lambda v: v != "" and "/" not in v, "a name without /")
PATH = (lambda v: v != "", "a path (not empty)")


def one_of(*choices: str) -> tuple:
    return lambda v: v in choices, ", ".join(choices[:-1]) + f" or {choices[-1]}"


SHARED_DOMAINS = {
    "exp_name": (lambda v: v not in ("", ".", "..") and "/" not in v and "__" not in v, "a folder name, no / or __"),
    # sub-env i is seeded seed + step + i (the step on resume; + rank x num_envs under torchrun): ALE takes 31 bits
    "seed": (lambda v: 0 <= v < 2**29, "between 0 and 2**29 - 1"),
    "total_timesteps": (lambda v: 0 < v <= 2**30, "positive, at most 2**30"),
    "env_id": (lambda v: v != "", "an env id"),
    "checkpoint_every": NON_NEGATIVE,
    "eval_episodes": NON_NEGATIVE,
    "wandb_project_name": NAME,
    "wandb_entity": NAME,
    "eval_checkpoint": PATH,
    "resume": PATH,
}


def check_common(args, domains: dict) -> None:
    """Every flag against its domain (the shared ones and the script's `domains`; None is "not given"), then the
    combinations of the flags every script has and the packages they need: before anything is made."""
    domains = SHARED_DOMAINS | domains
    for name, value in asdict(args).items():
        if value is None or isinstance(value, bool):  # None: not given; a bool is always one of its two values
            continue
        test, must = domains[name]
        if not test(value) or (isinstance(value, float) and not math.isfinite(value)):
            fail(f"--{name.replace('_', '-')} must be {must}, got {value!r}")
    if args.capture_video and args.eval_episodes == 0:
        fail("--capture-video records the evaluation games, but --eval-episodes is 0; give --eval-episodes 1 or more")
    if args.resume and args.eval_checkpoint:
        fail("--resume trains on and --eval-checkpoint only evaluates; give one of them")
    # the packages these flags need, looked up (not imported) before anything is made
    for flag, module, pip in OPTIONAL_PACKAGES:
        if getattr(args, flag[2:].replace("-", "_")) and importlib.util.find_spec(module) is None:
            fail(f"{flag} needs {module}: pip install {pip}")
    if args.track and os.environ.get("WANDB_MODE", "online").lower() not in ("offline", "disabled", "dryrun"):
        import wandb

        # before the run folder exists: without credentials wandb.init would fail (or ask) after it was made
        if not wandb.login(prompt=False, verify=False):
            fail("--track needs a wandb login: run `wandb login`, set WANDB_API_KEY, or WANDB_MODE=offline")


OPTIONAL_PACKAGES = [("--tensorboard", "tensorboard", "tensorboard"), ("--track", "wandb", "'wandb>=0.31'")]
OPTIONAL_PACKAGES += [("--capture-video", "moviepy", "moviepy")]  # gymnasium's RecordVideo writes mp4 with it
# flags a resumed run may change; every other flag shapes the run and must match the saved one
CAN_CHANGE_ON_RESUME = {"resume", "total_timesteps", "checkpoint_every", "checkpoint_replay", "cuda", "buffer_device"}
CAN_CHANGE_ON_RESUME |= {"torch_deterministic", "track", "wandb_project_name", "wandb_entity", "capture_video"}
CAN_CHANGE_ON_RESUME |= {"save_model", "eval_episodes", "tensorboard", "dist_timeout", "bf16"}
SCRIPT = os.path.basename(__file__)


def resume_defaults(args):
    """--resume runs/<run>: the run's saved flags, as the defaults that the flags given now override."""
    try:
        with open(os.path.join(args.resume, "args.json")) as f:
            return type(args)(**{**json.load(f), "resume": args.resume})
    except (OSError, ValueError, TypeError) as e:
        fail(f"cannot resume {args.resume}: {type(e).__name__}: {e}; give a run folder written by {SCRIPT}")


def load_file(path: str, mmap: bool = False):
    """torch.load, safely (weights_only: tensors and plain values, never code), or a one-line error."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as e:  # a missing, truncated or foreign file: say which and why in one line
        why = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        fail(f"cannot read checkpoint {path}: not a whole file written by torch.save ({why})")


def save_atomic(state: dict, path: str) -> None:
    """torch.save into a temporary file, flushed to the disk, then renamed over `path`: a kill at any moment
    leaves either the previous file or the new one, never a torn one."""
    with open(path + ".tmp", "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(path + ".tmp", path)
    folder = os.open(os.path.dirname(path), os.O_RDONLY)  # and the rename itself
    os.fsync(folder)
    os.close(folder)


def first_nonfinite(tree, path: str = "") -> str | None:
    """The path of the first float tensor holding NaN or inf in nested dicts and lists, or None."""
    if isinstance(tree, torch.Tensor):
        return path if tree.is_floating_point() and not torch.isfinite(tree).all() else None
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, list | tuple) else ()
    return next((p for key, value in items if (p := first_nonfinite(value, f"{path}/{key}"))), None)


def new_folder(base: str) -> str:
    """`base`, or base~2, base~3, ... when a run or evaluation started in the same second has it."""
    folder, n = base, 1
    while os.path.exists(folder):
        n += 1
        folder = f"{base}~{n}"
    return folder


def read_checkpoint(args) -> dict:
    """--resume runs/<run>: its checkpoint.pt, checked against the flags given now, or a one-line error."""
    path = os.path.join(args.resume, "checkpoint.pt")
    if not os.path.exists(path):
        fail(f"{path} does not exist: the run stopped before its first checkpoint, or is not a run folder")
    state = load_file(path, mmap=True)  # a replay memory inside is read as it is copied into place
    if not isinstance(state, dict) or not {"args", "global_step", "rng", "run"} <= state.keys():
        fail(f"{path} is not a checkpoint of {SCRIPT} (a --save-model file cannot be resumed)")
    for name, value in asdict(args).items():
        if name not in CAN_CHANGE_ON_RESUME and state["args"].get(name) != value:
            flag = f"--{name.replace('_', '-')}"
            fail(f"{flag} is {value!r} but the run was started with {state['args'].get(name)!r}; drop {flag}")
    if args.total_timesteps < min(state["global_step"], state["args"]["total_timesteps"]):  # raise it, or keep it
        fail(f"--total-timesteps {args.total_timesteps:,} is below the checkpoint's step {state['global_step']:,}")
    if "replay_file" in state:  # written by an earlier version, beside the checkpoint (it may go once resumed)
        state["replay"] = load_file(os.path.join(args.resume, state.pop("replay_file")), mmap=True)
    replay = state.pop("replay", None)  # read as it is copied into the memory, then let go
    # the rest copied out of the mapping: the optimizer would keep it, and the replaced file's disk space, all run
    return copy.deepcopy(state) | ({} if replay is None else {"replay": replay})


class Run:
    """The run folder runs/<env>__<exp>__<seed>__<time>/ with args.json, metrics.csv (global_step, metric, value),
    checkpoint.pt and the model; the same metrics to TensorBoard and wandb; the progress line. With --resume, the
    same folder again: metrics.csv cut back to what the checkpoint had seen, the same wandb run. Used as
    `with Run(...) as run:`, SIGINT and SIGTERM stop it after the current step with a checkpoint (a second signal
    at once), and every sink is closed and the handlers from before restored however the block ends. A process
    that is not the writer (of several that train one model) writes and prints nothing, but checks and stops."""

    def __init__(self, args, total_timesteps: int, writer: bool = True):
        self.args, self.total, self.writer = asdict(args), total_timesteps, writer
        self.state = read_checkpoint(args) if args.resume else None
        self.start_step = self.checkpoint_step = self.state["global_step"] if self.state else 0
        self.saved_now = False  # whether this process wrote the checkpoint of checkpoint_step
        self.dir = args.resume.rstrip("/") if args.resume else None
        if writer and not args.resume:
            name = f"{args.env_id.replace('/', '-')}__{args.exp_name}__{args.seed}__{int(time.time())}"
            self.dir = new_folder(os.path.join("runs", name))
            os.makedirs(self.dir)
        self.csv_file = open(os.path.join(self.dir, "metrics.csv") if writer else os.devnull, "a", newline="")
        if self.state and self.csv_file.tell() > self.state["run"]["metrics_bytes"]:
            self.csv_file.truncate(self.state["run"]["metrics_bytes"])  # rows of steps that are played again
            self.csv_file.seek(0, os.SEEK_END)  # tell() is the new end from here on
        self.csv = csv.writer(self.csv_file)
        if not args.resume:
            self.csv.writerow(["global_step", "metric", "value"])
        self.tensorboard = self.wandb = None
        if writer:
            with open(os.path.join(self.dir, "args.json"), "w") as f:
                json.dump(self.args, f, indent=2)
        if writer and args.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            # on resume, the events after the checkpoint go, as metrics.csv's rows do
            self.tensorboard = SummaryWriter(self.dir, purge_step=self.start_step + 1 if self.state else None)
        if writer and args.track:
            import wandb

            self.wandb = wandb.init(
                project=args.wandb_project_name,
                entity=args.wandb_entity,
                config=self.args,
                name=os.path.basename(self.dir),
                dir=os.path.abspath(self.dir),  # the wandb service process has its own working directory
                id=self.state["run"]["wandb_id"] if self.state else None,
                resume="allow",
                save_code=True,
            )
            # x axis: global_step, logged with every point (two points logged at one step are both kept)
            self.wandb.define_metric("global_step")
            self.wandb.define_metric("*", step_metric="global_step")
        self.returns = deque(self.state["run"]["returns"] if self.state else (), maxlen=100)  # last 100 games' scores
        self.start = self.last_print = time.time()
        self.signal, self.training_over = 0, False

    def __enter__(self) -> "Run":
        self.handlers = {s: signal.signal(s, self.on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exception) -> None:
        for s, handler in self.handlers.items():
            signal.signal(s, handler)
        self.csv_file.close()
        if self.tensorboard is not None:
            self.tensorboard.close()
        if self.wandb is not None:
            self.wandb.finish()

    def resume(self) -> dict | None:
        """The checkpoint's state, with torch's (and CUDA's) generators set as they were; None for a new run. Call
        it last before the loop, after everything that draws random numbers at the start."""
        state, self.state = self.state, None  # the caller's now: let go of it once it is loaded
        if state is not None:
            torch.set_rng_state(state["rng"]["torch"])
            if torch.cuda.is_available() and len(state["rng"]["cuda"]) == torch.cuda.device_count():
                torch.cuda.set_rng_state_all(state["rng"]["cuda"])
            if self.writer:
                print(f"resumed {self.dir} at step {self.start_step:,}", flush=True)
        return state

    def env_seed(self, seed: int) -> int:
        """Seed of the envs' first reset: --seed, or on resume a new one (the episodes in progress restart)."""
        return seed + self.start_step

    def log(self, global_step: int, metrics: dict) -> None:
        """Numbers (or one-element tensors) at one step, to every sink: metrics.csv, TensorBoard, wandb."""
        metrics = {k: v.item() if isinstance(v, torch.Tensor) else float(v) for k, v in metrics.items()}
        for name, value in metrics.items():
            if not math.isfinite(value):
                self.stop_nonfinite(f"{name} is {value}", global_step)
            self.csv.writerow([global_step, name, value])
            if self.tensorboard is not None:
                self.tensorboard.add_scalar(name, value, global_step)
        if self.wandb is not None:
            self.wandb.log(metrics | {"global_step": global_step})

    def log_games(self, games: list[tuple[int, float, int]]) -> None:
        """charts/episodic_return and charts/episodic_length of the games (or episodes) (step, return, length)."""
        for global_step, episode_return, length in games:
            self.returns.append(float(episode_return))
            self.log(global_step, {"charts/episodic_return": episode_return, "charts/episodic_length": length})

    def sps(self, global_step: int) -> float:
        """Steps per second since this process started (or resumed) the run."""
        return (global_step - self.start_step) / max(time.time() - self.start, 1e-9)

    def step_done(self, global_step: int, checkpoint: Callable[[], dict], final: bool = False, stop: int | None = None):
        """After each step: the progress line every 5 s, a checkpoint every --checkpoint-every steps (and at the
        end), and on SIGINT or SIGTERM (or `stop`, the signal that processes training together agreed on) a
        checkpoint and the exit, 130 or 143."""
        stop = self.signal if stop is None else stop
        if self.writer and not final and (time.time() - self.last_print >= 5 or global_step >= self.total):
            self.last_print = time.time()
            self.csv_file.flush()  # a kill loses at most the metrics of the last few seconds
            sps = self.sps(global_step)
            recent = f"{np.mean(self.returns):.1f} (last {len(self.returns)})" if self.returns else "-"
            eta = timedelta(seconds=int(max(self.total - global_step, 0) / max(sps, 1e-9)))
            print(f"step {global_step:,}/{self.total:,} | {sps:,.0f} SPS | return {recent} | ETA {eta}", flush=True)
        every = self.args["checkpoint_every"]
        due = every > 0 and (final or stop or global_step // every > self.checkpoint_step // every)
        if due and not (self.saved_now and global_step == self.checkpoint_step):  # not twice at one step
            self.save(global_step, checkpoint())
        if stop:
            how = f"resume with: python {SCRIPT} --resume {self.dir}"
            how = how if every > 0 else "no checkpoint written (--checkpoint-every 0)"
            if self.writer:
                print(f"interrupted at step {global_step:,}; {how}", flush=True)
            raise SystemExit(128 + stop)
        self.training_over = final

    def save(self, global_step: int, state: dict) -> None:
        """checkpoint.pt, unless a tensor went NaN or inf."""
        if (where := first_nonfinite(state)) is not None:
            self.stop_nonfinite(f"{where.lstrip('/')} holds NaN or inf", global_step)
        self.checkpoint_step, self.saved_now = global_step, True
        if not self.writer:
            return
        self.csv_file.flush()
        if self.tensorboard is not None:
            self.tensorboard.flush()
        wandb_id = self.wandb.id if self.wandb is not None else None
        state["run"] = {"metrics_bytes": self.csv_file.tell(), "returns": list(self.returns), "wandb_id": wandb_id}
        cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
        state |= {"args": self.args, "global_step": global_step, "rng": {"torch": torch.get_rng_state(), "cuda": cuda}}
        save_atomic(state, os.path.join(self.dir, "checkpoint.pt"))

    def stop_nonfinite(self, what: str, global_step: int) -> NoReturn:
        if not self.writer:  # the writer says it, for all (they check the same numbers)
            raise SystemExit(1)
        path = os.path.join(self.dir, "checkpoint.pt")
        kept = f"{path} (step {self.checkpoint_step:,}) is kept" if os.path.exists(path) else "no checkpoint yet"
        fail(f"{what} at step {global_step:,}; training stopped, {kept}")

    def on_signal(self, signum: int, frame) -> None:
        if self.signal:  # the second: stop now (the last checkpoint is whole: it is written atomically)
            os._exit(128 + signum)
        self.signal = signum
        if self.training_over:  # in the evaluation: the final checkpoint is written, stop here
            if self.writer:
                print(f"interrupted in the evaluation, after the final checkpoint of {self.dir}", flush=True)
            raise SystemExit(128 + signum)

    def finish(self, global_step: int, model: dict, play: Callable) -> str | None:
        """After training: --save-model writes `model` into the run folder; play(video_dir) plays --eval-episodes
        games or episodes, logged as eval/episodic_return (with --track, the videos too)."""
        if self.writer and self.args["save_model"]:
            torch.save(model, os.path.join(self.dir, f"{self.args['exp_name']}.pt"))
            print(f"saved {os.path.join(self.dir, self.args['exp_name'])}.pt")
        if self.writer and self.args["eval_episodes"] > 0:
            video_dir = os.path.join(self.dir, "videos") if self.args["capture_video"] else None
            scores = play(video_dir=video_dir)
            for episode_return in scores:
                self.log(global_step, {"eval/episodic_return": episode_return})
            report(scores, self.args)
            if self.wandb is not None and video_dir:
                import wandb

                for name in sorted(f for f in os.listdir(video_dir) if f.endswith(".mp4")):
                    self.wandb.log({"eval/video": wandb.Video(os.path.join(video_dir, name))})
        return self.dir if self.writer else None


def report(scores: list[float], args: dict, folder: str | None = None) -> None:
    """The mean line; with a folder (an evaluation of its own), scores.json: each episode's return, and the flags."""
    record = {"mean": float(np.mean(scores)), "std": float(np.std(scores)), "returns": scores, "args": args}
    print(f"{args['env_id']}: mean return {record['mean']:.1f} +- {record['std']:.1f} over {len(scores)} episodes")
    if folder:
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, "scores.json"), "w") as f:
            json.dump(record, f, indent=2)
        print(f"wrote {folder}", flush=True)


def evaluate_checkpoint(args, domains: dict, load_checkpoint: Callable, evaluate: Callable, parse: Callable) -> None:
    """--eval-checkpoint: --eval-episodes episodes of the saved model, on its env or the --env-id given (parse(env_id)
    reads the flags again with the model's env as the default), into a new folder eval-<time>/ beside it."""
    check_common(args, domains)  # every flag (--resume cannot come with it)
    if args.eval_episodes <= 0:
        fail("--eval-episodes must be positive to evaluate a checkpoint")
    seed_everything(args.seed, args.torch_deterministic)
    device = pick_device(args.cuda)
    model, env_id = load_checkpoint(args.eval_checkpoint, device)
    args = parse(env_id)
    # made once the env and the network are checked; the process id keeps two evaluations in one second apart
    name = time.strftime(f"eval-%Y%m%d-%H%M%S-{os.getpid()}")
    folder = new_folder(os.path.join(os.path.dirname(args.eval_checkpoint), name))
    # the env is made and checked against the network before anything is written
    scores = evaluate(model, args, device, video_dir=os.path.join(folder, "videos") if args.capture_video else None)
    report(scores, asdict(args), folder)


# --- shared: end ---


# --- family atari-appendix: begin ---
def atari_game(env_id: str) -> tuple[str, float]:
    """Map a gymnasium Atari id to (ROM name, sticky-action probability), or fail with close matches."""
    import ale_py

    gym.register_envs(ale_py)
    # NoFrameskip-v4 (frameskip 1) and v5 (frameskip 4) ids; v4 without NoFrameskip skips 2-4 frames at random
    ids = [
        i for i, s in gym.registry.items() if s.entry_point == "ale_py.env:AtariEnv" and s.kwargs["frameskip"] in (1, 4)
    ]
    if env_id in gym.registry and gym.spec(env_id).entry_point != "ale_py.env:AtariEnv":
        fail(f"{env_id} is not an Atari game: reinforce.py, natural_pg.py or trpo.py run it ({SCRIPT} plays Atari)")
    if env_id not in ids:
        close = difflib.get_close_matches(env_id, ids, n=3, cutoff=0.6)
        fail(f"unknown Atari env id {env_id!r}" + (f"; did you mean {', '.join(close)}?" if close else ""))
    kwargs = gym.spec(env_id).kwargs
    return kwargs["game"], kwargs["repeat_action_probability"]


def make_eval_env(env_id: str, num_actions: int, video_dir: str | None = None) -> gym.Env:
    """One gymnasium env for evaluation whose preprocessing gives the same frames as the training envs, and
    that can render for video; a network of another game (--env-id) fails in one line before a video is made."""
    atari_game(env_id)  # fails on an unknown id
    check_opencv(1)
    # v5 ids skip frames in the emulator; here the wrapper skips 4 and max-pools, as the vector env does
    env = gym.make(env_id, frameskip=1, render_mode="rgb_array" if video_dir else None)
    if env.action_space.n != num_actions:
        fail(f"{env_id} has {env.action_space.n} actions; the network has {num_actions} (another game's)")
    env = gym.wrappers.AtariPreprocessing(env, noop_max=30, frame_skip=4, screen_size=84, terminal_on_life_loss=False)
    env = gym.wrappers.FrameStackObservation(env, 4, padding_type="zero")
    if video_dir:
        env = gym.wrappers.RecordVideo(env, video_dir, episode_trigger=lambda e: True, name_prefix="eval")
    return env


def check_opencv(eval_episodes: int) -> None:
    """The evaluation env resizes frames with OpenCV (gymnasium's AtariPreprocessing): without it, fail now, before
    anything is made, not after hours of training."""
    if eval_episodes > 0 and importlib.util.find_spec("cv2") is None:
        fail("the evaluation needs OpenCV: pip install opencv-python-headless (or give --eval-episodes 0)")


def play_games(env: gym.Env, act: Callable[[np.ndarray], int], episodes: int, seed: int) -> list[float]:
    """Whole games (all lives) with act(obs) choosing each action, FIRE pressed at each game's start where the game
    has it, as the training envs do; a line per game; their raw scores."""
    scores = []
    for episode in range(episodes):
        obs, _ = env.reset(seed=seed if episode == 0 else None)
        meanings, episode_return, episode_over = env.unwrapped.get_action_meanings(), 0.0, False
        if "FIRE" in meanings:
            obs, episode_return, *_ = env.step(meanings.index("FIRE"))
        while not episode_over:
            obs, reward, terminated, truncated, _ = env.step(act(np.asarray(obs)))
            episode_return += reward
            episode_over = terminated or truncated
        scores.append(float(episode_return))
        print(f"eval episode {episode + 1}/{episodes}: return {episode_return:.1f}", flush=True)
    env.close()
    return scores


class GameScores:
    """The raw score and length of each env's current game, over all its lives (what papers report; the agent
    learns from sign(r) and from life losses as episode ends), and the games that end."""

    def __init__(self, lives: np.ndarray):
        self.lives, self.score, self.length = lives, np.zeros(len(lives)), np.zeros(len(lives), dtype=np.int64)

    def step(self, global_step: int, reward, terminated, truncated, lives) -> tuple[np.ndarray, list]:
        """After a step of the N envs: which games are over [N], and (step, score, length) of each."""
        game_over = is_game_over(terminated, truncated, lives, self.lives)
        self.lives = lives
        self.score += reward
        self.length += 1
        ended = [(global_step, self.score[i], self.length[i]) for i in np.flatnonzero(game_over)]
        self.score[game_over] = 0
        self.length[game_over] = 0
        return game_over, ended


# --- family atari-appendix: end ---


# the domain of each flag of the algorithm (the shared flags' are in SHARED_DOMAINS)
DOMAINS = dict(num_envs=COUNT, num_steps=COUNT, num_minibatches=COUNT, update_epochs=COUNT, learning_rate=POSITIVE)
DOMAINS |= dict(gamma=DISCOUNT, gae_lambda=PROBABILITY, clip_coef=POSITIVE, ent_coef=NON_NEGATIVE)
DOMAINS |= dict(vf_coef=NON_NEGATIVE, max_grad_norm=POSITIVE, target_kl=POSITIVE, dist_timeout=POSITIVE)


def check_args(args: Args, world_size: int) -> None:
    """Fail on bad input before anything is allocated."""
    check_common(args, DOMAINS)
    batch_size = args.num_envs * args.num_steps
    if batch_size % args.num_minibatches:
        fail(
            f"--num-minibatches {args.num_minibatches} does not divide the batch of {batch_size} "
            f"(--num-envs {args.num_envs} x --num-steps {args.num_steps})"
        )
    if args.norm_adv and batch_size // args.num_minibatches < 2:
        fail(
            "minibatches of 1 step: normalizing advantages (--norm-adv) divides by the std of one number (NaN); "
            "use fewer --num-minibatches or --no-norm-adv"
        )
    if args.total_timesteps < world_size * batch_size:
        of = f" of the {world_size} processes" if world_size > 1 else ""
        fail(
            f"--total-timesteps {args.total_timesteps} is less than one batch{of} ({world_size * batch_size}); raise it"
        )
    atari_game(args.env_id)
    check_opencv(args.eval_episodes)
    # with --cuda and GPUs, each process of this machine needs one of its own (NCCL refuses to share one);
    # without any GPU --cuda means what it means for one process: the CPU
    local_size = int(os.environ.get("LOCAL_WORLD_SIZE", world_size))
    if world_size > 1 and args.cuda and torch.cuda.is_available() and torch.cuda.device_count() < local_size:
        fail(
            f"--cuda: {local_size} processes on this machine but {torch.cuda.device_count()} GPU(s) visible; "
            f"start torchrun with --nproc-per-node {torch.cuda.device_count()}, or use --no-cuda"
        )


def resume(run: Run, agent: Agent, optimizer: torch.optim.Optimizer, seed: int, args: Args) -> int:
    """With --resume: the network, the optimizer and the generators as the checkpoint holds them, and its step."""
    if (state := run.resume()) is None:
        return 0
    agent.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if not run.writer:  # under torchrun, every process got rank 0's generators: the others draw other numbers again
        seed_everything(seed + state["global_step"], args.torch_deterministic)
    return state["global_step"]


# ---------------------------------------------------------------- many processes, one model (torchrun)
#
# torchrun starts world_size copies of this script and tells each its place (WORLD_SIZE, RANK, LOCAL_RANK,
# MASTER_ADDR, ...). Each plays its own --num-envs games and collects its own rollout. The update runs through
# DistributedDataParallel (DDP), as nanoGPT's train.py does: wrapping the agent copies rank 0's parameters to every
# process, and each backward averages the minibatch gradients over the processes, so that all take the same step
# and their networks stay equal; acting, saving and evaluating use the plain agent. Once per iteration the
# processes exchange their losses, games and signals (`exchange`). A process that dies or hangs makes the others'
# next exchange fail (at once, or after --dist-timeout); __main__ turns that into one line.
#
# lecture: the gradient estimate is a mean over the samples of the minibatch, so for P processes with B
#     samples each,  grad (1/(P B)) sum_p sum_b l_pb = (1/P) sum_p grad (1/B) sum_b l_pb :
# the mean of the P minibatch gradients is the gradient of the objective on their union, a P-times larger
# minibatch; the P processes take the step one process would take on P B samples. The gradient-norm clip acts on
# this averaged (global) gradient, as for one process.


def torchrun_place() -> tuple[int, int]:
    """This process's rank and the number of processes, from torchrun's variables; 0 of 1 without them."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def join_processes(args: Args, rank: int, world_size: int) -> torch.device:
    """The device of this process (said in the first line, once); under torchrun, also join the others (NCCL on
    GPUs, gloo on CPUs), waiting --dist-timeout for them at most, as for every exchange after it."""
    device = pick_device(args.cuda, rank == 0, args.bf16)
    if world_size == 1:
        return device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timedelta(seconds=args.dist_timeout))
    return device


def mean_over_processes(x: torch.Tensor, world_size: int) -> float:
    """The mean of a scalar over the processes."""
    if world_size > 1:
        x = x.clone()
        dist.all_reduce(x)  # SUM (gloo has no AVG)
        x /= world_size
    return x.item()


def exchange(losses: dict, games: list, signum: int, world_size: int) -> tuple[dict, list, int]:
    """The iteration's one exchange: the mean of each loss over the processes (so that all log the same numbers, and
    the non-finite guard stops all of them at the same step), every process's games by step (rank 0 logs them), and
    the signal any process got (torchrun forwards its signal to every process, a scheduler may signal only one), so
    that all stop after the same iteration. Alone: the losses and games as given, and no agreed signal (None: the
    run's own, at the moment it is asked)."""
    if world_size == 1:
        return losses, games, None
    everyone = [None] * world_size
    dist.all_gather_object(everyone, ({name: value.item() for name, value in losses.items()}, games, signum))
    losses = {name: float(np.mean([theirs[name] for theirs, _, _ in everyone])) for name in losses}
    games = sorted((game for _, theirs, _ in everyone for game in theirs), key=lambda game: game[0])
    return losses, games, max(theirs for _, _, theirs in everyone)


def lost_other_process(e: Exception) -> bool:
    """Whether an error is a failed exchange with the other processes: gloo raises RuntimeErrors of its own (a
    closed connection, a timeout), NCCL and the rendezvous torch's DistErrors, a launch by hand without torchrun's
    MASTER_ADDR a ValueError of the rendezvous."""
    return "WORLD_SIZE" in os.environ and (isinstance(e, dist.DistError) or "gloo" in str(e) or "rendezvous" in str(e))


def load_checkpoint(path: str, device: torch.device) -> tuple[Agent, str]:
    """Load a model saved by --save-model, safely (weights_only: tensors and plain values, no code)."""
    checkpoint = load_file(path, mmap=True)  # on the CPU; the network goes to the device below
    if not isinstance(checkpoint, dict) or not {"model", "env_id", "num_actions"} <= checkpoint.keys():
        fail(f"{path} is not a {SCRIPT} checkpoint (expected keys model, env_id, num_actions)")
    agent = Agent(checkpoint["num_actions"]).to(device, memory_format=torch.channels_last)
    try:
        agent.load_state_dict(checkpoint["model"])
    except RuntimeError as e:
        fail(f"checkpoint {path} does not fit {SCRIPT}'s network: {str(e).splitlines()[1].strip()}")
    return agent, checkpoint["env_id"]


def evaluate(agent: Agent, args: Args, device: torch.device, video_dir: str | None = None) -> list[float]:
    """Play --eval-episodes whole games (all lives, raw score) with actions sampled from pi_theta (with
    --eval-deterministic its most likely ones), on a single gymnasium env whose preprocessing gives the same frames
    as the training envs (and can render for video)."""
    env = make_eval_env(args.env_id, agent.actor.out_features, video_dir)

    def act(obs: np.ndarray) -> int:
        logits, _ = agent(torch.from_numpy(obs).unsqueeze(0).to(device))
        return (logits.argmax(-1) if args.eval_deterministic else sample_actions(logits)[0]).item()

    with torch.inference_mode():
        return play_games(env, act, args.eval_episodes, args.seed)


if __name__ == "__main__":
    args = tyro.cli(Args)
    if args.resume:  # the run's saved flags become the defaults, and the flags given now go on top
        args = tyro.cli(Args, default=resume_defaults(args))
    if args.eval_checkpoint:
        # an --env-id given wins over the model's: the flags read again with the model's env as the default
        parse = lambda env_id: tyro.cli(Args, default=replace(args, env_id=env_id))
        evaluate_checkpoint(args, DOMAINS, load_checkpoint, evaluate, parse)
    else:
        try:
            train(args)
            if dist.is_initialized():
                dist.destroy_process_group()
        except (RuntimeError, ValueError) as e:  # the one place a lost process is caught, whichever exchange noticed
            if not lost_other_process(e):
                raise
            where = f"rank {os.environ.get('RANK', 0)} of {os.environ['WORLD_SIZE']}"
            why = f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:200]}"
            fail(f"process group: {where} stopped: another process is gone or did not answer ({why})")
