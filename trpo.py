"""TRPO: the lecture's natural gradient step plus a line search, in one file.

natural_pg.py steps along u = F^{-1} grad U until the quadratic model of the KL reaches epsilon, and trusts the
model. TRPO (Schulman et al. 2015) checks: it maximizes a surrogate objective built from the batch subject to a
bound delta on the KL, and backtracks until the *measured* KL is within delta and the surrogate has improved:

    maximize_theta  L(theta) = E_{s,a ~ pi_old}[ pi_theta(a|s) / pi_theta_old(a|s) A(s, a) ]   (likelihood ratio)
    subject to      KL(theta) = E_s[ D_KL(pi_theta_old(.|s) || pi_theta(.|s)) ] <= delta

1. g = grad L(theta_old) is the policy gradient (the ratio is 1 at theta_old), and KL ~ 1/2 dtheta^T F dtheta;
2. u = (F + damping I)^{-1} g by conjugate gradient on Fisher-vector products (F is never formed; damped, as F
   from a batch is singular): the lecture's u = F^{-1} grad U, named u as in natural_pg.py;
3. the largest step along u inside the (damped) quadratic model: beta = sqrt(2 delta / (u^T (F + damping I) u));
4. line search: theta = theta_old + alpha^j beta u for j = 0, 1, ..., the first whose measured KL <= delta and
   whose L(theta) > L(theta_old); if none, theta stays theta_old.
A(s, a) is the reward-to-go minus the baseline V(s), estimated by GAE(lambda) with a learned V.

Papers: Schulman et al. 2015, "Trust Region Policy Optimization"; Schulman et al. 2016, "High-Dimensional
Continuous Control Using Generalized Advantage Estimation"; Achiam 2018, Spinning Up (TRPO); Raffin et al.
2021, Stable-Baselines3 (sb3-contrib's TRPO and the RL Zoo's tuned hyperparameters, the defaults here).

Examples:
    python trpo.py
    python trpo.py --env-id Hopper-v5 --normalize-obs --normalize-reward --total-timesteps 1000000
    python trpo.py --env-id HalfCheetah-v5 --normalize-obs --normalize-reward --max-kl 0.04 --save-model
    python trpo.py --eval-checkpoint runs/<run>/trpo.pt --eval-episodes 10 --eval-deterministic

Install, for this file alone (training and its evaluation, classic control):
    pip install "torch>=2.5" "gymnasium>=1.1" "tyro>=0.9.29" numpy
and for a flag or env that needs more: --tensorboard: tensorboard; --track: "wandb>=0.31"; --capture-video: moviepy
and, for classic-control frames, "gymnasium[classic-control]" (pygame-ce); MuJoCo ids (Hopper-v5, ...):
"gymnasium[mujoco]"; Box2D ids (LunarLander-v3, ...): "gymnasium[box2d]". Atari ids: ppo_atari.py, dqn_atari.py or
rainbow_atari.py (and ale-py).

Symbols: delta -> args.max_kl, alpha -> args.backtrack_coef, gamma -> args.gamma, lambda -> args.gae_lambda,
F + damping I -> args.damping, theta -> the policy network (and log sigma for Box actions), V -> the value network.

Deliberate departures from the paper (all as sb3-contrib's TRPO, so that results compare):
- the line search accepts any improvement of L (the paper's code asked for 10% of the expected one);
- advantages are normalized per batch; V is a separate network fitted by Adam on minibatches;
- observations (and, optionally, rewards) are scaled by running statistics, updated between updates.
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
import torch.nn as nn
import tyro


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
    env_id: str = "CartPole-v1"
    """gymnasium id of an env with a Box observation and a Discrete or Box action space (MuJoCo: Hopper-v5, ...)"""
    total_timesteps: int = 100_000
    """total env steps over all envs (rounded down to whole batches)"""
    checkpoint_every: int = 250_000
    """env steps between checkpoints of the whole training state into runs/<run>/checkpoint.pt (0: none)"""
    eval_deterministic: bool = False
    """evaluate with the most likely action (argmax, or the Gaussian's mean) instead of a sampled one"""

    # Algorithm: the RL Zoo's tuned MuJoCo set for sb3-contrib's TRPO (hyperparams/trpo.yml); delta, the
    # backtracking factor and the number of tries are also the paper's and Spinning Up's
    num_envs: int = 2
    """parallel envs (gymnasium's SyncVectorEnv)"""
    num_steps: int = 1024
    """steps per env per update; batch = num_envs * num_steps"""
    max_kl: float = 0.01
    """delta: the bound on the mean KL(pi_old || pi_theta) over the batch's states"""
    cg_iters: int = 25
    """conjugate-gradient iterations for u = F^{-1} g (the RL Zoo's MuJoCo set: 25; sb3-contrib's default 15)"""
    damping: float = 0.1
    """solve (F + damping I) u = g"""
    backtrack_coef: float = 0.8
    """alpha: each backtracking try shrinks the step by this factor"""
    backtrack_iters: int = 10
    """line-search tries before the update is rejected"""
    gamma: float = 0.99
    """discount factor gamma"""
    gae_lambda: float = 0.95
    """GAE lambda (0: one-step TD error, 1: reward-to-go minus baseline; Spinning Up: 0.97)"""
    norm_adv: bool = True
    """normalize the advantages of each batch to mean 0, std 1"""
    vf_learning_rate: float = 1e-3
    """Adam step size of the value network V"""
    vf_epochs: int = 20
    """epochs of shuffled minibatches fitting V to the lambda-returns after each update"""
    vf_minibatch_size: int = 128
    """minibatch size of the value fit"""
    normalize_obs: bool = False
    """standardize observations by running mean and std (kept in the checkpoint; the RL Zoo's MuJoCo setup)"""
    normalize_reward: bool = False
    """divide rewards by the running std of the discounted return (the RL Zoo's MuJoCo setup)"""


# --- family policy-gradient: begin ---
def make_envs(env_id: str, num_envs: int, seed: int) -> gym.vector.VectorEnv:
    """N copies in one process, their action space seeded. SameStep autoreset (as Stable-Baselines3's VecEnv): an
    episode's end returns the next episode's first observation at once (the last one is in info["final_obs"]),
    so every step returned is a real transition."""
    autoreset = {"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP}
    envs = gym.make_vec(env_id, num_envs, vectorization_mode="sync", vector_kwargs=autoreset)
    envs.action_space.seed(seed)
    return envs


def categorical_logprob(logits: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """log pi_theta(a|s) = z_a - log sum_b exp z_b, for logits z [B, A] and actions [B]."""
    return torch.log_softmax(logits, dim=-1).gather(-1, actions.unsqueeze(-1)).squeeze(-1)


def gaussian_logprob(actions: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """log pi_theta(a|s) = -sum_i [ (a_i - mu_i)^2 / (2 sigma_i^2) + log sigma_i + log(2 pi) / 2 ], [B].
    `actions` are the sampled ones, before any clipping to the env's bounds: the clip is the env's."""
    z = (actions - mean) / log_std.exp()
    return -(0.5 * z**2 + log_std + 0.5 * np.log(2 * np.pi)).sum(-1)


# --- family policy-gradient: end ---


# --- family policy-agent: begin ---
def layer_init(layer: nn.Linear, std: float = np.sqrt(2)) -> nn.Linear:
    # impl detail: orthogonal weights, zero bias (Huang et al. 2022, "37 implementation details", detail 2; SB3)
    nn.init.orthogonal_(layer.weight, std)
    nn.init.constant_(layer.bias, 0.0)
    return layer


def mlp(inputs: int, outputs: int, out_std: float, hidden: int = 64) -> nn.Sequential:
    return nn.Sequential(
        layer_init(nn.Linear(inputs, hidden)),
        nn.Tanh(),
        layer_init(nn.Linear(hidden, hidden)),
        nn.Tanh(),
        layer_init(nn.Linear(hidden, outputs), std=out_std),
    )


class Agent(nn.Module):
    """The policy pi_theta(a|s) (categorical for Discrete, diagonal Gaussian for Box actions) and, separately,
    the value V(s), both 64-64 tanh MLPs (SB3's MlpPolicy); the running statistics of the observations."""

    def __init__(self, obs_dim: int, action_dim: int, discrete: bool, normalize_obs: bool = False, hidden: int = 64):
        super().__init__()
        self.discrete, self.normalize_obs = discrete, normalize_obs
        # logits [B, A] or the Gaussian's mean [B, A]; small last layer -> near-uniform / near-zero start
        self.actor = mlp(obs_dim, action_dim, out_std=0.01, hidden=hidden)
        self.critic = mlp(obs_dim, 1, out_std=1.0, hidden=hidden)
        # a state-independent log sigma per action dimension (also part of theta)
        self.log_std = None if discrete else nn.Parameter(torch.zeros(action_dim))
        self.obs_rms = RunningMeanStd((obs_dim,))

    def policy_params(self) -> list[nn.Parameter]:
        """theta: the actor's weights, then log sigma for Box actions (the order of every flat vector)."""
        return list(self.actor.parameters()) + ([] if self.discrete else [self.log_std])

    def normalize(self, obs: torch.Tensor) -> torch.Tensor:
        if not self.normalize_obs:
            return obs
        # impl detail: clip standardized observations to [-10, 10] (as Stable-Baselines3's VecNormalize)
        return ((obs - self.obs_rms.mean) / torch.sqrt(self.obs_rms.var + 1e-8)).clamp(-10.0, 10.0)

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        return self.critic(self.normalize(obs)).squeeze(-1)  # [B] (or [T, N])

    def sample(self, obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        """a ~ pi_theta(.|s) (or its mode): [B] action indices, or [B, A] unclipped Gaussian actions."""
        out = self.actor(self.normalize(obs))
        if self.discrete:
            probs = torch.softmax(out, dim=-1)
            return probs.argmax(-1) if deterministic else torch.multinomial(probs, 1).squeeze(-1)
        return out if deterministic else out + self.log_std.exp() * torch.randn_like(out)

    def logprob_and_entropy(self, obs: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """log pi_theta(a|s) [B] and the policy's entropy H[pi_theta(.|s)] [B]."""
        out = self.actor(self.normalize(obs))
        if self.discrete:
            logp_all = torch.log_softmax(out, dim=-1)
            return categorical_logprob(out, actions), -(logp_all.exp() * logp_all).sum(-1)
        entropy = (self.log_std + 0.5 * np.log(2 * np.pi * np.e)).sum().expand(out.shape[0])
        return gaussian_logprob(actions, out, self.log_std), entropy

    def mean_kl(self, obs: torch.Tensor, old_out: torch.Tensor, old_log_std: torch.Tensor | None) -> torch.Tensor:
        """(1/B) sum_s D_KL(pi_old(.|s) || pi_theta(.|s)) over the states [B], from pi_old's outputs."""
        out = self.actor(self.normalize(obs))
        if self.discrete:
            return categorical_kl(old_out, out).mean()
        return gaussian_kl(old_out, old_log_std, out, self.log_std).mean()


def categorical_kl(old_logits: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """D_KL(p || q) = sum_a p(a) log(p(a) / q(a)) per state [B], for p = softmax(old_logits), q = softmax(logits)."""
    old_logp, logp = torch.log_softmax(old_logits, dim=-1), torch.log_softmax(logits, dim=-1)
    return (old_logp.exp() * (old_logp - logp)).sum(-1)


def gaussian_kl(old_mean, old_log_std, mean, log_std) -> torch.Tensor:
    """D_KL(N(mu_0, sigma_0^2) || N(mu, sigma^2)) per state [B], summed over the action dimensions i:
    sum_i [ log(sigma_i / sigma_0i) + (sigma_0i^2 + (mu_0i - mu_i)^2) / (2 sigma_i^2) - 1/2 ]."""
    var, old_var = torch.exp(2 * log_std), torch.exp(2 * old_log_std)
    return (log_std - old_log_std + (old_var + (old_mean - mean) ** 2) / (2 * var) - 0.5).sum(-1)


# --- family policy-agent: end ---


def gae(rewards, values, next_values, terminations, truncations, gamma: float, gae_lambda: float) -> torch.Tensor:
    """Generalized advantage estimation over a rollout, all tensors [T, N]:

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


# --- family fisher: begin ---
def flat_grad(y: torch.Tensor, params: list, **kwargs) -> torch.Tensor:
    """dy/dtheta as one vector [P], in the order of params."""
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(y, params, **kwargs)])


def fisher_vector_product(kl_grad: torch.Tensor, params: list, v: torch.Tensor, damping: float) -> torch.Tensor:
    """(F + lambda I) v, without forming F: F is the Hessian of the mean KL at theta = theta_old,

        F v = grad_theta( grad_theta D_KL(pi_old || pi_theta)^T v )        (double backprop)

    kl_grad = grad_theta D_KL, built with create_graph=True. Why the Hessian is F: D_KL(pi_old || pi_theta)
    = E_{a ~ pi_old}[log pi_old - log pi_theta] is 0 and minimal at theta_old, so its gradient vanishes
    and its Hessian is E[-grad^2 log pi_theta] = E[grad log pi grad log pi^T] (the second Bartlett identity).
    """
    return flat_grad(kl_grad @ v, params, retain_graph=True) + damping * v


def conjugate_gradient(Av: Callable[[torch.Tensor], torch.Tensor], b: torch.Tensor, iters: int) -> torch.Tensor:
    """x ~ A^{-1} b for a symmetric positive definite A known only through v -> A v (Hestenes & Stiefel 1952;
    Nocedal & Wright, Algorithm 5.2), starting from x = 0:

        alpha = r^T r / p^T A p,   x <- x + alpha p,   r <- r - alpha A p,   p <- r + (r'^T r' / r^T r) p
    """
    x, r, p = torch.zeros_like(b), b.clone(), b.clone()
    rr = r @ r
    for _ in range(iters):
        Ap = Av(p)
        alpha = rr / (p @ Ap)
        x += alpha * p
        r -= alpha * Ap
        rr_new = r @ r
        if rr_new < 1e-20:  # solved to float precision (p would be 0 and the next alpha 0 / 0)
            break
        p = r + (rr_new / rr) * p
        rr = rr_new
    return x


# --- family fisher: end ---


def line_search(evaluate_at, theta_old, full_step, surrogate_old: float, max_kl: float, coef: float, iters: int):
    """Backtracking line search (TRPO paper, Appendix C): try theta = theta_old + alpha^j full_step (alpha = coef)
    for j = 0, 1, ..., iters - 1 and accept the first with

        KL(theta) <= delta   and   L(theta) > L(theta_old)                 (both measured, not modelled)

    evaluate_at(theta) gives (L(theta), KL(theta)). Returns (theta, j, KL, L) for the accepted step, or
    (theta_old, iters, 0, L(theta_old)) when no try is accepted: the update is skipped.
    """
    for j in range(iters):
        theta = theta_old + coef**j * full_step
        surrogate, kl = evaluate_at(theta)
        # deviation: any improvement of L passes (sb3-contrib, Spinning Up); the paper's code asked for 10% of
        # the improvement the linear model predicted. A NaN from a wild step fails both tests.
        if kl <= max_kl and surrogate > surrogate_old:
            return theta, j, kl, surrogate
    return theta_old, iters, 0.0, surrogate_old


def surrogate_and_kl(agent: Agent, obs, actions, advantages, old_logprob, old_out, old_log_std):
    """At the agent's current theta: the surrogate L(theta) and the mean KL(pi_old || pi_theta) over the batch's
    states (pi_old given by old_out, old_log_std: its logits or means, and log sigma)."""
    logprob, _ = agent.logprob_and_entropy(obs, actions)
    # lecture: L(theta) = E[ pi_theta(a|s) / pi_theta_old(a|s) A(s, a) ], the ratio in log space
    surrogate = (torch.exp(logprob - old_logprob) * advantages).mean()
    return surrogate, agent.mean_kl(obs, old_out, old_log_std)


def update_policy(agent: Agent, obs, actions, advantages, args: Args) -> dict[str, float]:
    """One TRPO step on a batch (obs [B, D], actions [B] or [B, A], advantages [B]): CG for the direction,
    the largest step in the quadratic model, then the line search. Returns what it did, for the log.

        maximize  L(theta) = E[ pi_theta(a|s) / pi_theta_old(a|s) A(s, a) ]
        subject to  KL(pi_old || pi_theta) <= delta
    """
    policy_params = agent.policy_params()
    with torch.no_grad():
        old_out = agent.actor(agent.normalize(obs))  # pi_old(.|s): logits or means [B, A]
        old_log_std = None if agent.discrete else agent.log_std.clone()
        old_logprob, entropy = agent.logprob_and_entropy(obs, actions)

    batch = (obs, actions, advantages, old_logprob, old_out, old_log_std)
    surrogate_old, kl = surrogate_and_kl(agent, *batch)
    # g = grad L(theta_old) = E[grad log pi_theta(a|s) A(s, a)]: the policy gradient, as the ratio is 1 there
    g = flat_grad(surrogate_old, policy_params)  # [P]
    # impl detail: F + damping I (the paper's code; Spinning Up and SB3: 0.1); F from a batch is singular
    kl_grad = flat_grad(kl, policy_params, create_graph=True)
    fvp = partial(fisher_vector_product, kl_grad, policy_params, damping=args.damping)  # v -> (F + damping I) v
    # lecture: u = F^{-1} g, the natural gradient direction (here of the damped F), by conjugate gradient
    u = conjugate_gradient(fvp, g, args.cg_iters)
    # lecture: the largest step along u with 1/2 dtheta^T F dtheta = delta: beta = sqrt(2 delta / (u^T F u)),
    # with the damped F + damping I that u solved
    full_step = torch.sqrt(2 * args.max_kl / (u @ fvp(u))) * u

    def evaluate_at(theta: torch.Tensor) -> tuple[float, float]:
        nn.utils.vector_to_parameters(theta, policy_params)
        surrogate, kl = surrogate_and_kl(agent, *batch)
        return surrogate.item(), kl.item()

    with torch.no_grad():
        theta_old = nn.utils.parameters_to_vector(policy_params).clone()
        L_old = surrogate_old.item()
        theta, backtracks, kl_reached, surrogate_new = line_search(
            evaluate_at, theta_old, full_step, L_old, args.max_kl, args.backtrack_coef, args.backtrack_iters
        )
        nn.utils.vector_to_parameters(theta, policy_params)
    return {
        "losses/kl": kl_reached,
        "losses/backtracks": backtracks,
        "losses/step_accepted": float(backtracks < args.backtrack_iters),
        "losses/surrogate_gain": surrogate_new - L_old,
        "losses/entropy": entropy.mean().item(),
    }


def train(args: Args) -> str:
    """Collect num_steps x num_envs steps with pi_theta, estimate A by GAE, take one TRPO step, fit V to the
    lambda-returns; repeat until total_timesteps. Returns the run folder."""
    obs_dim, action_dim, discrete = check_args(args)  # the sizes of the env's observations and actions
    seed_everything(args.seed, args.torch_deterministic)
    device = pick_device(args.cuda)
    T, N = args.num_steps, args.num_envs
    num_updates = args.total_timesteps // (T * N)
    with Run(args, num_updates * T * N) as run:
        envs = make_envs(args.env_id, N, args.seed)
        agent = Agent(obs_dim, action_dim, discrete, args.normalize_obs).to(device)
        # impl detail: Adam eps 1e-5 (SB3's on-policy default; Huang et al. 2022, detail 3)
        value_optimizer = torch.optim.Adam(agent.critic.parameters(), lr=args.vf_learning_rate, eps=1e-5)
        reward_normalizer = RewardNormalizer(N, args.gamma, device)  # for --normalize-reward (in the appendix)

        # Rollout storage (numpy: filled one step at a time, turned into tensors once per batch)
        obs = np.zeros((T, N, obs_dim), dtype=np.float32)
        action_space = envs.single_action_space
        actions = np.zeros((T, N, *action_space.shape), dtype=np.int64 if discrete else np.float32)
        rewards, terminations, truncations = (np.zeros((T, N), dtype=np.float32) for _ in range(3))
        next_obs, _ = envs.reset(seed=run.env_seed(args.seed))  # sub-env i gets seed + i
        episode_return, episode_length = np.zeros(N), np.zeros(N, dtype=np.int64)
        as_tensor = partial(torch.as_tensor, dtype=torch.float32, device=device)

        parts = dict(model=agent, value_optimizer=value_optimizer, return_rms=reward_normalizer.rms)  # in a checkpoint
        checkpoint = lambda: model_file(agent, args.env_id) | {name: part.state_dict() for name, part in parts.items()}
        global_step = resume(run, parts)  # 0 for a new run
        for _update in range(global_step // (T * N), num_updates):
            # ---- act and observe: T steps in each of the N envs with pi_theta_old; episodes run on across batches ----
            final_obs = {}  # (t, i) -> the last observation of an episode the time limit cut
            with torch.no_grad():  # not inference_mode: the batch's tensors are inputs to the policy's gradient
                for t in range(T):
                    obs[t] = next_obs
                    actions[t] = agent.sample(as_tensor(next_obs)).cpu().numpy()
                    # the env gets the action clipped to its bounds; log pi_theta is of the sampled one
                    env_action = actions[t] if discrete else np.clip(actions[t], action_space.low, action_space.high)
                    next_obs, rewards[t], terminations[t], truncations[t], info = envs.step(env_action)
                    global_step += N
                    episode_over = terminations[t].astype(bool) | truncations[t].astype(bool)
                    for i in np.flatnonzero(truncations[t] * (1 - terminations[t])):
                        final_obs[(t, i)] = info["final_obs"][i]
                    if args.normalize_reward:
                        reward_normalizer.observe(rewards[t], episode_over)
                    episode_return += rewards[t]
                    episode_length += 1
                    run.log_games(
                        [(global_step, episode_return[i], episode_length[i]) for i in np.flatnonzero(episode_over)]
                    )
                    episode_return[episode_over], episode_length[episode_over] = 0, 0

                # ---- advantages: reward-to-go minus the baseline V, by GAE(lambda) ----
                obs_t, rewards_t = as_tensor(obs), as_tensor(rewards)
                terminations_t, truncations_t = as_tensor(terminations), as_tensor(truncations)
                if args.normalize_reward:  # impl detail: r / std of the discounted return, clipped (SB3's VecNormalize)
                    rewards_t = reward_normalizer(rewards_t)
                values = agent.value(obs_t)  # [T, N]
                # V(s'_t): the next row of values, V of the last observation where the time limit cut the episode
                next_values = torch.cat([values[1:], agent.value(as_tensor(next_obs)).unsqueeze(0)])
                if final_obs:
                    cut = tuple(zip(*final_obs, strict=True))  # ([t, ...], [i, ...])
                    next_values[cut] = agent.value(as_tensor(np.array([*final_obs.values()])))
                advantages = gae(
                    rewards_t, values, next_values, terminations_t, truncations_t, args.gamma, args.gae_lambda
                )
                returns = advantages + values  # targets for V: lambda-returns

            # ---- the TRPO step on the whole batch ----
            b_obs, b_returns, b_values = obs_t.reshape(T * N, obs_dim), returns.reshape(-1), values.reshape(-1)
            b_actions = torch.as_tensor(actions, device=device).reshape(T * N, *action_space.shape)
            b_advantages = advantages.reshape(-1)
            if args.norm_adv:
                # impl detail: advantages normalized per batch (SB3's normalize_advantage; Spinning Up's buffer)
                b_advantages = (b_advantages - b_advantages.mean()) / (b_advantages.std() + 1e-8)
            stats = update_policy(agent, b_obs, b_actions, b_advantages, args)

            # ---- fit the baseline: V(s_t) ~ lambda-return, by Adam on shuffled minibatches ----
            for _epoch in range(args.vf_epochs):
                for mb in torch.randperm(T * N, device=device).split(args.vf_minibatch_size):
                    v_loss = 0.5 * ((agent.value(b_obs[mb]) - b_returns[mb]) ** 2).mean()
                    value_optimizer.zero_grad(set_to_none=True)
                    v_loss.backward()
                    value_optimizer.step()
            if args.normalize_obs:
                # deviation: merged once per batch, after the update (SB3's VecNormalize merges every step), so that
                # pi_theta and V stay the same functions of the raw observation within a batch
                agent.obs_rms.update(b_obs)

            # how much of the returns' variance the baseline explained before the fit (1: all, 0: none)
            explained_var = 1 - (b_returns - b_values).var() / b_returns.var().clamp(min=1e-8)
            stats |= {"losses/value_loss": v_loss.item(), "losses/explained_variance": explained_var.item()}
            if args.normalize_reward:
                stats["charts/return_std"] = reward_normalizer.rms.var.sqrt().item()
            run.log(global_step, stats | {"charts/SPS": run.sps(global_step)})
            run.step_done(global_step, checkpoint)
        envs.close()
        run.step_done(global_step, checkpoint, final=True)
        return run.finish(global_step, model_file(agent, args.env_id), partial(evaluate, agent, args, device))


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


# --- family classic-appendix: begin ---
def check_env(env_id: str, render: bool = False) -> gym.Env:
    """Make one env, or fail in one line: an unknown id (with close matches), a missing dependency
    (MuJoCo envs need gymnasium[mujoco]), or spaces this script has no policy for."""
    atari = "ppo_atari.py, dqn_atari.py or rainbow_atari.py"
    if importlib.util.find_spec("ale_py") is not None:  # registers the Atari ids: one of them gets its own answer
        import ale_py

        gym.register_envs(ale_py)
    if env_id in gym.registry and gym.spec(env_id).entry_point == "ale_py.env:AtariEnv":
        fail(f"{env_id} is an Atari game, learned from pixels: {atari} run it")
    if env_id not in gym.registry:
        close = difflib.get_close_matches(env_id, list(gym.registry), n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        hint += "" if importlib.util.find_spec("ale_py") else f" (Atari ids need ale-py and {atari})"
        fail(f"unknown env id {env_id!r}{hint}")
    # frames for video need no window: SDL's dummy driver draws off-screen (SDL would otherwise look for a display
    # and print "error: XDG_RUNTIME_DIR is invalid or not set", which reads like one of this script's errors)
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    try:
        env = gym.make(env_id, render_mode="rgb_array" if render else None)
        if render:  # classic-control envs draw with pygame, MuJoCo with OpenGL: fail now, not after training
            env.reset(seed=0)
            env.render()
    except Exception as e:
        why = f"cannot make {env_id}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        if render and "mujoco" in str(gym.spec(env_id).entry_point):  # no display: MuJoCo needs another backend
            why += "; to record MuJoCo without a display, set MUJOCO_GL=egl (or osmesa)"
        fail(why)
    obs_space, action_space = env.observation_space, env.action_space
    if not (isinstance(obs_space, gym.spaces.Box) and len(obs_space.shape) == 1):
        fail(f"{env_id} has observation space {obs_space}; {SCRIPT} needs a flat Box (a vector)")
    if not (isinstance(action_space, gym.spaces.Discrete) or (type(action_space) is gym.spaces.Box)):
        fail(
            f"{env_id} has action space {type(action_space).__name__}; {SCRIPT} handles Discrete "
            "(categorical policy) and Box (Gaussian policy)"
        )
    if isinstance(action_space, gym.spaces.Box) and len(action_space.shape) != 1:
        fail(f"{env_id} has action space {action_space}; {SCRIPT} needs a flat Box (a vector)")
    return env


class RunningMeanStd(nn.Module):
    """Mean and variance of everything seen so far, merged batch by batch (Chan et al. 1979's parallel
    algorithm); buffers, so that they are saved with the model."""

    def __init__(self, shape: tuple[int, ...] = ()):
        super().__init__()
        self.register_buffer("mean", torch.zeros(shape))
        self.register_buffer("var", torch.ones(shape))
        self.register_buffer("count", torch.tensor(0.0))

    def update(self, x: torch.Tensor) -> None:
        """x [B, *shape]: mean <- mean + delta n / (m + n), M2 <- M2 + M2_x + delta^2 m n / (m + n)."""
        x = x.reshape(-1, *self.mean.shape)
        n, batch_mean, batch_var = x.shape[0], x.mean(0), x.var(0, unbiased=False)
        total = self.count + n
        delta = batch_mean - self.mean
        m2 = self.var * self.count + batch_var * n + delta**2 * self.count * n / total
        self.mean += delta * n / total
        self.var.copy_(m2 / total)
        self.count.copy_(total)


def model_file(agent: "Agent", env_id: str) -> dict:
    """What --save-model writes (and a checkpoint holds): the weights with the observation statistics, and what
    rebuilds the network."""
    sizes = {"obs_dim": agent.actor[0].in_features, "action_dim": agent.actor[-1].out_features}
    return (
        {"model": agent.state_dict(), "env_id": env_id, "discrete": agent.discrete}
        | sizes
        | {"normalize_obs": agent.normalize_obs}
    )


def resume(run: Run, parts: dict) -> int:
    """With --resume: each part (network, optimizer, statistics) as the checkpoint holds it, and the checkpoint's
    step; 0 for a new run."""
    if (state := run.resume()) is None:
        return 0
    for name, part in parts.items():
        part.load_state_dict(state[name])
    return state["global_step"]


CHECKPOINT_KEYS = {"model", "env_id", "obs_dim", "action_dim", "discrete", "normalize_obs"}


def load_checkpoint(path: str, device: torch.device) -> tuple[Agent, str]:
    """Load a model saved by --save-model, safely (weights_only: tensors and plain values, no code)."""
    checkpoint = load_file(path)
    if not isinstance(checkpoint, dict) or not CHECKPOINT_KEYS <= checkpoint.keys():
        fail(f"{path} is not a {SCRIPT} checkpoint (expected keys {', '.join(sorted(CHECKPOINT_KEYS))})")
    c = checkpoint
    agent = Agent(c["obs_dim"], c["action_dim"], c["discrete"], c["normalize_obs"])
    try:
        agent.load_state_dict(c["model"])
    except RuntimeError as e:
        fail(f"checkpoint {path} does not fit {SCRIPT}'s network: {str(e).splitlines()[1].strip()}")
    return agent.to(device), c["env_id"]


def evaluate(agent: Agent, args: Args, device: torch.device, video_dir: str | None = None) -> list[float]:
    """Play --eval-episodes whole episodes of args.env_id with pi_theta's actions (sampled, or with
    --eval-deterministic its mode: argmax or the Gaussian's mean), clipped to the bounds for Box actions,
    observations normalized by the statistics saved with the model."""
    env = check_env(args.env_id, render=video_dir is not None)
    check_fits(agent, env, args.env_id)
    if video_dir:
        env = gym.wrappers.RecordVideo(env, video_dir, episode_trigger=lambda e: True, name_prefix="eval")
    agent.eval()
    scores = []
    with torch.inference_mode():
        for episode in range(args.eval_episodes):
            obs, _ = env.reset(seed=args.seed if episode == 0 else None)
            episode_return, episode_over = 0.0, False
            while not episode_over:
                obs_t = torch.as_tensor(obs, dtype=torch.float32, device=device).unsqueeze(0)
                action = agent.sample(obs_t, args.eval_deterministic)[0]
                action = (
                    action.item()
                    if agent.discrete
                    else np.clip(action.cpu().numpy(), env.action_space.low, env.action_space.high)
                )
                obs, reward, terminated, truncated, _ = env.step(action)
                episode_return += float(reward)
                episode_over = terminated or truncated
            scores.append(episode_return)
            print(f"eval episode {episode + 1}/{args.eval_episodes}: return {episode_return:.1f}", flush=True)
    env.close()
    agent.train()
    return scores


def check_fits(agent: Agent, env: gym.Env, env_id: str) -> None:
    """A network evaluated on another env than its own (--env-id): the sizes must match, or one line says why."""
    discrete = isinstance(env.action_space, gym.spaces.Discrete)
    sizes = (env.observation_space.shape[0], int(env.action_space.n) if discrete else env.action_space.shape[0])
    if (*sizes, discrete) != (agent.actor[0].in_features, agent.actor[-1].out_features, agent.discrete):
        kind = lambda d: "discrete" if d else "continuous"  # noqa: E731
        fail(
            f"{env_id} has observations of size {sizes[0]} and {sizes[1]} {kind(discrete)} actions; the network "
            f"takes {agent.actor[0].in_features} and {agent.actor[-1].out_features} {kind(agent.discrete)} ones"
        )


# --- family classic-appendix: end ---


class RewardNormalizer:
    """--normalize-reward, as Stable-Baselines3's VecNormalize: r / sqrt(Var[R] + 1e-8), clipped to +-10, where R is
    each env's running discounted return, R <- gamma R + r, back to 0 at an episode's end; the variance is merged
    once per batch (SB3 merges it every step), as the observations' statistics."""

    def __init__(self, num_envs: int, gamma: float, device: torch.device):
        self.rms, self.gamma = RunningMeanStd().to(device), gamma
        self.running, self.seen = np.zeros(num_envs), []

    def observe(self, rewards: np.ndarray, episode_over: np.ndarray) -> None:
        self.running = self.running * self.gamma + rewards
        self.seen.append(self.running.astype(np.float32))
        self.running[episode_over] = 0.0

    def __call__(self, rewards: torch.Tensor) -> torch.Tensor:
        """The batch's rewards [T, N], scaled, after the batch's returns are merged into the statistics."""
        self.rms.update(torch.as_tensor(np.array(self.seen), device=rewards.device))
        self.seen = []
        return (rewards / torch.sqrt(self.rms.var + 1e-8)).clamp(-10.0, 10.0)


# the domain of each flag of the algorithm (the shared flags' are in SHARED_DOMAINS); delta = 1 nat of KL already
# leaves the policy nothing of its old self
DOMAINS = dict(num_envs=COUNT, num_steps=COUNT, max_kl=(lambda v: 0 < v <= 1, "positive, at most 1 (delta, a KL)"))
DOMAINS |= dict(cg_iters=COUNT, damping=NON_NEGATIVE, backtrack_iters=COUNT, gamma=DISCOUNT, gae_lambda=PROBABILITY)
DOMAINS |= dict(backtrack_coef=(lambda v: 0 < v < 1, "between 0 and 1 (the step shrinks)"), vf_learning_rate=POSITIVE)
DOMAINS |= dict(vf_epochs=COUNT, vf_minibatch_size=POSITIVE)


def check_args(args: Args) -> tuple[int, int, bool]:
    """Fail on bad input before anything is allocated; return the env's sizes: observation, action, and whether
    the actions are discrete (action: their count) or not (action: the vector's size)."""
    check_common(args, DOMAINS)
    batch_size = args.num_envs * args.num_steps
    if batch_size < 2:
        fail("a batch needs at least 2 steps (--num-envs x --num-steps)")
    if args.total_timesteps < batch_size:
        fail(
            f"--total-timesteps {args.total_timesteps} is less than one batch ({batch_size} = --num-envs "
            f"{args.num_envs} x --num-steps {args.num_steps}); raise it"
        )
    env = check_env(args.env_id, render=args.capture_video and args.eval_episodes > 0)
    env.close()
    discrete = isinstance(env.action_space, gym.spaces.Discrete)
    return env.observation_space.shape[0], int(env.action_space.n) if discrete else env.action_space.shape[0], discrete


if __name__ == "__main__":
    # a 64-unit MLP: 2 threads ran 30x slower than 1 (reinforce.py, busy 2-core CPU); train() itself leaves the
    # process's thread count alone (set it yourself in a notebook)
    torch.set_num_threads(1)
    args = tyro.cli(Args)
    if args.resume:  # the run's saved flags become the defaults, and the flags given now go on top
        args = tyro.cli(Args, default=resume_defaults(args))
    if args.eval_checkpoint:
        # an --env-id given wins over the model's: the flags read again with the model's env as the default
        parse = lambda env_id: tyro.cli(Args, default=replace(args, env_id=env_id))
        evaluate_checkpoint(args, DOMAINS, load_checkpoint, evaluate, parse)
    else:
        train(args)
