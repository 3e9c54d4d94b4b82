"""`shirg bench-kv` compares storage formats against the native cache of the same prefix."""

from __future__ import annotations

import json

from shirg.cli import main


def test_bench_kv_reports_every_format(tmp_path, capsys):
    code = main(["bench-kv", "--preset", "tiny", "--mode", "lowres", "--formats", "native,fp16,int8",
                 "--prompts", "2", "--gen-length", "8", "--steps", "4", "--step-repeats", "1", "--out", str(tmp_path)])
    assert code == 0
    rows = {r["format"]: r for r in json.loads((tmp_path / "kv.json").read_text())["rows"]}
    assert set(rows) == {"native", "fp16", "int8"}
    assert rows["native"]["k_max_abs_err"] == 0 and rows["native"]["logit_rel_drift"] == 0
    assert rows["fp16"]["bytes_vs_native"] == 0.5
    assert rows["int8"]["prefix_bytes"] <= 0.55 * rows["fp16"]["prefix_bytes"]
    assert 0 < rows["int8"]["v_max_abs_err"] < 0.05
    assert "| int8 |" in (tmp_path / "kv.md").read_text()


def test_bench_kv_rejects_unknown_format_and_missing_native(capsys):
    assert main(["bench-kv", "--preset", "tiny", "--formats", "native,int4"]) == 2
    assert "valid formats" in capsys.readouterr().err
    assert main(["bench-kv", "--preset", "tiny", "--formats", "int8"]) == 2
    assert "must include native" in capsys.readouterr().err
