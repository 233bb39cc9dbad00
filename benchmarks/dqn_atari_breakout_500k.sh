#!/usr/bin/env bash
# Learning benchmark of dqn_atari.py: BreakoutNoFrameskip-v4, 500k agent steps, learning
# starts at 20k, epsilon 1 -> 0.01 over the first 100k steps, other flags at their defaults; then the
# curve beside the random score (1.7) as a PNG, and the run's metrics copied into benchmarks/results/.
#     nohup bash benchmarks/dqn_atari_breakout_500k.sh > benchmarks/out/dqn_atari_breakout_500k.log 2>&1 &
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p benchmarks/out benchmarks/results
cd benchmarks/out
python ../../dqn_atari.py --env-id BreakoutNoFrameskip-v4 --seed 1 --total-timesteps 500000 \
    --learning-starts 20000 --exploration-fraction 0.2 --eval-episodes 10 --save-model
run=$(ls -d runs/BreakoutNoFrameskip-v4__dqn_atari__1__* | tail -n 1)
cd ../..
cp "benchmarks/out/$run/metrics.csv" benchmarks/results/dqn_atari_breakout_500k_seed1_metrics.csv
python benchmarks/plot_learning.py benchmarks/results/dqn_atari_breakout_500k_seed1_metrics.csv --random 1.7 \
    --label "dqn_atari.py (this repo)" --title "DQN, BreakoutNoFrameskip-v4, seed 1, 500k steps" \
    --out benchmarks/results/dqn_atari_breakout_500k.png
