"""`shirg report` on real outputs of `shirg eval`, `shirg bench` and `shirg bench --analytic` (tiny model)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch

from shirg.cli import main
from shirg.errors import ShirgError
from shirg.evaluate.modes import ABLATIONS
from shirg.evaluate.report import build_report
from shirg.testing import write_tiny_lavida_checkpoint

NUMBER = re.compile(r"\d+(?:\.\d+)?")
UNIT_SCALES = (1.0, 1e3, 1 / 2**20, 1e-9)  # as is; s -> ms; bytes -> MiB; bytes -> GB
SOURCES = ("summary.json", "run.json", "bench.json", "analytic.json")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: one thread is as fast and does not stall on a busy machine
    try:
        yield _make_runs(tmp_path_factory.mktemp("report"))
    finally:
        torch.set_num_threads(threads)


def _make_runs(root: Path) -> dict:
    ckpt = write_tiny_lavida_checkpoint(root / "ckpt")
    assert main(["entitygrid", "--out", str(root / "eg"), "--n", "4", "--seed", "0", "--size", "336"]) == 0
    ev = root / "eval_eg"
    assert main(["eval", "--model", str(ckpt), "--task", "entitygrid", "--data", str(root / "eg"),
                 "--modes", "lowres,shirg,shirg-no-coords", "--limit", "4", "--gen-length", "8", "--steps", "4",
                 "--resolution", "336", "--overlays", "1", "--warmup", "0", "--no-progress", "--out", str(ev)]) == 0
    bench = root / "bench_tiny"
    assert main(["bench", "--preset", "tiny", "--modes", "lowres,shirg", "--steps", "4", "--gen-length", "8",
                 "--repeats", "1", "--resolution", "336", "--device", "cpu", "--out", str(bench)]) == 0
    roof = root / "roofline"
    assert main(["bench", "--analytic", "--out", str(roof)]) == 0
    return {"root": root, "eval": ev, "bench": bench, "analytic": roof}


# ----------------------------------------------------------------------------- the number check


def _walk(obj, numbers: list[float], words: set[str]) -> None:
    if isinstance(obj, bool) or obj is None:
        return
    if isinstance(obj, int | float):
        numbers.append(float(obj))
    elif isinstance(obj, str):
        words.update(NUMBER.findall(obj))
    elif isinstance(obj, dict):
        for k, v in obj.items():
            words.update(NUMBER.findall(str(k)))
            _walk(v, numbers, words)
    elif isinstance(obj, list):
        for v in obj:
            _walk(v, numbers, words)


def source_values(*folders: Path) -> tuple[list[float], set[str]]:
    numbers, words = [], set()
    for folder in folders:
        for name in SOURCES:
            if (folder / name).is_file():
                _walk(json.loads((folder / name).read_text()), numbers, words)
    return numbers, words


def unsourced(text: str, numbers: list[float], words: set[str]) -> list[str]:
    """Numbers in ``text`` that are no source value (rounded as shown, in one of the unit scales)
    and no number written inside a source string."""
    bad = []
    for token in NUMBER.findall(text):
        if token in words:
            continue
        digits = len(token.split(".")[1]) if "." in token else 0
        if not any(f"{abs(v) * s:.{digits}f}" == token for v in numbers for s in UNIT_SCALES):
            bad.append(token)
    return bad


def report_parts(report: str) -> tuple[list[str], list[str]]:
    """(table rows, prose lines) without fenced code, inline code, link targets and the ablation labels
    (those describe a switch, they are not results)."""
    tables, prose, fenced = [], [], False
    for line in report.splitlines():
        if line.startswith("```"):
            fenced = not fenced
            continue
        if fenced:
            continue
        line = re.sub(r"`[^`]*`", "", re.sub(r"\]\([^)]*\)", "]", line))
        for desc, _ in ABLATIONS.values():
            line = line.replace(desc, "")
        if line.startswith("|"):
            if not set(line) <= set("|-"):
                tables.append(line)
        else:
            prose.append(line)
    return tables, prose


def test_number_check_is_not_vacuous():
    numbers, words = [0.4321, 2048.0, 5e-3, 3 * 2**20], {"7"}
    assert unsourced("| 43.2 | 0.43 | 2048 | 5.0 | 3.00 | 7 |", numbers, words) == ["43.2"]
    assert unsourced("| 12.5 | 0.44 |", numbers, words) == ["12.5", "0.44"]


def test_every_number_in_the_report_comes_from_the_runs(runs, tmp_path):
    out = build_report([runs["eval"]], [runs["bench"]], [runs["analytic"]], tmp_path / "REPORT.md")
    text = out.read_text()
    numbers, words = source_values(runs["eval"], runs["bench"], runs["analytic"])
    tables, prose = report_parts(text)
    cells = sum(len(NUMBER.findall(line)) for line in tables)
    assert len(tables) > 20 and cells > 150  # the check below looks at real tables
    assert [(line, unsourced(line, numbers, words)) for line in tables if unsourced(line, numbers, words)] == []
    assert [(line, unsourced(line, numbers, words)) for line in prose if unsourced(line, numbers, words)] == []
    # and the tables show the runs' values, not others
    summary = json.loads((runs["eval"] / "summary.json").read_text())
    shirg = next(r for r in summary["rows"] if r["mode"] == "shirg")
    row = next(line for line in tables if line.startswith("| shirg | 4 |"))
    assert f"| {shirg['visual_tokens']:.0f} |" in row and f"| {shirg['latency_median_s']:.3f} |" in row
    assert f"| {shirg['evidence_recall']:.1f} |" in row
    bench = json.loads((runs["bench"] / "bench.json").read_text())
    brow = next(r for r in bench["rows"] if r["mode"] == "shirg")
    assert f"| {brow['time_s']['total']['median'] * 1e3:.1f} |" in text
    assert f"| {brow['kv_cache_bytes'] / 2**20:.2f} |" in text


def test_report_sections_plots_commands_and_limits(runs, tmp_path):
    out = build_report([runs["eval"]], [runs["bench"]], [runs["analytic"]], tmp_path / "sub" / "REPORT.md")
    text = out.read_text()
    for heading in ("### Comparison", "### Deltas", "### Ablations", "## Measured latency and memory",
                    "## Roofline model", "## How these numbers were produced", "## Limits"):
        assert heading in text, heading
    ablation = text.split("### Ablations")[1].split("\n\n", 3)[2]
    assert "| shirg-no-coords | no coordinate embedding | coords: false |" in ablation
    assert "| shirg | the reference" in ablation and "lowres" not in ablation.split("\n", 2)[2]
    assert "| delta_vs_lowres | latency_x_lowres | memory_x_lowres |" in text
    # plots: relative links to byte-identical copies in REPORT_files/
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert len(links) == 4 and all(link.startswith("REPORT_files/") for link in links)
    for link in links:
        assert (out.parent / link).is_file()
    copied = {p.name: p.read_bytes() for p in (out.parent / "REPORT_files").iterdir()}
    for name in ("score_vs_latency.png", "score_vs_tokens.png", "overlays.png"):
        assert (runs["eval"] / name).read_bytes() in copied.values(), name
    assert (runs["bench"] / "bench.png").read_bytes() in copied.values()
    # commands and machine
    inv = json.loads((runs["eval"] / "run.json").read_text())["invocations"][0]
    assert f"```bash\n{inv['command']}\n```" in text
    assert f"| {inv['machine']['device']} | {inv['machine']['device_name']} | {inv['machine']['torch']} |" in text
    assert "bench.json records the settings, not the command line" in text
    limits = text.split("## Limits")[1]
    assert "timed on CPU" in limits and "random-weight model (preset tiny (random weights))" in limits
    assert "4 samples per mode" in limits and "lower bounds" in limits
    # deterministic: the same inputs give the same bytes
    again = build_report([runs["eval"]], [runs["bench"]], [runs["analytic"]], tmp_path / "again.md")
    assert again.read_text() == text.replace("REPORT_files/", "again_files/")


def test_several_eval_folders_get_an_overview_and_the_cli_writes_it(runs, tmp_path, capsys):
    other = tmp_path / "eval_copy"
    shutil.copytree(runs["eval"], other)
    summary = json.loads((other / "summary.json").read_text())
    summary["rows"] = [r for r in summary["rows"] if r["mode"] != "shirg-no-coords"]
    (other / "summary.json").write_text(json.dumps(summary))
    out = tmp_path / "r" / "REPORT.md"
    assert main(["report", "--eval", str(runs["eval"]), str(other), "--out", str(out)]) == 0
    text = out.read_text()
    overview = text.split("## Overview")[1].split("\n## ")[0]
    assert "| mode | entitygrid (eval_eg): f1 | entitygrid (eval_copy): f1 |" in overview
    assert "| shirg-no-coords | 0.0 | not run |" in overview and "| shirg | 0.0 | 0.0 |" in overview
    assert len(re.findall(r"\]\(REPORT_files/", text)) == 6
    assert "wrote" in capsys.readouterr().out


def test_missing_or_wrong_inputs_are_clear_errors(runs, tmp_path, capsys):
    out = tmp_path / "REPORT.md"
    with pytest.raises(ShirgError, match="does not exist"):
        build_report([tmp_path / "nowhere"], out=out)
    with pytest.raises(ShirgError, match="holds no summary.json"):
        build_report([runs["bench"]], out=out)
    with pytest.raises(ShirgError, match="holds no bench.json"):
        build_report([runs["eval"]], [runs["eval"]], out=out)
    with pytest.raises(ShirgError, match="holds no analytic.json"):
        build_report(analytics=[runs["bench"]], out=out)
    with pytest.raises(ShirgError, match="nothing to report"):
        build_report(out=out)
    with pytest.raises(ShirgError, match="is a folder"):
        build_report([runs["eval"]], out=tmp_path)
    assert not out.exists() and not (tmp_path / "REPORT_files").exists()  # every input is checked first
    capsys.readouterr()
    assert main(["report", "--eval", str(runs["eval"]), "--eval", str(tmp_path / "nowhere"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("shirg report: error: --eval") and "does not exist" in err
    assert main(["report", "--eval", str(runs["bench"]), "--out", str(out)]) == 2
    assert "summary.json" in capsys.readouterr().err and not out.exists()
