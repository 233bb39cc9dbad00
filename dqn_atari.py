"""DQN on Atari: Q-learning with a deep network, experience replay and a frozen target network.

DQN starts from tabular Q-learning, which moves Q(s, a) towards a one-step bootstrapped target:

    Q(s, a) <- Q(s, a) + alpha (r + gamma max_a' Q(s', a') - Q(s, a))

and replaces the table by a network Q_theta fitted by gradient descent. The naive candidate acts
epsilon-greedily and takes one gradient step per transition, on the transition it just saw:

    loop
        a  <- argmax_a Q_theta(s, a) with probability 1 - epsilon, rand(A) otherwise
        r  <- act!(env, a);  s' <- observe(env)
        theta <- theta - alpha grad_theta || r + gamma max_a' Q_theta(s', a') - Q_theta(s, a) ||_2
        s  <- s'

Its three problems and DQN's two fixes:
    1. consecutive samples are highly correlated  -> experience replay: store the experience tuples
    2. batches of size 1                              (s, a, r, s') and learn from random minibatches
    3. the target moves with every step of theta   -> a frozen target network theta', copied from
                                                      theta every few thousand steps
giving the loss, minimized over minibatches from the replay memory:

    l(s, a, r, s') = (r + gamma max_a' Q_theta'(s', a') - Q_theta(s, a))^2

Papers: Mnih et al. 2013, "Playing Atari with Deep Reinforcement Learning"; Mnih et al. 2015,
"Human-level control through deep reinforcement learning" (Nature; the network and the preprocessing).
Defaults are those of CleanRL's dqn_atari.py, so results compare.

Examples:
    python dqn_atari.py --env-id BreakoutNoFrameskip-v4
    python dqn_atari.py --env-id ALE/Pong-v5 --total-timesteps 2000000 --loss huber --save-model --track
    python dqn_atari.py --eval-checkpoint runs/<run>/dqn_atari.pt --eval-episodes 10 --capture-video

Install, for this file alone (training and its evaluation):
    pip install "torch>=2.5" "gymnasium>=1.1" "ale-py>=0.12" opencv-python-headless "tyro>=0.9.29" numpy
and for a flag that needs more: --tensorboard: tensorboard; --track: "wandb>=0.31"; --capture-video: moviepy.
(opencv-python-headless is OpenCV without display libraries: gymnasium's evaluation env resizes frames with it.)

Symbols: gamma -> args.gamma, alpha -> args.learning_rate, epsilon -> args.start_e .. args.end_e,
theta -> q_net, theta' -> target_net, the replay memory D -> memory (args.buffer_size transitions).

Deliberate departures from the Nature paper (all as in CleanRL's dqn_atari.py, so results compare):
- Adam (lr 1e-4) instead of RMSProp (lr 2.5e-4); target copied every 1,000 steps instead of 10,000
  updates; epsilon 1 -> 0.01 over the first 10% of training instead of 1 -> 0.1 over 1M frames;
- the squared error of the lecture by default; `--loss huber` is the paper's error clipping (the
  gradient of the TD error clipped to [-1, 1] is the gradient of the Huber loss with delta 1);
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
    checkpoint_every: int = 150_000
    """agent steps between checkpoints of the whole training state into runs/<run>/checkpoint.pt (0: none)"""
    bf16: bool = False
    """the update's forward passes in bfloat16 under torch.autocast (acting stays fp32); the losses, the optimizer
    and checkpoints stay fp32. Fast where the hardware has bf16 (GPUs since Ampere, CPUs with AMX or AVX512-BF16)"""
    checkpoint_replay: bool = True
    """write the replay memory into each checkpoint (off: a resumed run refills it for --learning-starts steps)"""

    # Algorithm: defaults of CleanRL's dqn_atari.py
    num_envs: int = 1
    """parallel game instances (1 as in the paper)"""
    buffer_size: int = 1_000_000
    """transitions the replay memory holds (about 7.1 KB each: one 84x84 frame and a few bytes)"""
    buffer_device: Literal["cpu", "cuda"] = "cpu"
    """where the replay memory lives (cuda: on the GPU, so that a minibatch never crosses the bus)"""
    learning_rate: float = 1e-4
    """Adam step size alpha"""
    gamma: float = 0.99
    """discount factor gamma"""
    batch_size: int = 32
    """transitions per minibatch sampled from the replay memory"""
    learning_starts: int = 80_000
    """agent steps of pure collection before the first update"""
    train_frequency: int = 4
    """one update every this many agent steps"""
    target_network_frequency: int = 1_000
    """copy theta into the frozen theta' every this many agent steps"""
    start_e: float = 1.0
    """epsilon at the start"""
    end_e: float = 0.01
    """epsilon at the end of the decay, and after"""
    exploration_fraction: float = 0.1
    """fraction of --total-timesteps over which epsilon decays linearly from --start-e to --end-e"""
    loss: Literal["mse", "huber"] = "mse"
    """mse: the lecture's squared TD error; huber: the Nature paper's error clipping"""
    eval_epsilon: float = 0.05
    """epsilon of the epsilon-greedy policy during evaluation (Mnih et al. 2015)"""


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


class QNetwork(nn.Module):
    """The Nature-DQN network (Mnih et al. 2015): stacked frames in, one Q value per action out."""

    def __init__(self, frames: int, num_actions: int):
        super().__init__()
        self.num_actions = num_actions
        self.net = nn.Sequential(
            nn.Conv2d(frames, 32, 8, stride=4),  # [B, 32, 20, 20]
            nn.ReLU(),
            nn.Conv2d(32, 64, 4, stride=2),  # [B, 64, 9, 9]
            nn.ReLU(),
            nn.Conv2d(64, 64, 3, stride=1),  # [B, 64, 7, 7]
            nn.ReLU(),
            nn.Flatten(),  # [B, 3136]
            nn.Linear(64 * 7 * 7, 512),
            nn.ReLU(),
            nn.Linear(512, num_actions),  # [B, A]
        )

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """uint8 frames [B, 4, 84, 84] -> Q_theta(s, .) [B, A]."""
        # channels_last (NHWC) convolutions: faster on CPU (see ppo_atari.py); scale to [0, 1] in place
        x = obs.contiguous(memory_format=torch.channels_last).float().mul_(1.0 / 255.0)
        # under --bf16's autocast (the update) the layers run in bfloat16; Q comes back in fp32: the TD error is a
        # difference of nearby numbers
        return self.net(x).float()


class ReplayMemory:
    """The replay memory D of experience tuples (s, a, r, s'), one 84x84 frame per step.

    An observation is a stack of the last 4 frames, so consecutive observations share 3 of them, and s'
    of one step is s of the next: storing each frame once instead of s and s' (8 frames) per step takes
    1M transitions from 56 GB down to 7.1 GB. Each env writes its own ring of slots: slot i holds the
    newest frame of an observation, and the action, clipped reward and termination of the step taken
    from it. s is rebuilt from slots i-3..i and s' from slots i-2..i+1; frames from before the game's
    first observation are zero, as the env's own stack is after a reset, so that a rebuilt stack equals
    bit for bit what the env returned and never mixes two games. A life loss terminates (no bootstrap)
    but the game and its stack go on. At a game's end (a termination on the last life, or a time-limit
    truncation) the env has already reset (SameStep): the game's final observation from
    info["final_obs"] takes one extra slot, marked `last` (no step starts there), and the next game
    starts in the slot after it. A truncated step thus bootstraps from its true final observation.
    """

    def __init__(self, capacity: int, num_envs: int, obs_shape: tuple, device: torch.device):
        self.stack = obs_shape[0]
        self.slots = -(-capacity // num_envs)  # slots per env
        shape = (num_envs, self.slots)
        # empty, not zeros: untouched pages take no RAM, so memory use grows as the ring fills
        self.frames = torch.empty((*shape, *obs_shape[1:]), dtype=torch.uint8, device=device)
        self.actions = torch.zeros(shape, dtype=torch.uint8, device=device)
        self.rewards = torch.zeros(shape, dtype=torch.int8, device=device)  # sign(r) in {-1, 0, 1}
        self.terminations = torch.zeros(shape, dtype=torch.bool, device=device)
        # frames of the same game before this slot's, capped at stack - 1: how far back s may reach
        self.history = torch.zeros(shape, dtype=torch.uint8, device=device)
        self.last = torch.zeros(shape, dtype=torch.bool, device=device)  # a game's final observation
        self.cur = torch.full((num_envs,), -1, dtype=torch.long, device=device)  # slot of each env's s
        self.filled = torch.zeros(num_envs, dtype=torch.long, device=device)  # slots written, up to slots
        self.env_ids = torch.arange(num_envs, device=device)
        self.window = torch.arange(1 - self.stack, 2, device=device)  # slot offsets of s and s': [-3..1]
        self.device = device

    @staticmethod
    def bytes_per_slot(obs_shape: tuple) -> int:
        """One frame and 5 one-byte fields (action, reward, termination, history, last)."""
        return int(np.prod(obs_shape[1:])) + 5

    def _append(self, envs: torch.Tensor, frames: np.ndarray, history: torch.Tensor | int, last) -> None:
        slot = (self.cur[envs] + 1) % self.slots
        self.frames[envs, slot] = torch.from_numpy(frames).to(self.device)
        self.history[envs, slot] = history
        self.last[envs, slot] = last
        self.cur[envs] = slot
        self.filled[envs] = (self.filled[envs] + 1).clamp_(max=self.slots)

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
        """Slots a step starts from: s' is stored, all of s is still there, and it is not a game's end."""
        age = (self.cur[envs] - slots) % self.slots  # 0: the current s, whose step is not taken yet
        reach = self.history[envs, slots].long()
        return (age >= 1) & (age + reach < self.filled[envs]) & ~self.last[envs, slots]

    def sample_slots(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Uniform (env, slot) pairs among the valid ones: draw from the written slots, redraw the invalid."""
        n = len(self.env_ids)
        envs = torch.randint(n, (batch_size,), device=self.device)
        slots = (torch.rand(batch_size, device=self.device) * self.filled[envs]).long()
        while not (ok := self.valid(envs, slots)).all():  # a few % of draws at most: ring ends, game ends
            new_envs = torch.randint(n, (batch_size,), device=self.device)
            new_slots = (torch.rand(batch_size, device=self.device) * self.filled[new_envs]).long()
            envs, slots = torch.where(ok, envs, new_envs), torch.where(ok, slots, new_slots)
        return envs, slots

    def transitions(self, envs: torch.Tensor, slots: torch.Tensor):
        """(s, a, r, terminated, s') at the given slots, stacks rebuilt with zeros before a game's start."""
        # [B, 5]: slots i-3 .. i+1 of each env, as rows of the frames viewed as one [N * slots, 84, 84] ring
        window = envs[:, None] * self.slots + (slots[:, None] + self.window) % self.slots
        # index_select copies whole frames: 15x faster here than advanced indexing, which goes byte by byte
        frames = self.frames.flatten(0, 1).index_select(0, window.flatten()).view(*window.shape, *self.frames.shape[2:])
        before_start = self.window < -self.history[envs, slots, None].long()  # [B, 5]
        frames.masked_fill_(before_start[:, :, None, None], 0)
        obs, next_obs = frames[:, :-1], frames[:, 1:]  # [B, 4, 84, 84] each
        actions = self.actions[envs, slots].long()
        rewards = self.rewards[envs, slots].float()
        return obs, actions, rewards, self.terminations[envs, slots].float(), next_obs

    def sample(self, batch_size: int):
        return self.transitions(*self.sample_slots(batch_size))


# --- family schedules: begin ---
def linear_schedule(start: float, end: float, duration: float, t: int) -> float:
    """From start at t = 0 linearly to end at t = duration, then end (epsilon down, PER's beta up)."""
    return start + (end - start) * min(t / max(duration, 1), 1.0)


def times_due(every: int, global_step: int, steps: int) -> int:
    """How many multiples of `every` the last `steps` agent steps passed (N envs step N at a time: 0, 1 or more).
    With one env: 1 when global_step % every == 0, else 0."""
    return global_step // every - (global_step - steps) // every


# --- family schedules: end ---


def epsilon_greedy(q_net: QNetwork, obs: np.ndarray, epsilon: float, rng: np.random.Generator, device) -> np.ndarray:
    """lecture: a <- argmax_a Q_theta(s, a) with probability 1 - epsilon, rand(A) otherwise; obs [N, 4, 84, 84]."""
    explore = rng.random(len(obs)) < epsilon
    actions = rng.integers(q_net.num_actions, size=len(obs))
    if not explore.all():  # no forward pass while every env explores (the warm-up at epsilon 1)
        with torch.inference_mode():
            greedy = q_net(torch.from_numpy(obs).to(device)).argmax(dim=1).cpu().numpy()
        actions = np.where(explore, actions, greedy)
    return actions


def td_target(rewards: torch.Tensor, terminations: torch.Tensor, next_q_target: torch.Tensor, gamma: float):
    """y = r + gamma (1 - terminated) max_a' Q_theta'(s', a'), next_q_target = Q_theta'(s', .) [B, A]: the
    Q-learning target with the frozen theta', for the loss l(s, a, r, s') = (y - Q_theta(s, a))^2.

    No bootstrap through a termination: there is no s' to value. A truncation (the time limit) is not
    a termination, and s' is then the final observation of the cut game, which is bootstrapped."""
    return rewards + gamma * (1.0 - terminations) * next_q_target.max(dim=1).values


def train(args: Args) -> str:
    """Act epsilon-greedily, store each transition in the replay memory, and every --train-frequency
    steps take one gradient step on a random minibatch; copy theta into theta' every
    --target-network-frequency steps. Returns the run folder."""
    check_args(args)
    seed_everything(args.seed, args.torch_deterministic)
    device, buffer_device = pick_device(args.cuda, bf16=args.bf16), torch.device(args.buffer_device)
    envs = make_envs(args.env_id, args.num_envs)
    obs_shape, num_actions = envs.single_observation_space.shape, envs.single_action_space.n
    N = args.num_envs
    num_iterations = args.total_timesteps // N
    with Run(args, num_iterations * N) as run:
        q_net = QNetwork(obs_shape[0], num_actions).to(device, memory_format=torch.channels_last)
        target_net = QNetwork(obs_shape[0], num_actions).to(device, memory_format=torch.channels_last)
        target_net.load_state_dict(q_net.state_dict())
        target_net.requires_grad_(False)
        # impl detail: fused Adam, one kernel for all parameters (on CPU the default loops over them, op by op)
        optimizer = torch.optim.Adam(q_net.parameters(), lr=args.learning_rate, fused=True)
        memory = ReplayMemory(args.buffer_size, N, obs_shape, buffer_device)
        rng = np.random.default_rng(args.seed)  # exploration

        obs, info = envs.reset(seed=run.env_seed(args.seed))
        scores = GameScores(info["lives"])  # the raw score of each env's game, over all its lives

        model = lambda: {"model": q_net.state_dict(), "env_id": args.env_id, "num_actions": int(num_actions)}
        checkpoint = lambda: training_state(model(), target_net, optimizer, updates, rng, memory, args)
        # a new run: step 0, the first observations into the memory; --resume: all as the checkpoint holds it
        global_step, updates, learning_starts = resume(run, q_net, target_net, optimizer, rng, memory, obs, args)
        for _ in range(global_step // N, num_iterations):
            # ---- act: epsilon-greedy on Q_theta ----
            epsilon = linear_schedule(
                args.start_e, args.end_e, args.exploration_fraction * args.total_timesteps, global_step
            )
            actions = epsilon_greedy(q_net, obs, epsilon, rng, device)

            # ---- observe and store the experience tuple (s, a, r, s') ----
            next_obs, reward, terminated, truncated, info = envs.step(actions)
            global_step += N
            game_over, games = scores.step(global_step, reward, terminated, truncated, info["lives"])
            # impl detail: learn from clipped rewards sign(r) in {-1, 0, 1} (Mnih et al. 2015)
            memory.add(actions, reward, terminated, next_obs, game_over, info.get("final_obs"))
            obs = next_obs
            run.log_games(games)

            # ---- learn: one minibatch step per --train-frequency agent steps, after the warm-up ----
            if global_step > learning_starts:
                for _ in range(times_due(args.train_frequency, global_step, N)):  # one update per train_frequency steps
                    batch = (t.to(device) for t in memory.sample(args.batch_size))
                    obs_b, actions_b, rewards_b, terminations_b, next_obs_b = batch
                    # lecture: l(s, a, r, s') = (sign(r) + gamma (1 - terminated) max_a' Q_theta'(s', a')
                    #                            - Q_theta(s, a))^2
                    # --bf16: the update's forward passes in bfloat16. Acting stays fp32: one frame at a time, its
                    # forward is bound by reading the weights, and autocast would add a bf16 copy of them each step
                    with torch.autocast(device.type, torch.bfloat16, enabled=args.bf16):
                        with torch.no_grad():
                            y = td_target(rewards_b, terminations_b, target_net(next_obs_b), args.gamma)
                        q_sa = q_net(obs_b).gather(1, actions_b[:, None]).squeeze(1)
                    # deviation: --loss huber is the Nature paper's clipping of the TD error's gradient to [-1, 1]
                    loss = F.mse_loss(q_sa, y) if args.loss == "mse" else F.smooth_l1_loss(q_sa, y)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    updates += 1
                    if updates % 100 == 0:  # .item() waits for the device: not at every update
                        sps = run.sps(global_step)
                        losses = {"losses/td_loss": loss.item(), "losses/q_values": q_sa.mean().item()}
                        run.log(global_step, {**losses, "charts/epsilon": epsilon, "charts/SPS": sps})
                # ---- sync: the frozen target theta' <- theta ----
                if times_due(args.target_network_frequency, global_step, N):
                    target_net.load_state_dict(q_net.state_dict())
            run.step_done(global_step, checkpoint)
        envs.close()
        run.step_done(global_step, checkpoint, final=True)
        return run.finish(global_step, model(), partial(evaluate, q_net, args, device))


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


REPLAY_FIELDS = ("actions", "rewards", "terminations", "history", "last", "cur", "filled")


def replay_state(memory: ReplayMemory) -> dict:
    """All that is written, for a checkpoint: each env's frames up to its filled slots, and the small fields."""
    frames = [own_storage(memory.frames[e, :n]) for e, n in enumerate(memory.filled.tolist())]
    return {"frames": frames} | {name: getattr(memory, name) for name in REPLAY_FIELDS}


def load_replay_state(memory: ReplayMemory, state: dict) -> None:
    for e, frames in enumerate(state["frames"]):  # from a memory-mapped file: read as they are copied
        memory.frames[e, : len(frames)] = frames
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
    reserve = 2**30  # for the rest of the run: torch, the networks, the minibatches
    if available is not None and needed + reserve > available:
        fits = max(0, (available - reserve) // per_slot)
        fail(
            f"the replay memory needs {needed / 1e9:.2f} GB ({args.buffer_size:,} transitions x {per_slot:,} bytes) "
            f"but {available / 1e9:.2f} GB is {where}, 1 GiB of it kept for the rest of the run; "
            + (f"use --buffer-size {fits:,} or less" if fits >= args.batch_size else "free some memory first")
        )


# the domain of each flag of the algorithm (the shared flags' are in SHARED_DOMAINS)
DOMAINS = dict(num_envs=COUNT, buffer_size=POSITIVE, buffer_device=one_of("cpu", "cuda"), learning_rate=POSITIVE)
DOMAINS |= dict(gamma=DISCOUNT, batch_size=POSITIVE, learning_starts=NON_NEGATIVE, train_frequency=POSITIVE)
DOMAINS |= dict(target_network_frequency=POSITIVE, start_e=PROBABILITY, end_e=PROBABILITY, eval_epsilon=PROBABILITY)
DOMAINS |= dict(exploration_fraction=DISCOUNT, loss=one_of("mse", "huber"))


def check_args(args: Args) -> None:
    """Fail on bad input before anything is allocated."""
    check_common(args, DOMAINS)
    if args.learning_starts >= args.total_timesteps:
        fail(
            f"--learning-starts {args.learning_starts:,} leaves nothing to learn in {args.total_timesteps:,} steps; "
            "lower it, or raise --total-timesteps"
        )
    if args.buffer_size < max(args.batch_size, 5 * args.num_envs):
        fail(f"--buffer-size {args.buffer_size} must hold --batch-size transitions and 5 per env at least")
    if args.buffer_device == "cuda" and not torch.cuda.is_available():
        fail("--buffer-device cuda needs a GPU that torch can see; use --buffer-device cpu")
    check_memory(args, (4, 84, 84))  # the frames of make_envs: a stack of 4, 84 x 84
    check_discrete_actions(args.env_id)
    atari_game(args.env_id)
    check_opencv(args.eval_episodes)


def check_discrete_actions(env_id: str) -> None:
    """DQN picks argmax_a over a finite set of actions: say so when given a continuous-action env."""
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
        fail(f"{env_id} has continuous actions {space}; DQN takes the argmax over a finite set of actions")


def load_checkpoint(path: str, device: torch.device) -> tuple[QNetwork, str]:
    """Load a model saved by --save-model, safely (weights_only: tensors and plain values, no code)."""
    checkpoint = load_file(path, mmap=True)  # on the CPU; the network goes to the device below
    if not isinstance(checkpoint, dict) or not {"model", "env_id", "num_actions"} <= checkpoint.keys():
        fail(f"{path} is not a {SCRIPT} checkpoint (expected keys model, env_id, num_actions)")
    q_net = QNetwork(4, checkpoint["num_actions"]).to(device, memory_format=torch.channels_last)
    try:
        q_net.load_state_dict(checkpoint["model"])
    except RuntimeError as e:
        fail(f"checkpoint {path} does not fit {SCRIPT}'s network: {str(e).splitlines()[1].strip()}")
    return q_net, checkpoint["env_id"]


def evaluate(q_net: QNetwork, args: Args, device: torch.device, video_dir: str | None = None) -> list[float]:
    """Play --eval-episodes whole games (all lives, raw score) epsilon-greedily (--eval-epsilon) on Q_theta, on a
    single gymnasium env whose preprocessing gives the same frames as the training envs (and can render for video)."""
    env = make_eval_env(args.env_id, q_net.num_actions, video_dir)
    rng = np.random.default_rng(args.seed)
    with torch.inference_mode():
        act = lambda obs: epsilon_greedy(q_net, obs[None], args.eval_epsilon, rng, device)[0]
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
        train(args)
