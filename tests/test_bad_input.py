"""Every value a user can type, generated over every script's flags: nan, inf, -inf, 0 and a negative for each float
flag; -1, 0 and 2**40 for each int flag; "" and "a/b" for each string flag; and the combinations that once slipped
through. Each value is refused with one line starting `error:` before anything is made (no runs/ folder), or it lies
in the flag's declared domain, and then a tiny run with it trains with finite metrics (where the value keeps the run
tiny: a 2**40 count is only checked)."""

import dataclasses
import importlib
import math
import os
import typing

import pytest
from conftest import ROOT, TINY_RUNS, read_metrics, train

SCRIPTS = list(TINY_RUNS)
VALUES = {float: [math.nan, math.inf, -math.inf, 0.0, -1.0], int: [-1, 0, 2**40], str: ["", "a/b"]}
# combinations and single values that broke the promise once (a run that could not learn, or a late traceback)
MORE = {name: [dict(seed=2**32), dict(exp_name="."), dict(exp_name=".."), dict(exp_name="a__b")] for name in SCRIPTS}
MORE["dqn_atari"] += [dict(learning_starts=600, total_timesteps=600)]
MORE["rainbow_atari"] += [dict(learning_starts=300, total_timesteps=300), dict(preset="der", total_timesteps=64)]
MORE["ppo_atari"] += [dict(learning_rate=1e308 * 10)]


def flag_types(name: str) -> list[tuple[str, type]]:
    """(flag, int, float or str) of every flag of the script that is a number or a string; a bool is always one of
    its two values, an optional flag is checked when given."""
    out = []
    for field in dataclasses.fields(importlib.import_module(name).Args):
        kind = field.type
        options = [t for t in typing.get_args(kind) if t is not type(None)]
        if typing.get_origin(kind) is typing.Literal:
            kind = str
        elif options and kind not in (int, float, str, bool):
            kind = options[0]
        if kind is not bool:
            assert kind in VALUES, (name, field.name, field.type)
            out.append((field.name, kind))
    return out


CASES = [(name, {flag: value}) for name in SCRIPTS for flag, kind in flag_types(name) for value in VALUES[kind]]
CASES += [(name, flags) for name, more in MORE.items() for flags in more]


def in_domain(module, flags: dict) -> bool:
    """Whether every value given lies in its flag's declared domain."""
    domains = module.SHARED_DOMAINS | module.DOMAINS
    finite = lambda v: not isinstance(v, float) or math.isfinite(v)  # noqa: E731
    return all(finite(v) and domains[k][0](v) for k, v in flags.items())


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_flag_that_is_a_number_or_a_string_has_a_domain(name):
    """A flag added without a domain fails here (and check_common would stop on it with a KeyError)."""
    module = importlib.import_module(name)
    missing = {flag for flag, _ in flag_types(name)} - set(module.SHARED_DOMAINS | module.DOMAINS)
    assert not missing, f"{name}: flags without a domain: {sorted(missing)}"


@pytest.mark.parametrize(
    "name,flags", CASES, ids=[f"{name}-" + ",".join(f"{k}={v!r}" for k, v in flags.items()) for name, flags in CASES]
)
def test_a_value_is_refused_in_one_line_or_trains(in_tmp, name, flags):
    module = importlib.import_module(name)
    args = module.Args(**{**TINY_RUNS[name], **flags})
    try:
        module.check_args(args, 1) if name == "ppo_atari" else module.check_args(args)
    except SystemExit as e:
        message = str(e)
        assert message.startswith("error: ") and "\n" not in message, message
        assert not os.path.exists("runs"), "nothing may be made before the input is checked"
        return
    assert in_domain(module, flags), f"accepted outside its declared domain: {flags}"
    if any(value == 2**40 for value in flags.values()):
        return  # legal, but not a tiny run
    try:
        run_dir = train(name, **flags)
    except SystemExit as e:  # refused when the run starts (a --resume folder that is not there): still one line
        assert str(e).startswith("error: ") and "\n" not in str(e) and "training stopped" not in str(e), str(e)
        assert not os.path.exists("runs") or not os.listdir("runs")
        return
    values = [float(row["value"]) for row in read_metrics(run_dir)]
    assert values and all(math.isfinite(v) for v in values)


def test_the_readme_gives_the_number_of_values_tried():
    assert {name for name, _ in CASES} == set(SCRIPTS)
    readme = open(os.path.join(ROOT, "README.md")).read()
    assert f"{len(CASES)} values over the six scripts" in readme, len(CASES)
