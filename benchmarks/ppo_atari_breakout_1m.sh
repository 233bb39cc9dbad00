#!/usr/bin/env bash
# Learning benchmark of ppo_atari.py: BreakoutNoFrameskip-v4, seed 1, 1M agent steps, default
# hyperparameters, then the curve beside CleanRL's run on the same kind of machine. Writes
# benchmarks/results/ppo_atari_breakout_1m{.png,_seed1.log,_seed1_metrics.csv}.
# About 50 minutes on the 2-core CPU of this project's machines, with nothing else running.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p benchmarks/out
(cd benchmarks/out && python ../../ppo_atari.py --env-id BreakoutNoFrameskip-v4 --seed 1 \
    --total-timesteps 1000000 --eval-episodes 10) | tee benchmarks/out/ppo_atari_breakout_1m.log
run=$(ls -td benchmarks/out/runs/BreakoutNoFrameskip-v4__ppo_atari__1__* | head -1)
cp "$run/metrics.csv" benchmarks/results/ppo_atari_breakout_1m_seed1_metrics.csv
cp benchmarks/out/ppo_atari_breakout_1m.log benchmarks/results/ppo_atari_breakout_1m_seed1.log
python benchmarks/plot_learning.py "$run/metrics.csv" \
    --reference benchmarks/results/ppo_atari_breakout_1m_cleanrl_seed1.csv --random 1.7 \
    --title "PPO, BreakoutNoFrameskip-v4, seed 1, 1M steps" --out benchmarks/results/ppo_atari_breakout_1m.png
