"""Atomic file and folder writes: a results file or checkpoint folder is either complete or absent,
never half-written."""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` then rename the temporary file onto ``path``."""
    path = Path(path)
    if path.is_dir():  # else the error would name the temporary file, not the path the user gave
        raise IsADirectoryError(errno.EISDIR, "is a folder, not a file: give a file path", str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(fd)
    try:
        write(Path(tmp))
        honour_umask(Path(tmp))  # mkstemp creates 0600 files; results are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def honour_umask(path: str | Path) -> Path:
    """Give a file (or every file in a folder tree) the mode a plain ``open()`` would: 0666 less the
    umask. safetensors, torch.save and mkstemp write 0600 files; a checkpoint or results folder should
    not mix private and shared files."""
    path = Path(path)
    mode = 0o666 & ~_umask()
    for p in [path, *path.rglob("*")] if path.is_dir() else [path]:
        if p.is_file() and not p.is_symlink():
            os.chmod(p, mode)
    return path


def write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda p: p.write_text(text))


def write_json(path: str | Path, obj) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def replace_dir(new: Path, final: Path) -> Path:
    """Put the complete folder ``new`` at ``final``. An existing ``final`` is first renamed aside and
    deleted only once ``new`` is in place, so an interruption never destroys the only copy: at
    worst (killed between the two renames) the previous folder survives as ``.<name>.old-*``."""
    old = None
    if final.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
        os.replace(final, old / final.name)
    os.replace(new, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return final


def write_dir(final: str | Path, write: Callable[[Path], Any]) -> Path:
    """``write(path)`` a folder at a fresh path next to ``final`` (the path does not exist yet), then
    swap it in with :func:`replace_dir`. If ``write`` fails, ``final`` is left as it was."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    holder = Path(tempfile.mkdtemp(prefix=f".{final.name}.new-", dir=final.parent))
    try:
        write(holder / final.name)
        replace_dir(holder / final.name, final)
    finally:
        shutil.rmtree(holder, ignore_errors=True)
    return final


def read_jsonl(path: str | Path) -> list[dict]:
    """Records of a JSONL file; a truncated or corrupt line is skipped with a warning."""
    path = Path(path)
    if not path.is_file():
        return []
    out = []
    lines = path.read_text(encoding="utf-8").split("\n")
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            where = "truncated last line" if n >= len(lines) - 1 else f"corrupt line {n}"
            log.warning("%s: skipping %s", path, where)
    return out
