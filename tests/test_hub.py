"""Hugging Face repo ids, resolved offline against a cache laid out as huggingface_hub lays it out."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import shirg
from shirg.cli import main
from shirg.errors import CheckpointError
from shirg.hub import ALLOW_PATTERNS, is_repo_id, resolve_model
from shirg.testing import write_tiny_lavida_checkpoint

COMMIT = "0123456789abcdef0123456789abcdef01234567"
OTHER = "fedcba9876543210fedcba9876543210fedcba98"


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """HF_HOME/hub/models--org--tiny-lavida/{refs/main, refs/v2, snapshots/<commit>/...}."""
    home = tmp_path / "hf"
    repo = home / "hub" / "models--org--tiny-lavida"
    for commit, seed in ((COMMIT, 0), (OTHER, 1)):
        write_tiny_lavida_checkpoint(repo / "snapshots" / commit, seed=seed, shards=2)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    (repo / "refs" / "v2").write_text(OTHER)
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    return repo


def test_repo_id_shape():
    assert is_repo_id("jacklishufan/lavida-llada-v1.0-instruct")
    assert not is_repo_id("./ckpt") and not is_repo_id("a/b/c") and not is_repo_id("../x") and not is_repo_id("/abs")
    assert not any(p.endswith((".py", ".bin", ".pt", ".pkl", ".pth")) for p in ALLOW_PATTERNS)


def test_offline_cache_resolves_refs_and_revisions(hub_cache):
    assert resolve_model("org/tiny-lavida") == hub_cache / "snapshots" / COMMIT
    assert resolve_model("org/tiny-lavida", revision="v2") == hub_cache / "snapshots" / OTHER
    assert resolve_model("org/tiny-lavida", revision=OTHER) == hub_cache / "snapshots" / OTHER
    a = shirg.load("org/tiny-lavida")
    b = shirg.load("org/tiny-lavida", revision="v2")
    wa, wb = a.model.transformer["wte"].weight, b.model.transformer["wte"].weight
    assert wa.shape == wb.shape and not (wa == wb).all()


def test_local_folder_wins(hub_cache, tmp_path):
    local = tmp_path / "org" / "tiny-lavida"
    shutil.copytree(hub_cache / "snapshots" / OTHER, local)
    assert resolve_model("org/tiny-lavida") == Path("org/tiny-lavida")
    with pytest.raises(CheckpointError, match="local folder"):
        resolve_model("org/tiny-lavida", revision="v2")


def test_missing_id_is_one_line(hub_cache, capsys, chart_image):
    with pytest.raises(CheckpointError) as err:
        resolve_model("org/not-cached")
    assert "org/not-cached is neither a local folder nor a Hugging Face model" in str(err.value)
    assert "HF_HUB_OFFLINE" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(CheckpointError, match="revision nope"):
        resolve_model("org/tiny-lavida", revision="nope")
    assert main(["answer", "--model", "org/not-cached", "--image", str(chart_image), "--question", "q?"]) == 2
    assert "neither a local folder" in capsys.readouterr().err
