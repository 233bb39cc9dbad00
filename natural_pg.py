"""Natural policy gradient: the lecture's restricted gradient step and natural gradient step, in one file.

The gradient estimate is REINFORCE's (reinforce.py): whole episodes with pi_theta, reward-to-go, a learned
baseline V(s). What changes is the step. Instead of theta' = theta + alpha grad U(theta), the step
maximizes the first-order model of U inside a small region g(theta, theta') <= epsilon:

    maximize_theta'  U(theta) + grad U(theta)^T (theta' - theta)   subject to  g(theta, theta') <= epsilon

1. Restricted gradient (`--metric euclidean`), g = 1/2 (theta' - theta)^T (theta' - theta):
       theta' = theta + sqrt(2 epsilon) u / ||u||,                u = grad U(theta)
2. Natural gradient (`--metric fisher`), g = D_KL(p(.|theta) || p(.|theta')) ~ 1/2 dtheta^T F dtheta:
       theta' = theta + u sqrt(2 epsilon / (grad U^T u)),         u = F^{-1} grad U(theta)
       F = E[grad log p grad log p^T]  (the Fisher information matrix)

The Euclidean step moves every parameter by the same distance whatever it does to the policy; the natural
step moves the policy (its action distributions) by the same KL whatever the parametrization.
u is found either by a dense solve of F built from per-sample score vectors (`--fisher exact`), or by
conjugate gradient on Fisher-vector products, never forming F (`--fisher cg`, what TRPO does).

Papers: Kakade 2001, "A Natural Policy Gradient"; Peters & Schaal 2008, "Natural Actor-Critic";
Schulman et al. 2015, "Trust Region Policy Optimization" (the CG / Fisher-vector product machinery).

Examples:
    python natural_pg.py
    python natural_pg.py --metric euclidean --epsilon 0.02
    python natural_pg.py --env-id Acrobot-v1 --fisher exact --total-timesteps 300000
    python natural_pg.py --eval-checkpoint runs/<run>/natural_pg.pt --eval-episodes 10

Install, for this file alone (training and its evaluation, classic control):
    pip install "torch>=2.5" "gymnasium>=1.1" "tyro>=0.9.29" numpy
and for a flag or env that needs more: --tensorboard: tensorboard; --track: "wandb>=0.31"; --capture-video: moviepy
and, for classic-control frames, "gymnasium[classic-control]" (pygame-ce); MuJoCo ids (Hopper-v5, ...):
"gymnasium[mujoco]"; Box2D ids (LunarLander-v3, ...): "gymnasium[box2d]". Atari ids: ppo_atari.py, dqn_atari.py or
rainbow_atari.py (and ale-py).

Symbols: epsilon -> args.epsilon, gamma -> args.gamma, g -> args.metric, F + lambda I -> args.damping,
theta -> the policy network (and log sigma for Box actions), V -> the value network.

Deliberate departures from the lecture:
- epsilon bounds the KL per visited state (the mean over the batch's states), not per trajectory;
- F gets lambda I added (damping), which keeps the solve stable where F is singular;
- V is fitted by several Adam steps per batch on the squared error to the rewards-to-go.
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
from typing import Literal, NoReturn

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import tyro
from torch.func import functional_call, jacrev, vmap


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
    """gymnasium id of an env with a Box observation and a Discrete or Box action space"""
    total_timesteps: int = 500_000
    """total env steps over all envs (training stops at the first update past it)"""
    eval_deterministic: bool = False
    """evaluate with the most likely action (argmax, or the Gaussian's mean) instead of a sampled one"""
    checkpoint_every: int = 250_000
    """env steps between checkpoints of the whole training state into runs/<run>/checkpoint.pt (0: none)"""

    # Algorithm: the gradient estimate as reinforce.py; epsilon, CG iterations and damping as Spinning Up's TRPO
    num_envs: int = 8
    """parallel envs (gymnasium's SyncVectorEnv)"""
    episodes_per_update: int = 8
    """whole episodes per step (M in the average over tau)"""
    metric: Literal["fisher", "euclidean"] = "fisher"
    """g(theta, theta'): fisher (the KL, natural gradient) or euclidean (restricted gradient)"""
    epsilon: float = 0.01
    """size of the step: g(theta, theta') = epsilon (a mean KL in nats with --metric fisher)"""
    fisher: Literal["cg", "exact"] = "cg"
    """u = F^{-1} grad U by conjugate gradient on F v products (cg) or by a dense solve of F (exact)"""
    cg_iters: int = 10
    """conjugate-gradient iterations (--fisher cg)"""
    damping: float = 0.1
    """lambda: solve (F + lambda I) u = grad U"""
    gamma: float = 0.99
    """discount factor gamma"""
    discount_gradient: bool = True
    """weight step k by gamma^k, as the lecture's formula does (off: drop it, as most code does)"""
    normalize_obs: bool = False
    """standardize observations by running mean and std (kept in the checkpoint)"""
    vf_learning_rate: float = 1e-3
    """Adam step size of the value network V"""
    vf_iters: int = 80
    """full-batch Adam steps fitting V to the rewards-to-go after each update"""


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


# --- family reward-to-go: begin ---
def reward_to_go(rewards, terminations, truncations, bootstrap_values, gamma: float) -> torch.Tensor:
    """r_{k,to-go} = sum_{l=k}^{end} gamma^{l-k} r_l over each episode, all tensors [T, N]:

        r_{k,to-go} = r_k + gamma r_{k+1,to-go}             inside an episode
        r_{k,to-go} = r_k                                   at a termination (the task ended)
        r_{k,to-go} = r_k + gamma V(s_{k+1})                at a truncation (the time limit ended it)

    bootstrap_values holds V of the last observation where truncated (and anything elsewhere).
    """
    episode_over = torch.maximum(terminations, truncations)
    bootstrap = truncations * (1.0 - terminations) * bootstrap_values  # a termination wins over a truncation
    returns = torch.zeros_like(rewards)
    next_return = torch.zeros_like(rewards[0])
    for k in reversed(range(rewards.shape[0])):
        next_return = rewards[k] + gamma * ((1.0 - episode_over[k]) * next_return + bootstrap[k])
        returns[k] = next_return
    return returns


def step_in_episode(episode_over: torch.Tensor) -> torch.Tensor:
    """k, the index of each step within its episode, [T, N] (the rollout starts new episodes in all envs)."""
    k = torch.zeros_like(episode_over)
    for t in range(1, episode_over.shape[0]):
        k[t] = (k[t - 1] + 1) * (1.0 - episode_over[t - 1])
    return k


# --- family reward-to-go: end ---


def policy_gradient_loss(logprob, discounts, returns_to_go, baselines, num_episodes: int) -> torch.Tensor:
    """-grad U(theta) as a loss for autograd, all tensors [B] (the steps of num_episodes episodes):

        loss = -(1/M) sum_tau sum_k log pi_theta(a_k|s_k) gamma^k (r_{k,to-go} - r_base(s_k))

    discounts are gamma^k, or 1 without --discount-gradient (reinforce.py says why most code drops it).
    """
    return -(logprob * discounts * (returns_to_go - baselines)).sum() / num_episodes


# Why the Fisher of the lecture, over trajectories, is the policy's Fisher over states: with
#   log p(tau | theta) = log p(s_0) + sum_k [ log pi_theta(a_k | s_k) + log T(s_{k+1} | s_k, a_k) ]
# only the policy's terms depend on theta (the dynamics T do not), so grad log p(tau | theta) =
# sum_k grad log pi_theta(a_k | s_k), and the cross terms k != l of E[grad log p grad log p^T] vanish
# (E_{a ~ pi}[grad log pi(a|s)] = grad sum_a pi(a|s) = 0). What is left is
#   F_theta = E_tau[ sum_k F_pi(s_k) ],   F_pi(s) = E_{a ~ pi_theta(.|s)}[ grad log pi grad log pi^T ],
# and likewise D_KL(p(.|theta) || p(.|theta')) = E_tau[ sum_k D_KL(pi_theta(.|s_k) || pi_theta'(.|s_k)) ].
# deviation: we divide both by the number of steps (mean over the batch's states, as TRPO), so that
# epsilon is a KL per state and does not have to change with the episodes' length.
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


def fisher_score_vectors(agent: Agent, obs: torch.Tensor) -> torch.Tensor:
    """Vectors v_{s,c} [B, C, P] with F = (1/B) sum_s sum_c v_{s,c} v_{s,c}^T exactly, where F is the mean over
    the states of F_pi(s) = E_{a ~ pi_theta(.|s)}[grad log pi grad log pi^T]. With J_s = d out(s) / d theta_actor:

        categorical: v_{s,a} = sqrt(pi(a|s)) grad log pi(a|s),  grad log pi(a|s) = J_s^T (e_a - pi(.|s)),  a = 1..A
        Gaussian:    v_{s,i} = J_s[i] / sigma_i  (on mu)  and  sqrt(2) e_{log sigma_i},  i = 1..A

    (the expectation over a done exactly: for a ~ N(mu, sigma^2) the Fisher is 1/sigma^2 on mu, 2 on log sigma).
    """
    x = agent.normalize(obs).detach()
    theta = {name: p.detach() for name, p in agent.actor.named_parameters()}
    jac = vmap(jacrev(lambda th, s: functional_call(agent.actor, th, (s,))), in_dims=(None, 0))(theta, x)
    J = torch.cat([j.flatten(2) for j in jac.values()], dim=2)  # [B, A, P_actor], per-state Jacobians
    with torch.no_grad():
        out = agent.actor(x)
    if agent.discrete:
        probs = torch.softmax(out, dim=-1).unsqueeze(-1)  # [B, A, 1]
        scores = J - (probs * J).sum(1, keepdim=True)  # grad log pi(a|s) for every a: [B, A, P]
        return probs.sqrt() * scores
    B, A, P = J.shape
    sigma = agent.log_std.detach().exp()
    on_mu = torch.cat([J / sigma[:, None], J.new_zeros(B, A, A)], dim=2)  # [B, A, P + A]
    on_log_std = torch.cat(
        [J.new_zeros(B, A, P), np.sqrt(2.0) * torch.eye(A, dtype=J.dtype, device=J.device).expand(B, A, A)], dim=2
    )
    return torch.cat([on_mu, on_log_std], dim=1)  # [B, 2A, P + A]


def fisher_matrix(score_vectors: torch.Tensor) -> torch.Tensor:
    """F = (1/B) sum_s sum_c v_{s,c} v_{s,c}^T from score vectors [B, C, P]: a [P, P] matrix."""
    V = score_vectors.flatten(0, 1)  # [B C, P]
    return V.T @ V / score_vectors.shape[0]


def euclidean_step(grad_U: torch.Tensor, epsilon: float) -> torch.Tensor:
    """theta' - theta = u sqrt(2 epsilon / (u^T u)) = sqrt(2 epsilon) u / ||u||, u = grad U(theta):
    the maximizer of grad U^T dtheta subject to 1/2 dtheta^T dtheta <= epsilon (the constraint is tight)."""
    return np.sqrt(2 * epsilon) * grad_U / grad_U.norm()


def natural_step(grad_U: torch.Tensor, u: torch.Tensor, epsilon: float) -> torch.Tensor:
    """theta' - theta = u sqrt(2 epsilon / (grad U^T u)), u = F^{-1} grad U: the maximizer of grad U^T dtheta
    subject to 1/2 dtheta^T F dtheta <= epsilon. Then 1/2 dtheta^T F dtheta = epsilon since F u = grad U.
    This holds for CG's u too (F being the damped matrix it solved with): r = grad U - F u is orthogonal to
    the Krylov space that u lies in, so grad U^T u = u^T F u, and the step is exact in g, not only in F^-1."""
    return u * torch.sqrt(2 * epsilon / (grad_U @ u))


def train(args: Args) -> str:
    """Play episodes_per_update whole episodes with pi_theta, estimate grad U, take the restricted or the
    natural step of size epsilon, fit V to the rewards-to-go; repeat until total_timesteps. Returns the run folder."""
    obs_dim, action_dim, discrete = check_args(args)  # the sizes of the env's observations and actions
    seed_everything(args.seed, args.torch_deterministic)
    device = pick_device(args.cuda)
    with Run(args, args.total_timesteps) as run:
        envs = make_envs(args.env_id, args.num_envs, args.seed)
        agent = Agent(obs_dim, action_dim, discrete, args.normalize_obs).to(device)
        policy_params = agent.policy_params()
        value_optimizer = torch.optim.Adam(agent.critic.parameters(), lr=args.vf_learning_rate)

        M, reset_seed = args.episodes_per_update, run.env_seed(args.seed)
        parts = {"model": agent, "value_optimizer": value_optimizer}  # the training state a checkpoint holds
        checkpoint = lambda: model_file(agent, args.env_id) | {name: part.state_dict() for name, part in parts.items()}
        global_step = resume(run, parts)  # 0 for a new run
        while global_step < args.total_timesteps:
            # ---- act and observe: M whole episodes with pi_theta, spread over the N envs (see the appendix) ----
            (b_obs, b_actions, b_returns, b_k), episodes = collect_episodes(
                envs, agent, M, reset_seed, args.gamma, device
            )
            reset_seed = None  # sub-env i gets seed + i at the first reset only
            run.log_games([(global_step + steps, episode_return, length) for steps, episode_return, length in episodes])
            global_step += episodes[-1][0]  # the batch's steps: the last episode ends at its last step

            # ---- the gradient: grad U(theta) from the steps of the M episodes, as in reinforce.py ----
            with torch.no_grad():
                b_baselines = agent.value(b_obs)  # r_base = V from earlier batches only: independent of these actions
                discounts = args.gamma**b_k if args.discount_gradient else torch.ones_like(b_k)
                old_out = agent.actor(agent.normalize(b_obs))  # pi_old(.|s): logits or means [B, A]
                old_log_std = None if discrete else agent.log_std.clone()
            logprob, entropy = agent.logprob_and_entropy(b_obs, b_actions)
            # lecture: grad U(theta) = E_tau[sum_k grad log pi_theta(a_k|s_k) gamma^k (r_{k,to-go} - r_base(s_k))]
            pg_loss = policy_gradient_loss(logprob, discounts, b_returns, b_baselines, M)
            grad_U = -flat_grad(pg_loss, policy_params)  # [P]

            # ---- the step: maximize grad U^T (theta' - theta) subject to g(theta, theta') <= epsilon ----
            if args.metric == "euclidean":
                # lecture: g = 1/2 (theta' - theta)^T (theta' - theta)  ->  theta' = theta + sqrt(2 epsilon) u / ||u||
                step = euclidean_step(grad_U, args.epsilon)
            else:
                # lecture: g = D_KL ~ 1/2 dtheta^T F dtheta  ->  u = F^{-1} grad U, here (F + lambda I)^{-1} grad U
                # impl detail: F + lambda I (TRPO's code; Spinning Up's damping_coeff 0.1): F from a few thousand
                # states is singular (e.g. adding one constant to all logits changes no policy), F^-1 would not exist
                if args.fisher == "cg":
                    kl_grad = flat_grad(agent.mean_kl(b_obs, old_out, old_log_std), policy_params, create_graph=True)
                    # v -> (F + lambda I) v
                    fvp = partial(fisher_vector_product, kl_grad, policy_params, damping=args.damping)
                    u = conjugate_gradient(fvp, grad_U, args.cg_iters)
                else:
                    F = fisher_matrix(fisher_score_vectors(agent, b_obs))  # [P, P]
                    u = torch.linalg.solve(F + args.damping * torch.eye(len(grad_U), device=device), grad_U)
                # lecture: theta' = theta + u sqrt(2 epsilon / (grad U^T u))
                step = natural_step(grad_U, u, args.epsilon)
            with torch.no_grad():
                theta = nn.utils.parameters_to_vector(policy_params)
                nn.utils.vector_to_parameters(theta + step, policy_params)
                kl = agent.mean_kl(b_obs, old_out, old_log_std)  # the KL the step actually moved the policy

            # ---- fit the baseline: V(s_k) ~ r_{k,to-go}, regression on this batch ----
            for _ in range(args.vf_iters):
                v_loss = 0.5 * ((agent.value(b_obs) - b_returns) ** 2).mean()
                value_optimizer.zero_grad(set_to_none=True)
                v_loss.backward()
                value_optimizer.step()
            if args.normalize_obs:  # between updates, so that pi_theta stays fixed within a batch
                agent.obs_rms.update(b_obs)

            # how much of the rewards-to-go's variance the baseline explained before the fit (1: all, 0: none)
            explained_var = 1 - (b_returns - b_baselines).var() / b_returns.var().clamp(min=1e-8)
            losses = dict(policy_loss=pg_loss, value_loss=v_loss, entropy=entropy.mean(), kl=kl, step_norm=step.norm())
            losses["explained_variance"] = explained_var
            run.log(global_step, {f"losses/{k}": v for k, v in losses.items()} | {"charts/SPS": run.sps(global_step)})
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


# --- family episodes: begin ---
def collect_episodes(envs, agent: Agent, episodes: int, reset_seed: int | None, gamma: float, device: torch.device):
    """M = `episodes` whole episodes with pi_theta, spread over the N envs, as the batch of their steps:
    (s [B, obs_dim], a [B] or [B, A], r_{k,to-go} [B], k [B]: the step's index in its episode), and the episodes'
    (steps played when it ended, return, length) in the order they ended.

    An env starts another episode only while fewer than M have been started, and every started episode is
    played to its end: which episodes enter the batch never depends on their own length (keeping the first M to
    finish would favour short ones). Envs that are done wait; their steps are neither learned from nor counted.
    """
    N, space = envs.num_envs, envs.single_action_space
    next_obs, _ = envs.reset(seed=reset_seed)
    active = np.arange(N) < episodes
    started, steps, ended = int(active.sum()), 0, []
    episode_return, episode_length = np.zeros(N), np.zeros(N, dtype=np.int64)
    obs, actions, rewards, terminations, truncations, actives, final_obs = [], [], [], [], [], [], {}
    with torch.inference_mode():
        while active.any():
            obs.append(next_obs)
            actives.append(active.copy())
            action = agent.sample(torch.as_tensor(next_obs, dtype=torch.float32, device=device)).cpu().numpy()
            actions.append(action)
            # the env gets the action clipped to its bounds; log pi_theta is of the sampled one
            env_action = action if agent.discrete else np.clip(action, space.low, space.high)
            next_obs, reward, terminated, truncated, info = envs.step(env_action)
            rewards.append(reward)
            terminations.append(terminated)
            truncations.append(truncated)
            steps += int(active.sum())
            episode_return += reward
            episode_length += 1
            for i in np.flatnonzero((terminated | truncated) & active):
                if truncated[i] and not terminated[i]:  # the time limit cut it: V(s_{d+1}) completes it
                    final_obs[(len(rewards) - 1, i)] = info["final_obs"][i]
                ended.append((steps, episode_return[i], episode_length[i]))
                if started < episodes:
                    started += 1
                else:
                    active[i] = False
            episode_return[terminated | truncated] = 0
            episode_length[terminated | truncated] = 0

        as_tensor = lambda x: torch.as_tensor(np.array(x), dtype=torch.float32, device=device)  # [T, N, ...]
        rewards_t, terminations_t, truncations_t = as_tensor(rewards), as_tensor(terminations), as_tensor(truncations)
        bootstrap_values = torch.zeros_like(rewards_t)
        if final_obs:
            bootstrap_values[tuple(zip(*final_obs, strict=True))] = agent.value(as_tensor(list(final_obs.values())))
        returns_t = reward_to_go(rewards_t, terminations_t, truncations_t, bootstrap_values, gamma)
        k_t = step_in_episode(torch.maximum(terminations_t, truncations_t))
    # outside inference mode: the batch is an input to the gradient
    mask = torch.as_tensor(np.array(actives), device=device)  # [T, N]
    batch = as_tensor(obs)[mask], torch.as_tensor(np.array(actions), device=device)[mask], returns_t[mask], k_t[mask]
    return batch, ended


# --- family episodes: end ---


# the domain of each flag of the algorithm (the shared flags' are in SHARED_DOMAINS); a step of epsilon = 1 (a KL of
# 1 nat with --metric fisher, a step of norm sqrt(2) in the parameters with euclidean) already leaves the policy
# nothing of its old self: larger ones only end in NaN
DOMAINS = dict(num_envs=COUNT, episodes_per_update=COUNT, metric=one_of("fisher", "euclidean"), cg_iters=COUNT)
DOMAINS |= dict(epsilon=(lambda v: 0 < v <= 1, "positive, at most 1 (the size of the step)"))
DOMAINS |= dict(fisher=one_of("cg", "exact"), damping=NON_NEGATIVE, gamma=DISCOUNT, vf_learning_rate=POSITIVE)
DOMAINS |= dict(vf_iters=COUNT)


def check_args(args: Args) -> tuple[int, int, bool]:
    """Fail on bad input before anything is allocated; return the env's sizes: observation, action, and whether
    the actions are discrete (action: their count) or not (action: the vector's size)."""
    check_common(args, DOMAINS)
    if args.metric == "fisher" and args.damping == 0:  # CG on the singular F ran into NaN too (measured)
        fail(
            "--damping 0 with --metric fisher: F from a batch is singular (one constant added to all logits changes "
            "no policy), so F^-1 grad U does not exist; use --damping 0.1 (the default) or more"
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
