"""The blocks every script must have word for word (STYLE.md: '# --- shared: begin/end ---')."""

import glob
import os
import re

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
