"""Atomic writes: files and folders are complete or absent, and no temporary files are left behind."""

from __future__ import annotations

import json

import pytest
import torch

from shirg.checkpoint import INDEX_NAME, SINGLE_NAME, key_index, load_tensors, shard_by_bytes, write_safetensors_folder
from shirg.errors import ConfigError
from shirg.io import atomic_write, replace_dir, write_dir, write_json


def _folder(d, **files):
    d.mkdir()
    for name, text in files.items():
        (d / name).write_text(text)


def test_write_dir_failure_keeps_the_old_folder_and_leaves_no_temp_dirs(tmp_path):
    final = tmp_path / "out"
    write_dir(final, lambda d: _folder(d, a="1"))
    assert (final / "a").read_text() == "1"

    def fails(d):
        _folder(d, a="half", b="half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_dir(final, fails)
    assert sorted(f.name for f in final.iterdir()) == ["a"] and (final / "a").read_text() == "1"
    assert sorted(f.name for f in tmp_path.iterdir()) == ["out"]

    with pytest.raises(KeyboardInterrupt):
        write_dir(tmp_path / "fresh", lambda d: (_folder(d, x="1"), (_ for _ in ()).throw(KeyboardInterrupt())))
    assert sorted(f.name for f in tmp_path.iterdir()) == ["out"]


def test_write_dir_replaces_an_existing_folder_whole(tmp_path):
    final = tmp_path / "nested" / "out"
    assert write_dir(str(final), lambda d: _folder(d, a="1")) == final
    write_dir(final, lambda d: _folder(d, b="2"))
    assert [f.name for f in final.iterdir()] == ["b"]
    assert [f.name for f in final.parent.iterdir()] == ["out"]


def test_replace_dir_moves_new_into_place(tmp_path):
    new, final = tmp_path / "new", tmp_path / "final"
    _folder(new, a="new")
    _folder(final, a="old", b="old")
    replace_dir(new, final)
    assert not new.exists() and [f.name for f in final.iterdir()] == ["a"] and (final / "a").read_text() == "new"
    assert sorted(f.name for f in tmp_path.iterdir()) == ["final"]


def test_atomic_write_failure_keeps_the_old_file(tmp_path):
    path = write_json(tmp_path / "r.json", {"a": 1})

    def fails(p):
        p.write_text("half")
        raise OSError("interrupted")

    with pytest.raises(OSError):
        atomic_write(path, fails)
    assert json.loads(path.read_text()) == {"a": 1}
    assert [f.name for f in tmp_path.iterdir()] == ["r.json"]


def _tensors():
    return {f"t{i}": torch.full((4, i + 1), float(i)) for i in range(5)}


@pytest.mark.parametrize("shards", [1, 2, 5])
def test_safetensors_folder_round_trip(tmp_path, shards):
    tensors = _tensors()
    out = write_safetensors_folder(tmp_path / "ck", tensors, shards)
    names = sorted(f.name for f in out.iterdir())
    if shards == 1:
        assert names == [SINGLE_NAME]
    else:
        index = json.loads((out / INDEX_NAME).read_text())
        assert index["metadata"]["total_size"] == sum(t.numel() * t.element_size() for t in tensors.values())
        assert sorted(set(index["weight_map"].values())) == [
            f"model-{k:05d}-of-{shards:05d}.safetensors" for k in range(1, shards + 1)]
        assert len(names) == shards + 1
    loaded = load_tensors(key_index(out), tensors)
    assert all(torch.equal(loaded[k], v) for k, v in tensors.items())


def test_safetensors_folder_shard_groups_and_errors(tmp_path):
    tensors = _tensors()
    groups = shard_by_bytes(tensors, 40)
    assert [n for g in groups for n in g] == list(tensors) and len(groups) > 1
    out = write_safetensors_folder(tmp_path / "ck", tensors, groups, metadata={"format": "pt", "who": "test"})
    index = json.loads((out / INDEX_NAME).read_text())
    assert len(set(index["weight_map"].values())) == len(groups)
    with pytest.raises(ConfigError, match="fewer shards"):
        write_safetensors_folder(tmp_path / "x", tensors, 6)
    with pytest.raises(ConfigError, match=">= 1"):
        write_safetensors_folder(tmp_path / "y", tensors, 0)
