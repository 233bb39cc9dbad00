"""rainbow_atari.py's sum tree: setting priorities and drawing slots, its set() and find() against the former ones.

    python benchmarks/rainbow_atari_sum_tree.py [--repeats 2000] [--size 1000000]

A tree of --size leaves (the default replay memory) filled with random priorities, then B priorities set at random
leaves, B = 5 (what each agent step sets: the slots whose validity the new frame changes) and B = 32 (a minibatch's
new priorities), and B = 32 slots drawn with find(). set() walks the log2(size) levels to the root: it takes each
level's ancestors from one shift of the leaves' indices (node >> j), gathers their B pairs of children (nodes 2k and
2k + 1, neighbours) with index_select and writes the sums back with index_copy_; the former set() halved the nodes
level by level and gathered and wrote with [] indexing. find() walks down: it gathers each level's B pairs of
children at once, where the former gathered the left and the right child apart. Both give the same tree and the
same draws bit for bit (checked here). Medians of --repeats, the two alternating in rounds. Writes
benchmarks/results/rainbow_atari_sum_tree.txt. Run it with nothing else on the machine.
"""

import argparse
import statistics
import time

import torch
from common import Report, import_script, result

rb = import_script("rainbow_atari")


def former_set(tree, index: torch.Tensor, priorities: torch.Tensor) -> None:
    """set() before: the parents found level by level, gathered and written with [] indexing."""
    node = tree.leaves + index
    tree.nodes[node] = priorities
    for _ in range(tree.depth):
        node = node // 2
        tree.nodes[node] = tree.nodes.view(-1, 2)[node].sum(dim=1)


def former_find(tree, mass: torch.Tensor) -> torch.Tensor:
    """find() before: the left and the right child gathered apart at each level."""
    node = torch.ones_like(mass, dtype=torch.long)
    for _ in range(tree.depth):
        left = tree.nodes[2 * node]
        right = (mass >= left) & (tree.nodes[2 * node + 1] > 0)
        mass = torch.where(right, mass - left, mass)
        node = 2 * node + right
    return node - tree.leaves


def time_us(fn, calls: list) -> float:
    times = []
    for args in calls:
        start = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=2000)
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument("--out", default=result("rainbow_atari_sum_tree.txt"))
    a = parser.parse_args()
    report = Report(a.out)
    report.say(f"torch threads: {torch.get_num_threads()}")
    generator = torch.Generator().manual_seed(0)
    ours, former = rb.SumTree(a.size, torch.device("cpu")), rb.SumTree(a.size, torch.device("cpu"))
    filled = torch.rand(a.size, dtype=torch.float64, generator=generator)
    ours.set(torch.arange(a.size), filled)
    former_set(former, torch.arange(a.size), filled)
    if not torch.equal(ours.nodes, former.nodes):
        raise SystemExit("the two set()s built different trees")
    report.say(f"a tree of {a.size:,} leaves ({ours.depth} levels), medians of {a.repeats:,} calls, in microseconds:")
    for batch in (5, 32):
        leaves = [torch.randint(0, a.size, (batch,), generator=generator) for _ in range(a.repeats)]
        calls = [(i, torch.rand(batch, dtype=torch.float64, generator=generator)) for i in leaves]
        rounds = {"set()": [], "former set()": []}
        for _ in range(3):  # alternating, each on its own tree
            rounds["set()"].append(time_us(ours.set, calls))
            rounds["former set()"].append(time_us(lambda i, p: former_set(former, i, p), calls))
        if not torch.equal(ours.nodes, former.nodes):
            raise SystemExit("the two set()s built different trees")
        now, before = statistics.median(rounds["set()"]), statistics.median(rounds["former set()"])
        report.say(f"  set {batch:>2} priorities: {now:7.1f} us, former {before:7.1f} us: {before / now:.2f}x")
    masses = [(torch.rand(32, dtype=torch.float64, generator=generator) * ours.total(),) for _ in range(a.repeats)]
    if not all(torch.equal(ours.find(m), former_find(ours, m)) for (m,) in masses[:100]):
        raise SystemExit("the two find()s drew different slots")
    rounds = {"find()": [], "former find()": []}
    for _ in range(3):
        rounds["find()"].append(time_us(ours.find, masses))
        rounds["former find()"].append(time_us(lambda m: former_find(ours, m), masses))
    now, before = statistics.median(rounds["find()"]), statistics.median(rounds["former find()"])
    report.say(f"  find 32 slots:      {now:7.1f} us, former {before:7.1f} us: {before / now:.2f}x")
    report.write()
