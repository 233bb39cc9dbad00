#!/usr/bin/env bash
# Learning benchmark of ppo_atari.py: BreakoutNoFrameskip-v4, one seed (the first argument, 1 by default), 1M agent steps, default
# hyperparameters, then the curve beside CleanRL's run on the same kind of machine. Writes
# benchmarks/results/ppo_atari_breakout_1m{.png,_seed<seed>.log,_seed<seed>_metrics.csv} (the PNG of seed 1 only).
#     nohup bash benchmarks/ppo_atari_breakout_1m.sh 2 > /dev/null 2>&1 &
# A run of this seed that a kill cut after its first checkpoint (no saved model in its folder yet) is resumed
# from that checkpoint instead of started again. About 50 minutes on the 2-core CPU of this project's machines, with nothing else running.
set -euo pipefail
seed=${1:-1}
cd "$(dirname "$0")/.."
mkdir -p benchmarks/out
prefix=benchmarks/out/runs/BreakoutNoFrameskip-v4__ppo_atari__"$seed"__
log=benchmarks/out/ppo_atari_breakout_1m_seed$seed.log
# a run of this seed that was cut (a checkpoint, no saved model yet) goes on from its checkpoint, its log continued
cut=$(for r in "$prefix"*; do if [ -f "$r/checkpoint.pt" ] && [ ! -f "$r/ppo_atari.pt" ]; then echo "$r"; fi; done | tail -n 1)
if [ -n "$cut" ]; then
    (cd benchmarks/out && python ../../ppo_atari.py --resume "${cut#benchmarks/out/}") | tee -a "$log"
else
    (cd benchmarks/out && python ../../ppo_atari.py --env-id BreakoutNoFrameskip-v4 --seed "$seed" \
        --total-timesteps 1000000 --eval-episodes 10 --save-model) | tee "$log"
fi
run=${cut:-$(ls -td "$prefix"* | head -1)}
cp "$run/metrics.csv" "benchmarks/results/ppo_atari_breakout_1m_seed${seed}_metrics.csv"
cp "benchmarks/out/ppo_atari_breakout_1m_seed$seed.log" "benchmarks/results/ppo_atari_breakout_1m_seed$seed.log"
[ "$seed" = 1 ] || exit 0
python benchmarks/plot_learning.py "$run/metrics.csv" \
    --reference benchmarks/results/ppo_atari_breakout_1m_cleanrl_seed1.csv --random 1.7 \
    --title "PPO, BreakoutNoFrameskip-v4, seed 1, 1M steps" --out benchmarks/results/ppo_atari_breakout_1m.png
