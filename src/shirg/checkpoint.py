"""Reading and writing safetensors checkpoint folders (single file or sharded with an index), safely.

Only safetensors are read; nothing is unpickled. Tensors are read lazily by name, so taking the
vision tower out of a 16 GB LaViDa checkpoint touches only the vision tensors.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import torch
from safetensors import safe_open

from shirg.errors import CheckpointError, ConfigError
from shirg.io import honour_umask
from shirg.limits import read_json_file

INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"


def read_config(folder: str | Path) -> dict:
    """config.json of a checkpoint folder, with a clear error when absent or invalid."""
    if not Path(folder).is_dir():
        raise CheckpointError(f"checkpoint folder {folder} does not exist")
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{folder}: no config.json; point to a checkpoint folder that holds one")
    return read_json_file(path)  # size-limited, UTF-8, a JSON object


def key_index(folder: str | Path) -> dict[str, Path]:
    """Map every tensor name in the folder to the safetensors file that holds it."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"checkpoint folder {folder} does not exist")
    index = folder / INDEX_NAME
    if index.is_file():
        weight_map = read_json_file(index).get("weight_map")
        if not isinstance(weight_map, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()):
            raise CheckpointError(f"{index} is not a valid safetensors index: weight_map must map tensor names "
                                  "to shard file names")
        bad = sorted({v for v in weight_map.values() if Path(v).name != v or v in (".", "..")})
        if bad:  # a shard must be a file in the folder itself, never a path elsewhere
            raise CheckpointError(f"{index} names shard files outside the folder: {', '.join(bad[:3])}")
        files = {name: folder / fname for name, fname in weight_map.items()}
        missing = sorted({str(p.name) for p in files.values() if not p.is_file()})
        if missing:
            raise CheckpointError(f"{folder}: shard file(s) named in {INDEX_NAME} are missing: {', '.join(missing)}")
        return files
    files = [folder / SINGLE_NAME] if (folder / SINGLE_NAME).is_file() else sorted(folder.glob("*.safetensors"))
    if not files:
        raise CheckpointError(
            f"{folder}: no {SINGLE_NAME}, {INDEX_NAME} or *.safetensors file; "
            "only safetensors checkpoints are supported (convert .bin files first)"
        )
    out: dict[str, Path] = {}
    for f in files:
        with _open(f) as handle:
            for name in handle.keys():
                out[name] = f
    return out


def _open(path: Path):
    try:
        return safe_open(str(path), framework="pt", device="cpu")
    except Exception as e:  # safetensors raises its own error types for corrupt headers
        raise CheckpointError(f"cannot read {path}: {e}; the file is corrupt or not safetensors") from e


def _by_file(index: dict[str, Path], names: Iterable[str]) -> dict[Path, list[str]]:
    """Group tensor names by the file that holds them, so each file is opened once."""
    by_file: dict[Path, list[str]] = {}
    for name in names:
        by_file.setdefault(index[name], []).append(name)
    return by_file


def load_tensors(
    index: dict[str, Path],
    names: Iterable[str],
    rename: Callable[[str], str] = lambda n: n,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
) -> dict[str, torch.Tensor]:
    """Read the named tensors (grouped per file) and return them under ``rename(name)``.

    Each tensor goes straight to ``device`` (floating tensors cast to ``dtype`` when given), one
    at a time, so no full-precision copy of the whole checkpoint is ever held.
    """
    out: dict[str, torch.Tensor] = {}
    for path, group in _by_file(index, names).items():
        with _open(path) as handle:
            for name in group:
                try:
                    t = handle.get_tensor(name)
                except Exception as e:  # noqa: BLE001 - a truncated shard, a name the shard lacks
                    raise CheckpointError(f"cannot read {name} from {path}: {e}; the file is corrupt or "
                                          "truncated") from e
                cast = dtype if dtype is not None and t.is_floating_point() else t.dtype
                out[rename(name)] = t.to(device=device, dtype=cast)
    return out


def check_state_dict(
    expected: dict[str, torch.Size], found: dict[str, torch.Size], what: str, folder: str | Path
) -> None:
    """Raise CheckpointError naming every missing, unexpected or mis-shaped tensor."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    wrong = sorted(
        f"{k} (checkpoint {tuple(found[k])}, model {tuple(expected[k])})"
        for k in set(expected) & set(found)
        if tuple(found[k]) != tuple(expected[k])
    )
    problems = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
        if items:
            shown = ", ".join(items[:12]) + (f" ... ({len(items)} in all)" if len(items) > 12 else "")
            problems.append(f"{label}: {shown}")
    if problems:
        raise CheckpointError(
            f"{what} in {folder} does not match the model: " + "; ".join(problems)
            + ". Check that the folder is the right checkpoint and the config matches it."
        )


def tensor_shapes(index: dict[str, Path], names: Iterable[str]) -> dict[str, torch.Size]:
    """Shapes of the named tensors, read from the headers only."""
    out: dict[str, torch.Size] = {}
    for path, group in _by_file(index, names).items():
        with _open(path) as handle:
            present = set(handle.keys())
            missing = [n for n in group if n not in present]
            if missing:
                raise CheckpointError(f"{path} does not hold {', '.join(missing[:3])}"
                                      f"{' ...' if len(missing) > 3 else ''}, which {INDEX_NAME} says it does; "
                                      "the index and the shards do not match")
            for name in group:
                out[name] = torch.Size(handle.get_slice(name).get_shape())
    return out


def check_floating(state: dict[str, torch.Tensor], where: str | Path) -> None:
    """Every tensor a floating-point one (weights); an int64 or bool tensor is a broken checkpoint."""
    bad = [f"{k} ({str(v.dtype).removeprefix('torch.')})" for k, v in state.items() if not v.is_floating_point()]
    if bad:
        raise CheckpointError(f"{where}: weights must be floating point, found {', '.join(bad[:3])}"
                              f"{' ...' if len(bad) > 3 else ''}")


def read_safetensors_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor of one safetensors file on the CPU; CheckpointError when it is corrupt or truncated."""
    path = Path(path)
    out: dict[str, torch.Tensor] = {}
    with _open(path) as handle:
        try:
            for name in handle.keys():
                out[name] = handle.get_tensor(name)
        except Exception as e:  # noqa: BLE001 - safetensors raises its own error types
            raise CheckpointError(f"cannot read {path}: {e}; the file is corrupt or truncated") from e
    return out


def read_safetensors_metadata(path: str | Path) -> dict[str, str]:
    """The string metadata of one safetensors file's header ({} when it has none)."""
    with _open(Path(path)) as handle:
        return dict(handle.metadata() or {})


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def shard_by_bytes(tensors: dict[str, torch.Tensor], max_shard_bytes: int) -> list[list[str]]:
    """Group tensor names, in order, into shards of at most ``max_shard_bytes`` (a tensor larger than
    that gets a shard of its own)."""
    groups: list[list[str]] = [[]]
    size = 0
    for name, t in tensors.items():
        if groups[-1] and size + _nbytes(t) > max_shard_bytes:
            groups.append([])
            size = 0
        groups[-1].append(name)
        size += _nbytes(t)
    return groups


def write_safetensors_folder(out_dir: str | Path, tensors: dict[str, torch.Tensor],
                             shards: int | Sequence[Sequence[str]] = 1, metadata: dict[str, str] | None = None) -> Path:
    """Write ``tensors`` into ``out_dir`` as a checkpoint :func:`key_index` reads.

    ``shards`` is a shard count (names split in order into that many near-equal groups) or the name
    groups themselves (e.g. from :func:`shard_by_bytes`). One shard is a single ``model.safetensors``;
    more are ``model-0000k-of-0000n.safetensors`` plus ``model.safetensors.index.json`` with
    ``total_size``. ``metadata`` goes into every file's header (default ``{"format": "pt"}``).
    """
    from safetensors.torch import save_file

    names = list(tensors)
    if isinstance(shards, int):
        if shards < 1:
            raise ConfigError(f"shards must be >= 1, got {shards}")
        per_shard = -(-len(names) // shards)
        groups = [names] if shards == 1 else [names[i:i + per_shard] for i in range(0, len(names), per_shard)]
        if len(groups) < shards:
            raise ConfigError(f"{shards} shards is more than the {len(names)} tensors; use fewer shards")
    else:
        groups = [list(g) for g in shards]
    metadata = {"format": "pt"} if metadata is None else metadata
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if len(groups) == 1:
        save_file({n: tensors[n] for n in groups[0]}, str(out / SINGLE_NAME), metadata=metadata)
        honour_umask(out / SINGLE_NAME)  # safetensors writes 0600; the folder's other files follow the umask
        return out
    weight_map: dict[str, str] = {}
    for k, group in enumerate(groups, start=1):
        fname = f"model-{k:05d}-of-{len(groups):05d}.safetensors"
        save_file({n: tensors[n] for n in group}, str(out / fname), metadata=metadata)
        honour_umask(out / fname)
        weight_map |= dict.fromkeys(group, fname)
    total = sum(_nbytes(tensors[n]) for n in weight_map)
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (out / INDEX_NAME).write_text(json.dumps(index, indent=2))
    return out
