#!/usr/bin/env bash
# Learning benchmark of dqn_atari.py: BreakoutNoFrameskip-v4, 500k agent steps, one seed (the first argument, 1 by default), learning
# starts at 20k, epsilon 1 -> 0.01 over the first 100k steps, other flags at their defaults; then the
# curve beside the random score (1.7) as a PNG, and the run's metrics copied into benchmarks/results/.
#     nohup bash benchmarks/dqn_atari_breakout_500k.sh 2 > benchmarks/out/dqn_atari_breakout_500k.log 2>&1 &
set -euo pipefail
seed=${1:-1}
cd "$(dirname "$0")/.."
mkdir -p benchmarks/out benchmarks/results
cd benchmarks/out
prefix=runs/BreakoutNoFrameskip-v4__dqn_atari__"$seed"__
# a run of this seed that was cut (a checkpoint, no saved model yet) goes on from its checkpoint
cut=$(for r in "$prefix"*; do if [ -f "$r/checkpoint.pt" ] && [ ! -f "$r/dqn_atari.pt" ]; then echo "$r"; fi; done | tail -n 1)
if [ -n "$cut" ]; then
    python ../../dqn_atari.py --resume "$cut"
else
    python ../../dqn_atari.py --env-id BreakoutNoFrameskip-v4 --seed "$seed" --total-timesteps 500000 \
        --learning-starts 20000 --exploration-fraction 0.2 --eval-episodes 10 --save-model
fi
run=${cut:-$(ls -d "$prefix"* | tail -n 1)}
cd ../..
cp "benchmarks/out/$run/metrics.csv" "benchmarks/results/dqn_atari_breakout_500k_seed${seed}_metrics.csv"
[ "$seed" = 1 ] || exit 0
python benchmarks/plot_learning.py "benchmarks/results/dqn_atari_breakout_500k_seed${seed}_metrics.csv" --random 1.7 \
    --label "dqn_atari.py (this repo)" --title "DQN, BreakoutNoFrameskip-v4, seed 1, 500k steps" \
    --out benchmarks/results/dqn_atari_breakout_500k.png
