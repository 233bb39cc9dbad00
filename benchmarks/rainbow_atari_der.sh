#!/usr/bin/env bash
# Atari-100k benchmark of rainbow_atari.py: Data-Efficient Rainbow (--preset der) for 100k agent steps
# on one game, one seed, then 10 evaluation games with the mean network (noise off, epsilon 0.001, the raw game
# score), and the same 10 games with uniform random actions for the random score on this setup.
# DER's published scores (van Hasselt et al. 2019): RoadRunner 9600, KungFuMaster 14346, Freeway 27.9,
# Krull 2851, Kangaroo 779. A run of the game and seed that a kill cut after its first checkpoint (there is no
# saved model in its folder yet) is resumed from that checkpoint instead of started again. Writes benchmarks/results/rainbow_atari_der_<game>_seed<seed>{.txt,_metrics.csv,.png}.
#     nohup bash benchmarks/rainbow_atari_der.sh RoadRunnerNoFrameskip-v4 1 > benchmarks/out/rainbow_atari_der_roadrunner.log 2>&1 &
set -euo pipefail
env_id=${1:-RoadRunnerNoFrameskip-v4}
seed=${2:-1}
game=${env_id%%NoFrameskip-v4}
game=$(echo "${game#ALE/}" | tr '[:upper:]' '[:lower:]')
cd "$(dirname "$0")/.."
mkdir -p benchmarks/out benchmarks/results
cd benchmarks/out
prefix=runs/"${env_id//\//-}"__rainbow_der__"$seed"__
# a run of this game and seed that was cut (a checkpoint, no saved model yet) goes on from its checkpoint
cut=$(for r in "$prefix"*; do if [ -f "$r/checkpoint.pt" ] && [ ! -f "$r/rainbow_der.pt" ]; then echo "$r"; fi; done | tail -n 1)
if [ -n "$cut" ]; then
    python ../../rainbow_atari.py --resume "$cut"
else
    python ../../rainbow_atari.py --preset der --env-id "$env_id" --seed "$seed" --eval-episodes 10 --save-model \
        --exp-name rainbow_der
fi
run=${cut:-$(ls -d "$prefix"* | tail -n 1)}
python - "$run" "$env_id" "$seed" "$game" <<'PY'
import subprocess, sys
sys.path.insert(0, "..")
import numpy as np
import torch
from common import import_script, metric

rb = import_script("rainbow_atari")
run, env_id, seed, game = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
published = {"roadrunner": 9600, "kungfumaster": 14346, "freeway": 27.9, "krull": 2851, "kangaroo": 779}
trained = metric(f"{run}/metrics.csv", "eval/episodic_return")[1]
q_net, _ = rb.load_checkpoint(f"{run}/rainbow_der.pt", torch.device("cpu"))
random_play = rb.Args(env_id=env_id, eval_episodes=10, eval_epsilon=1.0, seed=seed)  # epsilon 1: uniform random actions
random_scores = rb.evaluate(q_net, random_play, torch.device("cpu"))
line = (f"{env_id} seed {seed}: DER preset 100k steps: {np.mean(trained):.1f} +- {np.std(trained):.1f} "
        f"(10 games); random {np.mean(random_scores):.1f} +- {np.std(random_scores):.1f} (10 games); "
        f"DER published {published.get(game, 'n/a')}")
print(line)
out = f"../results/rainbow_atari_der_{game}_seed{seed}"
open(f"{out}.txt", "w").write(line + "\n")
cmd = [sys.executable, "../plot_learning.py", f"{run}/metrics.csv", "--random", f"{np.mean(random_scores):.1f}"]
cmd += ["--window", "20", "--summary-every", "20000", "--label", "rainbow_atari.py --preset der (training games)"]
cmd += ["--title", f"Data-Efficient Rainbow, {env_id}, seed {seed}, 100k steps", "--out", f"{out}.png"]
if game in published:
    cmd += ["--published", str(published[game]), "--published-label", "DER published (van Hasselt et al. 2019)"]
subprocess.run(cmd, check=True)
PY
cp "$run/metrics.csv" "../results/rainbow_atari_der_${game}_seed${seed}_metrics.csv"
