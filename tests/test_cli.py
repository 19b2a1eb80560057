"""The command line as an operator uses it: exit statuses, one-line errors, nothing half-written."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest

from revopt.cli import EXIT_INPUT_ERROR, main

from conftest import dataset


def run_cli(*args: str) -> subprocess.CompletedProcess:
    """Run ``revopt`` in a subprocess, as a shell user would, in an English locale unless --lang sets another language."""
    return subprocess.run(
        [sys.executable, "-m", "revopt.cli", *args], capture_output=True, text=True, timeout=300,
        env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONIOENCODING": "utf-8"},
    )


def write_rows(path, rows, encoding="utf-8"):
    with open(path, "w", encoding=encoding, newline="") as handle:
        csv.writer(handle).writerows(rows)
    return path


def bad_inputs(tmp_path):
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "binary.csv").write_bytes(b"\x00\x01\x02PK\x03\x04" * 50)
    return {
        "empty": (tmp_path / "empty.csv", [], "empty"),
        "not_a_table": (tmp_path / "binary.csv", [], "not a text table"),
        "no_customer": (write_rows(tmp_path / "nc.csv", [["date", "amount"], ["2024-01-01", "1"]]), [],
                        "no column found for customer_id"),
        "bad_dates": (write_rows(tmp_path / "bd.csv", [["customer", "date", "amount"], ["a", "soon", "1"]]), [],
                      "no value parses as a date"),
        "bad_amounts": (write_rows(tmp_path / "ba.csv", [["customer", "date", "amount"], ["a", "2024-01-01", "x"]]),
                        [], "amounts that are not numbers.*row 2, column amount"),
        "mapped_twice": (write_rows(tmp_path / "ok.csv", [["customer", "date", "amount"], ["a", "2024-01-01", "1"]]),
                         ["--map", "customer=customer_id", "--map", "date=customer_id"], "mapped twice"),
    }


@pytest.mark.parametrize("case", ["empty", "not_a_table", "no_customer", "bad_dates", "bad_amounts", "mapped_twice"])
def test_bad_input_one_line_exit_2(tmp_path, case):
    path, extra, pattern = bad_inputs(tmp_path)[case]
    out = tmp_path / "out"

    result = run_cli("analyze", str(path), "--out", str(out), "-q", *extra)

    assert result.returncode == EXIT_INPUT_ERROR
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: ")
    assert str(path.name) in lines[0] or case == "mapped_twice"
    import re

    assert re.search(pattern, lines[0]), lines[0]
    assert not out.exists() or not any(out.iterdir())


def test_error_prefix_in_chinese(tmp_path):
    (tmp_path / "empty.csv").write_text("")
    result = run_cli("analyze", str(tmp_path / "empty.csv"), "--out", str(tmp_path / "out"), "--lang", "zh-CN")

    assert result.returncode == EXIT_INPUT_ERROR
    assert result.stderr.splitlines()[-1].startswith("错误：")
    assert "文件是空的" in result.stderr


def test_help_in_chinese():
    result = run_cli("analyze", "--help", "--lang", "zh-CN")

    assert result.returncode == 0
    assert "订单文件" in result.stdout
    assert "--calibration-end" in result.stdout


def test_invalid_option_values_exit_2(tmp_path):
    path = write_rows(tmp_path / "ok.csv", [["customer", "date", "amount"], ["a", "2024-01-01", "1"]])
    for option in (["--horizon", "soon"], ["--margin", "0"], ["--tz", "Mars/Olympus"]):
        result = run_cli("analyze", str(path), "--out", str(tmp_path / "out"), *option)
        assert result.returncode == EXIT_INPUT_ERROR, option
        assert result.stderr.startswith("error: "), option


def test_demo_command_runs(tmp_path, capsys):
    status = main(["demo", "--customers", "400", "--seed", "3", "--out", str(tmp_path), "-q", "--lang", "en"])

    assert status == 0
    printed = capsys.readouterr().out
    assert "True parameters" in printed
    assert "Fitted parameters" in printed
    model = json.loads((tmp_path / "model.json").read_text(encoding="utf-8"))
    assert model["holdout"]["customers"] > 0
    assert (tmp_path / "demo_orders.csv").read_bytes()[:3] != b"\xef\xbb\xbf"


def test_analyze_cdnow_master_from_cli(tmp_path):
    out = tmp_path / "out"
    result = run_cli("analyze", str(dataset("cdnow", "CDNOW_master.txt")), "--out", str(out),
                     "--calibration-end", "1997-09-30", "-q")

    assert result.returncode == 0, result.stderr
    assert "Scored 23,570 customers" in result.stdout
    kpis = json.loads((out / "kpis.json").read_text(encoding="utf-8"))
    assert kpis["customers"] == 23_570
    assert len(kpis["cohorts"]["cohorts"]) == 3


def test_output_path_that_is_a_file(tmp_path):
    path = write_rows(tmp_path / "ok.csv", [["customer", "date", "amount"], ["a", "2024-01-01", "1"]])
    result = run_cli("analyze", str(path), "--out", str(path), "-q")

    assert result.returncode == EXIT_INPUT_ERROR
    assert "Traceback" not in result.stderr
    assert "cannot be created" in result.stderr


def test_version():
    result = run_cli("--version")

    assert result.returncode == 0
    assert result.stdout.startswith("revopt ")


def test_no_repeat_purchases(tmp_path):
    rows = [["customer", "date", "amount"]] + [[f"c{i}", f"2024-01-{i + 1:02d}", "5"] for i in range(20)]
    result = run_cli("analyze", str(write_rows(tmp_path / "once.csv", rows)), "--out", str(tmp_path / "out"), "-q")

    assert result.returncode == EXIT_INPUT_ERROR
    assert "no customer bought on two different days" in result.stderr
    assert "--calibration-end" not in result.stderr


@pytest.mark.parametrize("command", ["analyze", "ingest"])
def test_engine_out_of_memory_is_a_clear_error(command, tmp_path, capsys):
    # 10 MB is below what DuckDB needs to clean the CDNOW file, so the run must stop with the fix.
    options = ["--out", str(tmp_path / "out")] if command == "analyze" else ["--workspace", str(tmp_path / "ws")]
    code = main([command, str(dataset("cdnow", "CDNOW_master.txt")), *options, "--memory-limit", "10MB",
                 "--lang", "en"])
    error = capsys.readouterr().err
    assert code == EXIT_INPUT_ERROR
    assert "DuckDB ran out of memory" in error
    assert "raise --memory-limit" in error
    assert "Traceback" not in error
