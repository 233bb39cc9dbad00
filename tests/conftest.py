import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """Run in an empty folder so that runs/ and wandb/ land there."""
    monkeypatch.chdir(tmp_path)
    return tmp_path
