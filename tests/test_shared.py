"""The blocks every script must have word for word (marked '# --- shared: begin/end ---'), and one device for all."""

import ast
import glob
import importlib
import io
import os
import re
import tokenize

import pytest
import torch
from conftest import ROOT

SCRIPTS = sorted(glob.glob(os.path.join(ROOT, "*.py")))
MARKED = re.compile(r"# --- shared: begin ---\n(.*?)# --- shared: end ---", re.S)


def shared_blocks(path):
    return MARKED.findall(open(path).read())


def test_every_script_has_the_shared_blocks():
    assert SCRIPTS, "no scripts found"
    for path in SCRIPTS:
        assert len(shared_blocks(path)) == 2, f"{os.path.basename(path)}: expected the Args block and the helpers block"


def test_shared_blocks_are_identical_across_scripts():
    reference = shared_blocks(SCRIPTS[0])
    for path in SCRIPTS[1:]:
        for i, (block, ref) in enumerate(zip(shared_blocks(path), reference, strict=True)):
            assert block == ref, (
                f"shared block {i} of {os.path.basename(path)} differs from {os.path.basename(SCRIPTS[0])}"
            )


def test_scripts_import_nothing_from_this_repo():
    local = {os.path.basename(p)[:-3] for p in SCRIPTS}
    for path in SCRIPTS:
        imports = re.findall(r"^\s*(?:from|import)\s+([\w.]+)", open(path).read(), re.M)
        assert not local & {name.split(".")[0] for name in imports}, (
            f"{os.path.basename(path)} imports a sibling script"
        )


# ---------------------------------------------------------------- one device: no tensor made on the CPU by default

FACTORIES = {"zeros", "ones", "empty", "full", "arange", "tensor", "as_tensor", "randperm", "rand", "randn", "randint"}
FACTORIES |= {"eye", "linspace", "logspace", "normal"}


def factories_without_device(source: str) -> list[str]:
    """Calls torch.<factory>(...) without device=, outside the __init__ of an nn.Module (whose parameters and
    buffers .to(device) moves with the module); a *_like takes its input's device and is not a factory here."""
    tree = ast.parse(source)
    exempt = set()
    for cls in (n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)):
        if any(ast.unparse(base) in ("nn.Module", "torch.nn.Module") for base in cls.bases):
            for fn in (n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "__init__"):
                exempt |= {id(n) for n in ast.walk(fn)}
    return [
        f"{node.lineno}: {ast.unparse(node)}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and ast.unparse(node.func.value) == "torch"
        and node.func.attr in FACTORIES
        and id(node) not in exempt
        and not any(k.arg == "device" for k in node.keywords)
    ]


def test_every_tensor_factory_names_its_device():
    """torch.zeros(n) is a CPU tensor: mixed with CUDA tensors it fails only on a GPU."""
    missing = [f"{os.path.basename(p)}:{line}" for p in SCRIPTS for line in factories_without_device(open(p).read())]
    assert not missing, "tensor factories without a device:\n" + "\n".join(missing)


def test_the_factory_check_finds_a_cpu_tensor():
    bad = """
import torch
import torch.nn as nn

class Net(nn.Module):
    def __init__(self):
        self.register_buffer("mean", torch.zeros(3))  # moved by .to(device): fine

def mean_baseline(r, k):
    sums = torch.zeros(int(k.max()) + 1, dtype=r.dtype)  # on the CPU whatever r's device: caught
    return torch.zeros_like(r), torch.arange(3, device=r.device), sums
"""
    assert factories_without_device(bad) == ["10: torch.zeros(int(k.max()) + 1, dtype=r.dtype)"]


def meta(*shape, dtype=torch.float32):
    return torch.empty(shape, dtype=dtype, device="meta")


T, N, B, A = 5, 3, 7, 4
MATH = {  # each function without data-dependent Python scalars, on inputs on the meta device
    "ppo_atari": {
        "gae": lambda m: m.gae(*(meta(T, N) for _ in range(5)), 0.99, 0.95),
        "clipped_surrogate": lambda m: m.clipped_surrogate(meta(B), meta(B), 0.1),
        "logprob_and_entropy": lambda m: m.logprob_and_entropy(meta(B, A), meta(B, dtype=torch.long)),
    },
    "trpo": {
        "gae": lambda m: m.gae(*(meta(T, N) for _ in range(5)), 0.99, 0.95),
        "categorical_logprob": lambda m: m.categorical_logprob(meta(B, A), meta(B, dtype=torch.long)),
        "gaussian_logprob": lambda m: m.gaussian_logprob(meta(B, A), meta(B, A), meta(A)),
        "categorical_kl": lambda m: m.categorical_kl(meta(B, A), meta(B, A)),
        "gaussian_kl": lambda m: m.gaussian_kl(meta(B, A), meta(A), meta(B, A), meta(A)),
    },
    "reinforce": {
        "reward_to_go": lambda m: m.reward_to_go(*(meta(T, N) for _ in range(4)), 0.99),
        "step_in_episode": lambda m: m.step_in_episode(meta(T, N)),
        "mean_baseline": lambda m: m.mean_baseline(meta(B), meta(B)),
        "policy_gradient_loss": lambda m: m.policy_gradient_loss(meta(B), meta(B), meta(B), meta(B), 4),
        "categorical_logprob": lambda m: m.categorical_logprob(meta(B, A), meta(B, dtype=torch.long)),
        "gaussian_logprob": lambda m: m.gaussian_logprob(meta(B, A), meta(B, A), meta(A)),
    },
    "natural_pg": {
        "reward_to_go": lambda m: m.reward_to_go(*(meta(T, N) for _ in range(4)), 0.99),
        "step_in_episode": lambda m: m.step_in_episode(meta(T, N)),
        "policy_gradient_loss": lambda m: m.policy_gradient_loss(meta(B), meta(B), meta(B), meta(B), 4),
        "categorical_kl": lambda m: m.categorical_kl(meta(B, A), meta(B, A)),
        "gaussian_kl": lambda m: m.gaussian_kl(meta(B, A), meta(A), meta(B, A), meta(A)),
        "fisher_matrix": lambda m: m.fisher_matrix(meta(B, A, 10)),
        "euclidean_step": lambda m: m.euclidean_step(meta(10), 0.01),
        "natural_step": lambda m: m.natural_step(meta(10), meta(10), 0.01),
    },
    "dqn_atari": {"td_target": lambda m: m.td_target(meta(B), meta(B), meta(B, A), 0.99)},
    "rainbow_atari": {
        "n_step_return": lambda m: m.n_step_return(meta(B, 3), *(meta(B, 3, dtype=torch.bool) for _ in range(2)), 0.9),
        "importance_weights": lambda m: m.importance_weights(meta(B, dtype=torch.float64), 0.4),
        "project_distribution": lambda m: m.project_distribution(meta(B), meta(B), meta(B, 51), meta(51)),
    },
}


@pytest.mark.parametrize("name,function", [(s, f) for s, fs in MATH.items() for f in fs])
def test_the_math_runs_on_the_inputs_device(name, function):
    """torch raises when a CPU tensor made inside meets an input on the meta device, as it would on a GPU."""
    out = MATH[name][function](importlib.import_module(name))
    for tensor in out if isinstance(out, tuple) else (out,):
        assert tensor.device.type == "meta"


# ---------------------------------------------------------------- the README's lecture index cannot rot


def lecture_index():
    """Rows (lecture, formula, script, function) of the README's table under "The lecture, formula by formula"."""
    readme = open(os.path.join(ROOT, "README.md")).read()
    section = readme.split("## The lecture, formula by formula", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| lecture")]
    cells = [[c.strip().strip("`").replace("\\|", "|") for c in re.split(r"(?<!\\)\|", row)[1:-1]] for row in rows]
    return [tuple(c) for c in cells]


def squeeze(text: str) -> str:
    return " ".join(text.split())


def test_the_lecture_index_covers_every_script():
    index = lecture_index()
    assert len(index) >= 20 and {script for _, _, script, _ in index} == {os.path.basename(p) for p in SCRIPTS}


@pytest.mark.parametrize("lecture,formula,script,function", lecture_index())
def test_each_indexed_function_carries_its_formula(lecture, formula, script, function):
    tree = ast.parse(open(os.path.join(ROOT, script)).read())
    found = [n for n in tree.body if isinstance(n, ast.FunctionDef | ast.ClassDef) and n.name == function]
    assert found, f"{script} has no top-level {function} ({lecture})"
    assert squeeze(formula) in squeeze(ast.get_docstring(found[0]) or ""), f"{script}:{function} lacks {formula!r}"


# ---------------------------------------------------------------- size, in code tokens

LAYOUT = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER}
LAYOUT |= {tokenize.ENCODING}


def code_token_lines(source: str) -> list[int]:
    """The line of each code token: Python tokens other than comments, docstrings (a module's, function's or
    class's first string; in a class every bare string, tyro's field docstrings) and layout. An f-string is one token
    on every Python (3.12 splits it into parts, 3.11 does not), so the count does not depend on the interpreter."""
    docstrings = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Module | ast.FunctionDef | ast.ClassDef):
            body = node.body if isinstance(node, ast.ClassDef) else node.body[:1]
            for st in body:
                if isinstance(st, ast.Expr) and isinstance(st.value, ast.Constant) and isinstance(st.value.value, str):
                    docstrings |= set(range(st.lineno, st.end_lineno + 1))
    lines, depth = [], 0
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == getattr(tokenize, "FSTRING_START", None):
            depth += 1
            if depth == 1:
                lines.append(tok.start[0])
        elif depth:
            depth -= tok.type == getattr(tokenize, "FSTRING_END", None)
        elif tok.type not in LAYOUT and not (tok.type == tokenize.STRING and tok.start[0] in docstrings):
            lines.append(tok.start[0])
    return lines


def test_the_token_counter_counts_code_only():
    source = '''"""module docstring"""
import os  # a comment


class Args:
    """class docstring"""

    seed: int = 1
    """a field's docstring"""


def f(x):
    """f's docstring"""
    return f"{x} and {os.sep}" + "a string"
'''
    # import os | class Args : | seed : int = 1 | def f ( x ) : | return <f-string> + "a string"
    assert len(code_token_lines(source)) == 2 + 3 + 5 + 6 + 4


def sizes(path: str) -> dict:
    """Code tokens above the Appendix banner, below it, in the shared block, in the largest top-level definitions."""
    source = open(path).read()
    lines = source.splitlines()
    tokens = code_token_lines(source)
    count = lambda first, last: sum(first <= line <= last for line in tokens)  # noqa: E731
    banners = [i for i, line in enumerate(lines, 1) if line.startswith("# ") and "Appendix" in line]
    assert len(banners) == 1, f"{os.path.basename(path)}: one Appendix banner"
    shared = [
        i for i, line in enumerate(lines, 1) if line.strip() in ("# --- shared: begin ---", "# --- shared: end ---")
    ]
    definitions = {
        node.name: count(node.lineno, node.end_lineno)
        for node in ast.parse(source).body
        if isinstance(node, ast.FunctionDef | ast.ClassDef)
    }
    above = count(1, banners[0])
    return dict(
        lines=len(lines),
        above=above,
        below=len(tokens) - above,
        shared=count(*shared[:2]) + count(*shared[2:]),
        definitions=definitions,
    )


# the most code tokens above the Appendix banner (the algorithm; the Atari scripts 80 more for --bf16) and below it
# (the plumbing)
BUDGET = {  # script: (above, below)
    "ppo_atari.py": (2467, 4895),
    "dqn_atari.py": (2805, 5075),
    "rainbow_atari.py": (4878, 5333),
    "reinforce.py": (2462, 4582),
    "natural_pg.py": (2880, 5186),
    "trpo.py": (3164, 4844),
}
SHARED_BUDGET, RUN_BUDGET, TORCHRUN_BUDGET = 3322, 1683, 700


@pytest.mark.parametrize("name", sorted(BUDGET))
def test_each_file_keeps_its_size_in_code_tokens(name):
    size = sizes(os.path.join(ROOT, name))
    above, below = BUDGET[name]
    assert size["above"] <= above and size["below"] <= below, (name, size["above"], size["below"])
    assert size["shared"] <= SHARED_BUDGET and size["definitions"]["Run"] <= RUN_BUDGET


def test_ppo_atari_keeps_torchrun_small():
    """All of ppo_atari.py's code for several processes: the torchrun functions of the appendix, the lines of
    train(), check_args() and resume() that speak of processes, and __main__'s handling of a lost process."""
    source = open(os.path.join(ROOT, "ppo_atari.py")).read()
    tokens = code_token_lines(source)
    tree = ast.parse(source)
    torchrun = {"torchrun_place", "join_processes", "mean_over_processes", "exchange", "lost_other_process"}
    spans = [(n.lineno, n.end_lineno) for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in torchrun]
    # the names of the processes and of their exchanges (using the DDP-wrapped `learner` is not counted: it is the
    # agent for learning, the line that wraps it is)
    words = re.compile(r"\b(rank|world_size|local_size|dist|DistributedDataParallel|run\.writer)\b")
    lines = source.splitlines()
    code_lines = set(tokens)  # not a docstring's or a comment's
    speaks = lambda i: i in code_lines and words.search(lines[i - 1].split("#")[0])  # noqa: E731
    spans += [(i, i) for i in range(1, len(lines) + 1) if speaks(i)]
    counted = {line for line in tokens if any(first <= line <= last for first, last in spans)}
    assert len(counted) <= TORCHRUN_BUDGET, len(counted)
    train = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "train")
    in_train = [i for i in range(train.lineno, train.end_lineno + 1) if speaks(i)]
    assert len(in_train) <= 10, [lines[i - 1] for i in in_train]
    for other in ("reinforce.py", "natural_pg.py", "trpo.py", "dqn_atari.py", "rainbow_atari.py"):
        assert "torch.distributed" not in open(os.path.join(ROOT, other)).read()


def test_the_readme_gives_each_files_sizes():
    """The README's sizes (lines; code tokens above the banner, below it, in all) are those of the files."""
    readme = open(os.path.join(ROOT, "README.md")).read()
    for path in SCRIPTS:
        size = sizes(path)
        total = size["above"] + size["below"]
        row = f"| `{os.path.basename(path)}` | {size['lines']:,} | {size['above']:,} | {size['below']:,} | {total:,} |"
        assert row in readme, f"README lacks {row!r}"


# ---------------------------------------------------------------- families: blocks some scripts share

FAMILIES = {  # family -> the scripts that carry it, word for word
    "atari": ["dqn_atari.py", "ppo_atari.py", "rainbow_atari.py"],
    "atari-appendix": ["dqn_atari.py", "ppo_atari.py", "rainbow_atari.py"],
    "replay-checkpoint": ["dqn_atari.py", "rainbow_atari.py"],
    "schedules": ["dqn_atari.py", "rainbow_atari.py"],
    "policy-gradient": ["natural_pg.py", "reinforce.py", "trpo.py"],
    "classic-appendix": ["natural_pg.py", "reinforce.py", "trpo.py"],
    "reward-to-go": ["natural_pg.py", "reinforce.py"],
    "episodes": ["natural_pg.py", "reinforce.py"],
    "policy-agent": ["natural_pg.py", "trpo.py"],
    "fisher": ["natural_pg.py", "trpo.py"],
}


@pytest.mark.parametrize("family", FAMILIES)
def test_family_blocks_are_identical_in_every_script_that_carries_them(family):
    marked = re.compile(
        rf"# --- family {re.escape(family)}: begin ---\n(.*?)# --- family {re.escape(family)}: end ---", re.S
    )
    blocks = {os.path.basename(p): marked.findall(open(p).read()) for p in SCRIPTS}
    carriers = sorted(name for name, found in blocks.items() if found)
    assert carriers == FAMILIES[family], f"{family} is marked in {carriers}"
    first = blocks[carriers[0]]
    for name in carriers[1:]:
        assert blocks[name] == first, f"family {family}: {name} differs from {carriers[0]}"
