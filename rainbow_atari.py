"""Rainbow on Atari: DQN with its six additions, each behind a flag so that it can be switched off.

DQN (dqn_atari.py) fits Q_theta to l(s, a, r, s') = (r + gamma max_a' Q_theta'(s', a') - Q_theta(s, a))^2 on
minibatches from a replay memory, with a frozen target theta'. Rainbow adds, in the lecture's order:

1. Double Q-learning (--no-double): the online net picks the action, the target net values it,
       y = r + gamma Q_theta'(s', argmax_a' Q_theta(s', a'))     (max_a' Q_theta' overestimates: noise is maximized)
2. Prioritized replay (--no-prioritized): replay transition i with probability P(i) = p_i^alpha / sum_k p_k^alpha,
   p_i = |last TD error| + eps (with C51: the last cross-entropy), new transitions at the highest priority so far;
   the importance weights w_i = (N P(i))^-beta / max_j w_j, beta annealed 0.4 -> 1, undo the bias this brings.
3. Dueling networks (--no-dueling): Q(s, a) = V(s) + A(s, a) - mean_a' A(s, a').
4. Multi-step learning (--n-step 1 turns it off): n rewards before the bootstrap,
       (r_t + gamma r_{t+1} + ... + gamma^{n-1} r_{t+n-1} + gamma^n max_a' Q_theta'(s_{t+n}, a') - Q_theta(s_t, a_t))^2
5. Distributional RL (--no-distributional): predict the distribution of the return on 51 atoms z_i in [-10, 10],
   p_i(s, a), with Q(s, a) = sum_i z_i p_i(s, a); learn it by the cross-entropy to the projected Bellman target.
6. Noisy nets (--no-noisy): linear layers y = (mu_w + sigma_w * eps_w) x + mu_b + sigma_b * eps_b with learned
   sigma explore in place of epsilon-greedy.
All together: minimize (1/B) sum_i w_i * (-sum_j (Phi T Z)_j log p_j(s_t, a_t)), a mean over the minibatch, with
T Z = R_t^(n) + gamma^n Z_theta'(s_{t+n}, argmax_a' Q_theta(s_{t+n}, a')) projected (Phi) on the atoms.

Papers: Hessel et al. 2018, "Rainbow: Combining Improvements in Deep Reinforcement Learning"; van Hasselt et al.
2016 (double); Schaul et al. 2016 (prioritized); Wang et al. 2016 (dueling); Bellemare et al. 2017 (C51);
Fortunato et al. 2018 (noisy nets); van Hasselt et al. 2019, "When to use parametric models in reinforcement
learning?" (Data-Efficient Rainbow, --preset der). Defaults are the Rainbow paper's (Table 1, frames / 4 = steps).

Examples:
    python rainbow_atari.py --env-id BreakoutNoFrameskip-v4
    python rainbow_atari.py --env-id RoadRunnerNoFrameskip-v4 --preset der --save-model
    python rainbow_atari.py --env-id PongNoFrameskip-v4 --no-prioritized --n-step 1    # two ablations
    python rainbow_atari.py --eval-checkpoint runs/<run>/rainbow_atari.pt --eval-episodes 10 --capture-video

Install, for this file alone (training and its evaluation):
    pip install "torch>=2.5" "gymnasium>=1.1" "ale-py>=0.12" opencv-python-headless "tyro>=0.9.29" numpy
and for a flag that needs more: --tensorboard: tensorboard; --track: "wandb>=0.31"; --capture-video: moviepy.
(opencv-python-headless is OpenCV without display libraries: gymnasium's evaluation env resizes frames with it.)

Symbols: gamma -> args.gamma, n -> args.n_step, alpha, beta, eps -> args.prioritized_replay_alpha, _beta, _eps,
z_i -> q_net.support (args.n_atoms on [args.v_min, args.v_max]), sigma0 -> args.sigma0, theta -> q_net,
theta' -> target_net, the replay memory D -> memory (args.buffer_size transitions).

Deliberate departures from the paper:
- gamma^n on the bootstrap of the n-step target, where the lecture's slide writes gamma;
- the importance weights are normalized by their largest value in the minibatch (Schaul et al.'s max_i w_i read
  as most implementations do; OpenAI Baselines takes it over the whole memory);
- priorities from the cross-entropy, as Kaixhin's Rainbow (Hessel et al. name the KL divergence, which differs
  from it by the target's entropy); uniform random actions before learning starts (Dopamine's warm-up);
- a life loss ends the episode for learning (no bootstrap through it) but the game goes on;
  the logged episodic_return is the raw score of the whole game, what papers report.
"""

import copy
import csv
import dataclasses
import difflib
import functools
import importlib.util
import json
import math
import os
import random
import signal
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import timedelta
from functools import partial
from typing import Literal, NoReturn

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
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
    checkpoint_every: int = 50_000
    """agent steps between checkpoints of the whole training state into runs/<run>/checkpoint.pt (0: none)"""
    bf16: bool = False
    """the update's forward passes in bfloat16 under torch.autocast (acting stays fp32); the losses, the optimizer
    and checkpoints stay fp32. Fast where the hardware has bf16 (GPUs since Ampere, CPUs with AMX or AVX512-BF16)"""
    checkpoint_replay: bool = True
    """write the replay memory into each checkpoint (off: a resumed run refills it for --learning-starts steps)"""
    preset: Literal["rainbow", "der"] = "rainbow"
    """der: Data-Efficient Rainbow for Atari-100k (DER_PRESET's values become the defaults; explicit flags still win)"""

    # Algorithm: the Rainbow paper's values (Hessel et al. 2018, Table 1), CleanRL's rainbow_atari.py names
    num_envs: int = 1
    """parallel game instances (1 as in the paper)"""
    buffer_size: int = 1_000_000
    """transitions the replay memory holds (about 7.1 KB each: one 84x84 frame and a few bytes)"""
    buffer_device: Literal["cpu", "cuda"] = "cpu"
    """where the replay memory lives (cuda: on the GPU, so that a minibatch never crosses the bus)"""
    learning_rate: float = 6.25e-5
    """Adam step size alpha"""
    adam_eps: float = 1.5e-4
    """Adam epsilon"""
    gamma: float = 0.99
    """discount factor gamma"""
    batch_size: int = 32
    """transitions per minibatch sampled from the replay memory"""
    learning_starts: int = 20_000
    """agent steps of uniform random play before the first update (80k frames)"""
    train_frequency: int = 4
    """one update every this many agent steps"""
    target_network_frequency: int = 8_000
    """copy theta into the frozen theta' every this many agent steps (32k frames)"""
    network: Literal["nature", "der"] = "nature"
    """nature: the Nature-DQN CNN, 512 hidden units; der: DER's smaller CNN (two 5x5 convs, stride 5), 256 hidden"""
    double: bool = True
    """1. double Q-learning: the online net picks a', the target net values it"""
    prioritized: bool = True
    """2. prioritized replay (off: uniform sampling)"""
    prioritized_replay_alpha: float = 0.5
    """priority exponent alpha: P(i) = p_i^alpha / sum_k p_k^alpha"""
    prioritized_replay_beta: float = 0.4
    """importance-weight exponent beta at the start, annealed linearly to 1 at the end of training"""
    prioritized_replay_eps: float = 1e-6
    """eps added to the TD error so that no valid transition has priority 0"""
    dueling: bool = True
    """3. dueling network: Q(s, a) = V(s) + A(s, a) - mean_a' A(s, a')"""
    n_step: int = 3
    """4. multi-step learning: rewards summed before the bootstrap (1: one-step TD)"""
    distributional: bool = True
    """5. distributional RL, C51 (off: scalar Q and the squared TD error)"""
    n_atoms: int = 51
    """atoms z_i of the return distribution"""
    v_min: float = -10.0
    """smallest atom"""
    v_max: float = 10.0
    """largest atom"""
    noisy: bool = True
    """6. noisy nets (off: epsilon-greedy with --start-e, --end-e, --exploration-fraction)"""
    sigma0: float = 0.5
    """noisy nets: initial sigma = sigma0 / sqrt(inputs)"""
    start_e: float = 1.0
    """--no-noisy only: epsilon at the start"""
    end_e: float = 0.01
    """--no-noisy only: epsilon at the end of the decay, and after"""
    exploration_fraction: float = 0.1
    """--no-noisy only: fraction of --total-timesteps over which epsilon decays linearly"""
    eval_epsilon: float = 0.001
    """epsilon of the greedy policy (noise off) during evaluation (Dopamine's Rainbow)"""


# Data-Efficient Rainbow (van Hasselt et al. 2019) for the Atari-100k benchmark: one update per step,
# n = 20, a smaller network, an earlier start and faster target updates. Everything not named here as in Rainbow.
# The memory holds nearly the whole run (buffer 100k): only its first slots are overwritten, one for each game that
# ended (a game's final observation takes a slot of its own).
DER_PRESET = dict(total_timesteps=100_000, buffer_size=100_000, learning_rate=1e-4, learning_starts=1_600)
DER_PRESET.update(train_frequency=1, target_network_frequency=2_000, network="der", n_step=20, sigma0=0.1)
NETWORK_FLAGS = ("network", "dueling", "distributional", "n_atoms", "v_min", "v_max", "noisy", "sigma0")


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


class NoisyLinear(nn.Module):
    """6. Noisy nets, factorised Gaussian noise (Fortunato et al. 2018, section 3):
        y = (mu_w + sigma_w * eps_w) x + mu_b + sigma_b * eps_b,  eps_w = f(eps_out) f(eps_in)^T,  eps_b = f(eps_out)
    with eps_in, eps_out ~ N(0, 1) and f(x) = sgn(x) sqrt(|x|): p + q noise draws instead of p q. In eval mode the
    noise is off (y = mu_w x + mu_b), the mean network."""

    def __init__(self, in_features: int, out_features: int, sigma0: float):
        super().__init__()
        bound = in_features**-0.5  # mu ~ U[-1/sqrt(p), 1/sqrt(p)], sigma = sigma0 / sqrt(p), p inputs (paper)
        self.weight_mu = nn.Parameter(torch.empty(out_features, in_features).uniform_(-bound, bound))
        self.bias_mu = nn.Parameter(torch.empty(out_features).uniform_(-bound, bound))
        self.weight_sigma = nn.Parameter(torch.full((out_features, in_features), sigma0 * bound))
        self.bias_sigma = nn.Parameter(torch.full((out_features,), sigma0 * bound))
        self.register_buffer("eps_in", torch.zeros(in_features), persistent=False)
        self.register_buffer("eps_out", torch.zeros(out_features), persistent=False)

    def reset_noise(self) -> None:
        for eps in (self.eps_in, self.eps_out):
            eps.normal_()
            torch.copysign(eps.abs().sqrt(), eps, out=eps)  # f(x) = sgn(x) sqrt(|x|)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = F.linear(x, self.weight_mu, self.bias_mu)
        if not self.training:
            return mean
        # (sigma_w * f(eps_out) f(eps_in)^T) x = f(eps_out) * (sigma_w (f(eps_in) * x)): no [out, in] noise matrix
        return mean + F.linear(x * self.eps_in, self.weight_sigma, self.bias_sigma) * self.eps_out


class RainbowNetwork(nn.Module):
    """Stacked frames in; per action the logits of the return distribution on the atoms (K = n_atoms), or
    Q itself (K = 1) without distributional RL. The linear layers are noisy with noisy nets.
    3. dueling: Q(s, a) = V(s) + A(s, a) - mean_a' A(s, a'), per atom (the mean makes V and A identifiable)."""

    def __init__(self, frames: int, num_actions: int, network: str, dueling: bool, distributional: bool,
                 n_atoms: int, v_min: float, v_max: float, noisy: bool, sigma0: float):  # fmt: skip
        super().__init__()
        if network == "nature":  # Mnih et al. 2015
            convs = [nn.Conv2d(frames, 32, 8, stride=4), nn.ReLU(), nn.Conv2d(32, 64, 4, stride=2), nn.ReLU()]
            convs += [nn.Conv2d(64, 64, 3, stride=1)]  # [B, 64, 7, 7]
            features, hidden = 64 * 7 * 7, 512
        else:  # Data-Efficient Rainbow (van Hasselt et al. 2019)
            convs = [nn.Conv2d(frames, 32, 5, stride=5), nn.ReLU(), nn.Conv2d(32, 64, 5, stride=5)]  # [B, 64, 3, 3]
            features, hidden = 64 * 3 * 3, 256
        self.torso = nn.Sequential(*convs, nn.ReLU(), nn.Flatten())  # [B, features]
        # impl detail: channels_last (NHWC) makes the Nature CNN's update 1.25x faster on CPU (see ppo_atari.py);
        # DER's two stride-5 convs are faster in the plain NCHW layout here (a DER update 1.2x)
        self.layout = torch.channels_last if network == "nature" else torch.contiguous_format
        self.to(memory_format=self.layout)
        self.num_actions, self.atoms = num_actions, n_atoms if distributional else 1
        linear = functools.partial(NoisyLinear, sigma0=sigma0) if noisy else nn.Linear

        def stream(outputs: int) -> nn.Sequential:
            return nn.Sequential(linear(features, hidden), nn.ReLU(), linear(hidden, outputs))

        self.advantage = stream(num_actions * self.atoms)  # A(s, .); without dueling it is Q(s, .) itself
        self.value = stream(self.atoms) if dueling else None  # V(s)
        self.register_buffer("support", torch.linspace(v_min, v_max, n_atoms) if distributional else None)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """uint8 frames [B, 4, 84, 84] -> [B, A, K]."""
        x = obs.contiguous(memory_format=self.layout).float().mul_(1.0 / 255.0)  # to [0, 1] in place
        # under --bf16's autocast (the update) the torso and the streams run in bfloat16, their outputs come back in
        # fp32: the dueling combination, the softmax over the atoms and the cross-entropy of the projected
        # distribution are computed in fp32
        x = self.torso(x)
        advantage = self.advantage(x).float().view(-1, self.num_actions, self.atoms)  # [B, A, K]
        value = self.value(x).float().view(-1, 1, self.atoms) if self.value is not None else None
        if value is None:
            return advantage
        # 3. dueling: Q(s, a) = V(s) + A(s, a) - mean_a' A(s, a') (per atom, before the softmax, as in Rainbow).
        # V + A alone is not identifiable (V + c and A - c give the same Q): pinning A's mean over actions to 0 makes
        # V the state's value; the mean rather than the max (A(s, a*) = 0) is steadier, since A then only has to
        # move as fast as its mean, not follow every change of the best action (Wang et al. 2016, eq. 9).
        return value + advantage - advantage.mean(dim=1, keepdim=True)

    def q_values(self, out: torch.Tensor) -> torch.Tensor:
        """[B, A, K] -> Q(s, a) [B, A]: the mean of the distribution, Q(s, a) = sum_i z_i p_i(s, a), or the scalar."""
        return (out.softmax(dim=2) * self.support).sum(dim=2) if self.support is not None else out[:, :, 0]

    def reset_noise(self) -> None:
        for layer in self.modules():
            if isinstance(layer, NoisyLinear):
                layer.reset_noise()


class SumTree:
    """2. The priorities p_i of the replay slots as a binary tree of sums in one flat tensor: node k holds the sum
    of its children 2k and 2k + 1, the leaves (one per slot, padded to a power of two) are nodes [L, 2L), the root
    (node 1) holds sum_i p_i. Setting B priorities, or drawing B slots, walks the log2(L) levels once for the batch."""

    def __init__(self, size: int, device: torch.device):
        self.depth = max(1, (size - 1).bit_length())
        self.leaves = 1 << self.depth
        self.nodes = torch.zeros(2 * self.leaves, dtype=torch.float64, device=device)  # float64: sums of 1M values
        self.pairs = self.nodes.view(-1, 2)  # row k: the children 2k and 2k + 1 of node k, side by side
        self.shifts = torch.arange(1, self.depth + 1, device=device)[:, None]  # node >> j: its ancestor j levels up

    def total(self) -> torch.Tensor:
        return self.nodes[1]

    def get(self, index: torch.Tensor) -> torch.Tensor:
        return self.nodes[self.leaves + index]

    def set(self, index: torch.Tensor, priorities: torch.Tensor) -> None:
        node = self.leaves + index
        self.nodes[node] = priorities
        for parent in node >> self.shifts:  # the sums on the paths to the root, one level at a time, bottom up
            # one gather of the B pairs of children [B, 2], their sums written back (index_select and index_copy_:
            # 2x faster here than indexing with [] for a few nodes)
            self.nodes.index_copy_(0, parent, self.pairs.index_select(0, parent).sum(dim=1))

    def find(self, mass: torch.Tensor) -> torch.Tensor:
        """The leaf i with sum_{j<i} p_j <= u < sum_{j<=i} p_j for each u in mass: u ~ U[0, total) draws i with
        probability p_i / sum_k p_k."""
        node = torch.ones_like(mass, dtype=torch.long)
        for _ in range(self.depth):
            left, right_mass = self.pairs.index_select(0, node).unbind(dim=1)  # the masses of node's two subtrees
            # past the left subtree's mass: go right, but never into an empty subtree (rounding at its edge)
            right = (mass >= left) & (right_mass > 0)
            mass = torch.where(right, mass - left, mass)
            node = 2 * node + right
        return node - self.leaves


class ReplayMemory:
    """The replay memory D: each 84x84 frame stored once, n-step transitions rebuilt at sample time, prioritized.

    As in dqn_atari.py: each env writes its own ring of slots; slot i holds the newest frame of an observation and
    the action, sign(r) and termination of the step taken from it, so s_t is rebuilt from slots t-3..t (frames from
    before the game's first zero-filled, as the env's own stack after a reset: bit for bit what the env returned).
    At a game's end (the last life lost, or a time-limit truncation) the env has already reset (SameStep): the
    game's final observation from info["final_obs"] takes one extra slot marked `last` (no step starts there), and
    the next game starts after it. A transition starting at slot t covers the steps t..t+m-1 and bootstraps from
    s_{t+m}: m = n, or fewer when the episode ends first: at a termination (life lost or game over: no bootstrap)
    or at a truncation (bootstrap from the final observation). It can be sampled once n steps are stored after t.
    Slots that are not such a start have priority 0 in the sum tree, so they are never drawn.
    """

    def __init__(self, capacity: int, num_envs: int, obs_shape: tuple, device: torch.device, n_step: int = 1,
                 gamma: float = 0.99, alpha: float = 0.0, eps: float = 1e-6):  # fmt: skip
        self.stack, self.n_step, self.gamma, self.alpha, self.eps = obs_shape[0], n_step, gamma, alpha, eps
        self.slots = -(-capacity // num_envs)  # slots per env
        shape = (num_envs, self.slots)
        # empty, not zeros: untouched pages take no RAM, so memory use grows as the ring fills
        # one frame per slot (env e's slot i at e * slots + i) and, after the last slot, an all-zero frame
        self.frames = torch.empty((num_envs * self.slots + 1, *obs_shape[1:]), dtype=torch.uint8, device=device)
        self.frames[-1] = 0
        self.actions = torch.zeros(shape, dtype=torch.uint8, device=device)
        self.rewards = torch.zeros(shape, dtype=torch.int8, device=device)  # sign(r) in {-1, 0, 1}
        self.terminations = torch.zeros(shape, dtype=torch.bool, device=device)
        # frames of the same game before this slot's, capped at stack - 1: how far back s may reach
        self.history = torch.zeros(shape, dtype=torch.uint8, device=device)
        self.last = torch.zeros(shape, dtype=torch.bool, device=device)  # a game's final observation
        self.tree = SumTree(num_envs * self.slots, device)  # leaf e * slots + i: p_i^alpha of env e's slot i
        self.max_priority = torch.ones((), dtype=torch.float64, device=device)  # p^alpha of new transitions
        self.cur = torch.full((num_envs,), -1, dtype=torch.long, device=device)  # slot of each env's s
        self.filled = torch.zeros(num_envs, dtype=torch.long, device=device)  # slots written, up to slots
        self.env_ids = torch.arange(num_envs, device=device)
        self.stack_offsets = torch.arange(1 - self.stack, 1, device=device)  # slots of s_t: t-3 .. t
        self.steps = torch.arange(n_step, device=device)  # k = 0 .. n-1
        # slots whose validity an append at slot j changes: j - n (its n steps are now stored), j itself (no step
        # yet) and the oldest j + 1 .. j + 3 (their stack may have reached into the overwritten slot)
        self.around = torch.tensor([-n_step, *range(self.stack)], device=device)
        self.device = device

    @staticmethod
    def bytes_per_slot(obs_shape: tuple) -> int:
        """One frame, 5 one-byte fields (action, reward, termination, history, last), two float64 tree nodes."""
        return int(np.prod(obs_shape[1:])) + 5 + 2 * 8

    def _append(self, envs: torch.Tensor, frames: np.ndarray, history: torch.Tensor | int, last) -> None:
        slot = (self.cur[envs] + 1) % self.slots
        self.frames[envs * self.slots + slot] = torch.from_numpy(frames).to(self.device)
        self.history[envs, slot] = history
        self.last[envs, slot] = last
        self.cur[envs] = slot
        self.filled[envs] = (self.filled[envs] + 1).clamp_(max=self.slots)
        # invalid slots get priority 0; a slot that becomes valid gets the highest priority so far (Schaul et al.)
        leaf = (envs[:, None] * self.slots + (slot[:, None] + self.around) % self.slots).flatten()  # [E' * 5]
        old, valid = self.tree.get(leaf), self.valid(leaf // self.slots, leaf % self.slots)
        self.tree.set(leaf, torch.where(valid, torch.where(old > 0, old, self.max_priority), 0))

    def reset(self, obs: np.ndarray) -> None:
        """The first observation of each env's first game."""
        self._append(self.env_ids, obs[:, -1], 0, False)

    def add(self, actions, rewards, terminations, next_obs, game_over, final_obs) -> None:
        """Store (a, sign(r), terminated) for each env's current s, then append s' (numpy arrays, [N, ...])."""
        e, slot = self.env_ids, self.cur
        self.actions[e, slot] = torch.from_numpy(actions.astype(np.uint8)).to(self.device)
        self.rewards[e, slot] = torch.from_numpy(np.sign(rewards).astype(np.int8)).to(self.device)
        self.terminations[e, slot] = torch.from_numpy(terminations).to(self.device)
        history = (self.history[e, slot] + 1).clamp_(max=self.stack - 1)
        if not game_over.any():
            self._append(e, next_obs[:, -1], history, False)
            return
        # a game ended: s' is its final observation; the reset observation starts the next game after it
        game_over_t = torch.from_numpy(game_over).to(self.device)
        self._append(e, np.where(game_over[:, None, None], final_obs[:, -1], next_obs[:, -1]), history, game_over_t)
        self._append(e[game_over_t], next_obs[game_over, -1], 0, False)

    def valid(self, envs: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
        """Slots a transition starts from: n steps stored after it, all of s still there, not a game's end."""
        age = (self.cur[envs] - slots) % self.slots  # 0: the current s, whose step is not taken yet
        reach = self.history[envs, slots].long()
        return (age >= self.n_step) & (age + reach < self.filled[envs]) & ~self.last[envs, slots]

    def sample(self, batch_size: int, beta: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(envs, slots, importance weights) of a minibatch drawn with P(i) = p_i^alpha / sum_k p_k^alpha."""
        # stratified: one draw from each of B equal parts of the total mass (Schaul et al. 2016, Appendix B.2.1)
        u = torch.rand(batch_size, dtype=torch.float64, device=self.device)
        leaf = self.tree.find((torch.arange(batch_size, device=self.device) + u) * (self.tree.total() / batch_size))
        return leaf // self.slots, leaf % self.slots, importance_weights(self.tree.get(leaf), beta)

    def update_priorities(self, envs: torch.Tensor, slots: torch.Tensor, td_errors: torch.Tensor) -> None:
        """p_i = |delta_i| + eps, stored as p_i^alpha (alpha 0: all 1, uniform sampling)."""
        priorities = (td_errors.double() + self.eps) ** self.alpha
        self.tree.set(envs * self.slots + slots, priorities)
        self.max_priority = torch.maximum(self.max_priority, priorities.max())

    def stack_at(self, envs: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
        """The observation whose newest frame is at the slot: frames i-3..i, zero before the game's first."""
        window = envs[:, None] * self.slots + (slots[:, None] + self.stack_offsets) % self.slots  # [B, 4]
        before_start = self.stack_offsets < -self.history[envs, slots, None].long()  # [B, 4]
        window.masked_fill_(before_start, len(self.frames) - 1)  # frames before the game's first: the zero frame
        # index_select copies whole frames: 15x faster here than advanced indexing, which goes byte by byte
        return self.frames.index_select(0, window.flatten()).view(*window.shape, *self.frames.shape[1:])

    def transitions(self, envs: torch.Tensor, slots: torch.Tensor):
        """(s_t, a_t, R_t^(m), gamma^m (1 - terminated), s_{t+m}) at the given slots, for the whole batch at once."""
        window = (slots[:, None] + self.steps) % self.slots  # [B, n]: the steps t .. t+n-1
        e = envs[:, None]
        terminations = self.terminations[e, window]
        # the step from slot t+k ends the episode if it terminates, or if its s' is a game's final observation
        episode_ends = terminations | self.last[e, (window + 1) % self.slots]  # [B, n]
        returns, m, terminated = n_step_return(self.rewards[e, window], terminations, episode_ends, self.gamma)
        discounts = self.gamma**m * ~terminated  # no bootstrap through a termination
        obs, next_obs = self.stack_at(envs, slots), self.stack_at(envs, (slots + m) % self.slots)
        return obs, self.actions[envs, slots].long(), returns, discounts, next_obs


def n_step_return(rewards: torch.Tensor, terminations: torch.Tensor, episode_ends: torch.Tensor, gamma: float):
    """4. R_t^(m) = r_t + gamma r_{t+1} + ... + gamma^{m-1} r_{t+m-1}: m = n, or the steps up to and including the
    first that ends the episode. [B, n] each -> (R [B], m [B], terminated [B]: an episode end within the m steps
    was a termination, so there is no bootstrap; after a truncation the target bootstraps from s_{t+m})."""
    # step k counts when no episode ended before it (an exclusive cumulative sum of the ends)
    counted = (episode_ends.cumsum(dim=1) - episode_ends.long()) == 0  # [B, n]
    discounts = gamma ** torch.arange(rewards.shape[1], device=rewards.device)  # gamma^k
    returns = (rewards * discounts * counted).sum(dim=1)
    return returns, counted.sum(dim=1), (terminations & counted).any(dim=1)


def importance_weights(priorities: torch.Tensor, beta: float) -> torch.Tensor:
    """2. w_i = (N P(i))^-beta / max_j w_j, P(i) = p_i^alpha / sum_k p_k^alpha (priorities holds p_i^alpha). The max is
    over the minibatch, so N and the sum cancel: w_i = (p_i^alpha / min_j p_j^alpha)^-beta, 1 for the rarest."""
    return (priorities / priorities.min()) ** -beta


def project_distribution(returns, discounts, next_probs: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
    """5. Phi T Z: the Bellman update moves atom z_j to T z_j = R + gamma^m z_j (clipped to [v_min, v_max]), off
    the support; its probability p_j(s_{t+m}, a*) is split between the two nearest atoms by closeness:
        (Phi T Z)_i = sum_j [1 - |T z_j - z_i| / dz]_0^1 p_j(s_{t+m}, a*)      (Bellemare et al. 2017, eq. 7)
    returns, discounts [B], next_probs [B, K] -> [B, K], with one scatter-add for the whole batch."""
    batch, atoms = next_probs.shape
    dz = (support[-1] - support[0]) / (atoms - 1)
    tz = (returns[:, None] + discounts[:, None] * support).clamp(support[0], support[-1])  # [B, K]
    b = (tz - support[0]) / dz  # T z_j's position on the atoms, in [0, K-1]
    lower = b.floor().long().clamp(0, atoms - 2)  # z_l <= T z_j <= z_{l+1} (l = K-2 at the top edge)
    upper_share = b - lower  # 1 - |T z_j - z_{l+1}| / dz; the rest, 1 - |T z_j - z_l| / dz, goes to z_l
    rows = torch.arange(batch, device=b.device)[:, None] * atoms
    index = torch.cat([(rows + lower).flatten(), (rows + lower + 1).flatten()])
    mass = torch.cat([(next_probs * (1 - upper_share)).flatten(), (next_probs * upper_share).flatten()])
    return torch.zeros(batch * atoms, device=b.device).index_add_(0, index, mass).view(batch, atoms)


def rainbow_loss(q_net, target_net, obs, actions, returns, discounts, next_obs, double: bool):
    """Per-transition losses of a minibatch and the errors that set their new priorities, for C51 or scalar Q.
    1. double Q-learning: a* = argmax_a' Q_theta(s', a') picks with the online net, Q_theta'(s', a*) values it."""
    rows = torch.arange(len(actions), device=actions.device)
    out = q_net(obs)[rows, actions]  # [B, K]: the logits of Z_theta(s_t, a_t), or Q_theta(s_t, a_t)
    with torch.no_grad():
        next_out = target_net(next_obs)  # [B, A, K]
        # 1. double Q-learning: a* = argmax_a' Q_theta(s_{t+m}, a') by the online net, valued by theta'
        next_actions = q_net.q_values(q_net(next_obs) if double else next_out).argmax(dim=1)
        next_out = next_out[rows, next_actions]  # [B, K]
        if q_net.support is not None:  # 5. the target distribution, projected on the atoms
            target = project_distribution(returns, discounts, next_out.softmax(dim=1), q_net.support)
        else:  # y = R_t^(m) + gamma^m (1 - terminated) Q_theta'(s_{t+m}, a*)
            td_target = returns + discounts * next_out[:, 0]
    if q_net.support is not None:
        # cross-entropy -sum_i (Phi T Z)_i log p_i(s_t, a_t): the KL divergence up to the target's entropy
        cross_entropy = -(target * out.log_softmax(dim=1)).sum(dim=1)
        q_sa = (out.detach().softmax(dim=1) * q_net.support).sum(dim=1)
        return cross_entropy, cross_entropy.detach(), q_sa
    td_error = td_target - out[:, 0]  # the lecture's squared TD error
    return td_error**2, td_error.detach().abs(), out.detach()[:, 0]


# --- family schedules: begin ---
def linear_schedule(start: float, end: float, duration: float, t: int) -> float:
    """From start at t = 0 linearly to end at t = duration, then end (epsilon down, PER's beta up)."""
    return start + (end - start) * min(t / max(duration, 1), 1.0)


def times_due(every: int, global_step: int, steps: int) -> int:
    """How many multiples of `every` the last `steps` agent steps passed (N envs step N at a time: 0, 1 or more).
    With one env: 1 when global_step % every == 0, else 0."""
    return global_step // every - (global_step - steps) // every


# --- family schedules: end ---


def epsilon_greedy(q_net: RainbowNetwork, obs: np.ndarray, epsilon: float, rng: np.random.Generator, device):
    """a <- argmax_a Q_theta(s, a) with probability 1 - epsilon, rand(A) otherwise; obs [N, 4, 84, 84]."""
    explore = rng.random(len(obs)) < epsilon
    actions = rng.integers(q_net.num_actions, size=len(obs))
    if not explore.all():  # no forward pass while every env explores (the warm-up)
        with torch.inference_mode():
            greedy = q_net.q_values(q_net(torch.from_numpy(obs).to(device))).argmax(dim=1).cpu().numpy()
        actions = np.where(explore, actions, greedy)
    return actions


def train(args: Args) -> str:
    """Act (noisy greedy, or epsilon-greedy), store each step in the replay memory, and every --train-frequency
    steps take one gradient step on a prioritized minibatch of n-step transitions; copy theta into theta' every
    --target-network-frequency steps. Returns the run folder."""
    check_args(args)
    seed_everything(args.seed, args.torch_deterministic)
    device, buffer_device = pick_device(args.cuda, bf16=args.bf16), torch.device(args.buffer_device)
    envs = make_envs(args.env_id, args.num_envs)
    obs_shape, num_actions = envs.single_observation_space.shape, envs.single_action_space.n
    N = args.num_envs
    num_iterations = args.total_timesteps // N
    with Run(args, num_iterations * N) as run:
        config = {name: getattr(args, name) for name in NETWORK_FLAGS}
        q_net = RainbowNetwork(obs_shape[0], num_actions, **config).to(device)
        target_net = RainbowNetwork(obs_shape[0], num_actions, **config).to(device)
        target_net.load_state_dict(q_net.state_dict())
        target_net.requires_grad_(False)
        # impl detail: fused Adam, one kernel for all parameters (on CPU the default loops over them, op by op)
        optimizer = torch.optim.Adam(q_net.parameters(), lr=args.learning_rate, eps=args.adam_eps, fused=True)
        # --no-prioritized is alpha = 0: every valid slot has priority p^0 = 1, uniform sampling, all weights 1
        alpha = args.prioritized_replay_alpha if args.prioritized else 0.0
        memory_args = (args.n_step, args.gamma, alpha, args.prioritized_replay_eps)
        memory = ReplayMemory(args.buffer_size, N, obs_shape, buffer_device, *memory_args)
        loss_name = "losses/cross_entropy" if args.distributional else "losses/td_loss"
        rng = np.random.default_rng(args.seed)  # exploration
        epsilon_decay_steps = args.exploration_fraction * args.total_timesteps  # --no-noisy

        obs, info = envs.reset(seed=run.env_seed(args.seed))
        scores = GameScores(info["lives"])  # the raw score of each env's game, over all its lives

        model = lambda: {"model": q_net.state_dict(), "env_id": args.env_id, "num_actions": int(num_actions)}
        model_and_network = lambda: model() | {"network": config}
        checkpoint = lambda: training_state(model_and_network(), target_net, optimizer, updates, rng, memory, args)
        # a new run: step 0, the first observations into the memory; --resume: all as the checkpoint holds it
        global_step, updates, learning_starts = resume(run, q_net, target_net, optimizer, rng, memory, obs, args)
        for _ in range(global_step // N, num_iterations):
            # ---- act: greedy on the noisy Q_theta (fresh noise each step), or epsilon-greedy ----
            if global_step < args.learning_starts:
                epsilon = 1.0  # impl detail: uniform random actions while the memory fills (Dopamine's warm-up)
            elif args.noisy:
                epsilon = 0.0  # 6. noisy nets explore by themselves (Hessel et al. 2018: epsilon 0)
                q_net.reset_noise()
            else:
                epsilon = linear_schedule(args.start_e, args.end_e, epsilon_decay_steps, global_step)
            actions = epsilon_greedy(q_net, obs, epsilon, rng, device)

            # ---- observe and store ----
            next_obs, reward, terminated, truncated, info = envs.step(actions)
            global_step += N
            game_over, games = scores.step(global_step, reward, terminated, truncated, info["lives"])
            # impl detail: learn from clipped rewards sign(r) in {-1, 0, 1} (Mnih et al. 2015)
            memory.add(actions, reward, terminated, next_obs, game_over, info.get("final_obs"))
            obs = next_obs
            run.log_games(games)

            # ---- learn: one prioritized minibatch step per --train-frequency agent steps, after the warm-up ----
            if global_step > learning_starts:
                for _ in range(times_due(args.train_frequency, global_step, N)):  # one update per train_frequency steps
                    beta = linear_schedule(args.prioritized_replay_beta, 1.0, args.total_timesteps, global_step)
                    envs_b, slots_b, weights = memory.sample(args.batch_size, beta)
                    batch = [x.to(device) for x in memory.transitions(envs_b, slots_b)]
                    q_net.reset_noise()  # 6. fresh noise for each update, independent for theta and theta'
                    target_net.reset_noise()
                    # --bf16: the update's forward passes in bfloat16 (the online net's weights cast once for its two).
                    # Acting stays fp32: one frame at a time, its forward is bound by reading the weights, and autocast
                    # would add a bf16 copy of them each step
                    with torch.autocast(device.type, torch.bfloat16, enabled=args.bf16):
                        losses, td_errors, q_sa = rainbow_loss(q_net, target_net, *batch, double=args.double)
                    # 2. the importance weights w_i correct for sampling by priority
                    loss = (weights.to(device, torch.float32) * losses).mean()
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    if args.prioritized:  # 2. the new priorities p_i = |delta_i| + eps, alpha applied in the memory
                        memory.update_priorities(envs_b, slots_b, td_errors.to(buffer_device))
                    updates += 1
                    if updates % 100 == 0:  # .item() waits for the device: not at every update
                        sps = run.sps(global_step)
                        logged = {loss_name: loss.item(), "losses/q_values": q_sa.mean().item(), "charts/beta": beta}
                        run.log(global_step, {**logged, "charts/epsilon": epsilon, "charts/SPS": sps})
                # ---- sync: the frozen target theta' <- theta ----
                if times_due(args.target_network_frequency, global_step, N):
                    target_net.load_state_dict(q_net.state_dict())
            run.step_done(global_step, checkpoint)
        envs.close()
        run.step_done(global_step, checkpoint, final=True)
        return run.finish(global_step, model_and_network(), partial(evaluate, q_net, args, device))


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


def parse_args(argv: list[str] | None = None, env_default: str | None = None) -> Args:
    """Flags -> Args, read by tyro twice: first for --preset (the other flags are read too, --help is left for the
    second reading), then all of them on top of that preset's defaults, so that `--preset der --n-step 10` is DER
    with n = 10 whatever the order of the flags, and `--preset der --help` shows DER's defaults. env_default: the
    --env-id when none is given (an evaluated model's own)."""
    first, _ = tyro.cli(Args, args=argv, return_unknown_args=True, add_help=False)
    default = dataclasses.replace(Args(), preset="der", **DER_PRESET) if first.preset == "der" else Args()
    args = tyro.cli(Args, args=argv, default=dataclasses.replace(default, env_id=env_default or default.env_id))
    if args.resume:  # the run's saved flags become the defaults, and the flags given now go on top
        args = tyro.cli(Args, args=argv, default=resume_defaults(args))
    return args


def own_storage(t: torch.Tensor) -> torch.Tensor:
    """t in a storage of its own size (torch.save writes a view's whole storage), without a copy on the CPU."""
    return torch.from_numpy(t.numpy()) if t.device.type == "cpu" else t.cpu()


# --- family replay-checkpoint: begin ---
def training_state(model: dict, target_net, optimizer, updates: int, rng, memory: ReplayMemory, args: Args) -> dict:
    """checkpoint.pt's part of the training (the run adds its own): everything the loop needs to go on."""
    state = model | {"target": target_net.state_dict(), "optimizer": optimizer.state_dict(), "updates": updates}
    state["exploration_rng"] = rng.bit_generator.state
    return state | ({"replay": replay_state(memory)} if args.checkpoint_replay else {})


def resume(run: Run, q_net, target_net, optimizer, rng, memory: ReplayMemory, obs, args: Args) -> tuple[int, int, int]:
    """The step, the update count and the step learning starts at; with --resume, also the networks, optimizer,
    generators and replay memory as the checkpoint holds them (without a saved memory, it fills again first)."""
    if (state := run.resume()) is None:
        memory.reset(obs)
        return 0, 0, args.learning_starts
    q_net.load_state_dict(state["model"])
    target_net.load_state_dict(state["target"])
    optimizer.load_state_dict(state["optimizer"])
    rng.bit_generator.state = state["exploration_rng"]
    if "replay" not in state:  # no replay memory saved: fill it again before learning goes on
        memory.reset(obs)
        return state["global_step"], state["updates"], state["global_step"] + args.learning_starts
    load_replay_state(memory, state.pop("replay"))
    restart_games(memory, obs)
    return state["global_step"], state["updates"], args.learning_starts


# --- family replay-checkpoint: end ---


REPLAY_FIELDS = ("actions", "rewards", "terminations", "history", "last", "cur", "filled", "max_priority")


def replay_state(memory: ReplayMemory) -> dict:
    """All that is written, for a checkpoint: each env's frames up to its filled slots, the small fields, the
    priorities (the sum tree)."""
    frames = [own_storage(memory.frames[e * memory.slots :][:n]) for e, n in enumerate(memory.filled.tolist())]
    fields = {name: getattr(memory, name) for name in REPLAY_FIELDS}
    return {"frames": frames, "tree": memory.tree.nodes} | fields


def load_replay_state(memory: ReplayMemory, state: dict) -> None:
    for e, frames in enumerate(state["frames"]):  # from a memory-mapped file: read as they are copied
        memory.frames[e * memory.slots :][: len(frames)] = frames
    memory.tree.nodes.copy_(state["tree"])
    for name in REPLAY_FIELDS:
        getattr(memory, name).copy_(state[name])


def restart_games(memory: ReplayMemory, obs: np.ndarray) -> None:
    """On resuming: each env's game in progress ends at its current slot, marked `last` (as a truncation whose
    final observation is there), and the envs' new games start after it."""
    memory.last[memory.env_ids, memory.cur] = True
    memory.reset(obs)


def available_memory(device: torch.device) -> tuple[int | None, str]:
    """Bytes free for the replay memory: MemAvailable from /proc/meminfo, or the GPU's free memory."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0], "free on the GPU"
    try:
        with open("/proc/meminfo") as f:
            kb = next(int(line.split()[1]) for line in f if line.startswith("MemAvailable:"))
        return kb * 1024, "available (MemAvailable)"
    except (OSError, StopIteration):  # not Linux: nothing to compare with
        return None, ""


def check_memory(args: "Args", obs_shape: tuple) -> None:
    """Refuse a replay memory that cannot fit, now, rather than hours later when it has filled."""
    per_slot = ReplayMemory.bytes_per_slot(obs_shape)
    needed = -(-args.buffer_size // args.num_envs) * args.num_envs * per_slot
    available, where = available_memory(torch.device(args.buffer_device))
    reserve = 2**30  # for the rest of the run: torch, the networks, the minibatches, the tree's padding
    if available is not None and needed + reserve > available:
        fits = max(0, (available - reserve) // per_slot)
        fail(
            f"the replay memory needs {needed / 1e9:.2f} GB ({args.buffer_size:,} transitions x {per_slot:,} bytes) "
            f"but {available / 1e9:.2f} GB is {where}, 1 GiB of it kept for the rest of the run; "
            + (f"use --buffer-size {fits:,} or less" if fits >= args.batch_size else "free some memory first")
        )


# the domain of each flag of the algorithm (the shared flags' are in SHARED_DOMAINS)
DOMAINS = dict(preset=one_of("rainbow", "der"), num_envs=COUNT, buffer_size=POSITIVE, learning_rate=POSITIVE)
DOMAINS |= dict(buffer_device=one_of("cpu", "cuda"), adam_eps=POSITIVE, gamma=DISCOUNT, batch_size=POSITIVE)
DOMAINS |= dict(learning_starts=NON_NEGATIVE, train_frequency=POSITIVE, target_network_frequency=POSITIVE)
DOMAINS |= dict(network=one_of("nature", "der"), prioritized_replay_alpha=NON_NEGATIVE, n_step=COUNT)
DOMAINS |= dict(prioritized_replay_beta=PROBABILITY, prioritized_replay_eps=POSITIVE, sigma0=NON_NEGATIVE)
NUMBER = (lambda v: True, "a number")  # any: check_common refuses nan and inf in every float
DOMAINS |= dict(n_atoms=(lambda v: 2 <= v <= 2**20, "2 or more, at most 2**20"), v_min=NUMBER, v_max=NUMBER)
DOMAINS |= dict(start_e=PROBABILITY, end_e=PROBABILITY, exploration_fraction=DISCOUNT, eval_epsilon=PROBABILITY)


def check_args(args: Args) -> None:
    """Fail on bad input before anything is allocated."""
    check_common(args, DOMAINS)
    if args.learning_starts >= args.total_timesteps:
        fail(
            f"--learning-starts {args.learning_starts:,} leaves nothing to learn in {args.total_timesteps:,} steps; "
            "lower it, or raise --total-timesteps"
        )
    if args.learning_starts < args.n_step * args.num_envs:
        fail("--learning-starts must be at least --n-step x --num-envs (a whole n-step transition stored per env)")
    if args.buffer_size < max(args.batch_size, (args.n_step + 5) * args.num_envs):
        fail(f"--buffer-size {args.buffer_size} must hold --batch-size transitions and n-step + 5 per env at least")
    if args.v_min >= args.v_max:
        fail(f"--v-min must be below --v-max, got [{args.v_min}, {args.v_max}]")
    if args.buffer_device == "cuda" and not torch.cuda.is_available():
        fail("--buffer-device cuda needs a GPU that torch can see; use --buffer-device cpu")
    check_memory(args, (4, 84, 84))  # the frames of make_envs: a stack of 4, 84 x 84
    check_discrete_actions(args.env_id)
    atari_game(args.env_id)
    check_opencv(args.eval_episodes)


def check_discrete_actions(env_id: str) -> None:
    """Rainbow picks argmax_a over a finite set of actions: say so when given a continuous-action env."""
    import ale_py

    gym.register_envs(ale_py)
    spec = gym.registry.get(env_id)
    if spec is None or spec.entry_point == "ale_py.env:AtariEnv":
        return
    try:
        env = gym.make(env_id)
        space = env.action_space
        env.close()
    except Exception:  # cannot even build it: atari_game() reports the id as not an Atari game
        return
    if not isinstance(space, gym.spaces.Discrete):
        fail(f"{env_id} has continuous actions {space}; Rainbow takes the argmax over a finite set of actions")


def load_checkpoint(path: str, device: torch.device) -> tuple[RainbowNetwork, str]:
    """Load a model saved by --save-model, safely (weights_only: tensors and plain values, no code)."""
    checkpoint = load_file(path, mmap=True)  # on the CPU; the network goes to the device below
    if not isinstance(checkpoint, dict) or not {"model", "env_id", "num_actions", "network"} <= checkpoint.keys():
        fail(f"{path} is not a {SCRIPT} checkpoint (expected keys model, env_id, num_actions, network)")
    try:
        q_net = RainbowNetwork(4, checkpoint["num_actions"], **checkpoint["network"])
        q_net.to(device).load_state_dict(checkpoint["model"])
    except (TypeError, RuntimeError) as e:
        fail(f"checkpoint {path} does not fit {SCRIPT}'s network: {str(e).strip().splitlines()[-1].strip()}")
    return q_net, checkpoint["env_id"]


def evaluate(q_net: RainbowNetwork, args: Args, device: torch.device, video_dir: str | None = None) -> list[float]:
    """Play --eval-episodes whole games (all lives, raw score) epsilon-greedily (--eval-epsilon) on the mean network
    (noise off), on a single gymnasium env whose preprocessing gives the same frames as the training envs (and can
    render for video)."""
    env = make_eval_env(args.env_id, q_net.num_actions, video_dir)
    rng = np.random.default_rng(args.seed)
    q_net.eval()  # 6. noisy layers use their mean weights mu
    act = lambda obs: epsilon_greedy(q_net, obs[None], args.eval_epsilon, rng, device)[0]
    scores = play_games(env, act, args.eval_episodes, args.seed)
    q_net.train()
    return scores


if __name__ == "__main__":
    args = parse_args()
    if args.eval_checkpoint:
        # an --env-id given wins over the model's: the flags read again with the model's env as the default
        evaluate_checkpoint(args, DOMAINS, load_checkpoint, evaluate, lambda env_id: parse_args(env_default=env_id))
    else:
        train(args)
