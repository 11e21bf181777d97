"""The fault reports and docs/guarantees.md's renderer: rows that say what they assume, cells never invented."""

import json
import importlib.util
from importlib.machinery import SourceFileLoader
from pathlib import Path

import pytest

import fault_reports


def load_script(name: str):
    """scripts/<name>, a Python file without the .py suffix, as a module."""
    loader = SourceFileLoader(name, str(Path(__file__).parents[2] / "scripts" / name))
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(name, loader))
    loader.exec_module(module)
    return module


guarantees = load_script("guarantees")

ROW = {"fault": "collector_killed", "ack_mode": "durable", "settings": {"SQLITE_SYNCHRONOUS": "NORMAL"},
       "drain_seconds": 1.234}


@pytest.fixture(autouse=True)
def own_reports(monkeypatch):
    """Rows made here must not reach the session's build/fault-reports.json."""
    monkeypatch.setattr(fault_reports, "REPORTS", [])
    monkeypatch.setattr(fault_reports, "OUTCOMES", {})


def test_a_report_counts_lost_and_duplicated_and_keeps_what_it_assumes():
    report = fault_reports.delivery_report("t", ["a", "b", "c"], {"a": 1, "b": 2, "x": 1}, sent=4, **ROW)
    assert (report["sent"], report["answered_2xx"], report["indexed"]) == (4, 3, 2)
    assert (report["lost"], report["duplicated"]) == (1, 1)
    assert report["settings"] == {"SQLITE_SYNCHRONOUS": "NORMAL"} and report["drain_seconds"] == 1.23
    assert fault_reports.REPORTS == [report]


def test_a_report_without_its_fault_or_mode_or_with_an_unknown_one_fails_loudly():
    with pytest.raises(TypeError):
        fault_reports.delivery_report("t", ["a"], {"a": 1}, sent=1, ack_mode="durable", settings={},
                                      drain_seconds=None)
    with pytest.raises(ValueError, match="fault"):
        fault_reports.delivery_report("t", ["a"], {"a": 1}, sent=1, **{**ROW, "fault": "kill"})
    with pytest.raises(ValueError, match="ack_mode"):
        fault_reports.delivery_report("t", ["a"], {"a": 1}, sent=1, **{**ROW, "ack_mode": "fast"})


def test_reports_of_a_partial_rerun_of_the_same_commit_complete_the_file(tmp_path, monkeypatch):
    monkeypatch.setattr(fault_reports, "current_commit", lambda repository: "abc")
    path = tmp_path / "build" / "fault-reports.json"
    path.parent.mkdir()
    old = {**ROW, "test": "old", "lost": 0}
    rerun = {**ROW, "test": "rerun", "lost": 5}
    path.write_text(json.dumps({"commit": "abc", "reports": [old, {**rerun, "lost": 0}], "outcomes": {"n1": "failed"}}))
    fault_reports.REPORTS.append(rerun)
    fault_reports.OUTCOMES["n1"] = "passed"
    written = json.loads(fault_reports.write_reports(path).read_text())
    assert written["commit"] == "abc" and written["reports"] == [old, rerun]
    assert written["outcomes"] == {"n1": "passed"}
    # Another commit's rows are not mixed in.
    monkeypatch.setattr(fault_reports, "current_commit", lambda repository: "def")
    assert json.loads(fault_reports.write_reports(path).read_text())["reports"] == [rerun]


def row(test, fault, mode, lost=0, duplicated=0, expected_loss=False):
    return {"test": test, "fault": fault, "ack_mode": mode, "settings": {"SERVER_WORKERS": "1"}, "sent": 10,
            "answered_2xx": 10, "indexed": 10 - lost, "lost": lost, "duplicated": duplicated, "drain_seconds": None,
            "expected_loss": expected_loss}


def test_the_matrix_says_not_tried_where_no_test_ran_and_marks_loss_by_design_apart_from_failure():
    document = {"commit": "abc", "date": "2026-12-04", "outcomes": {"tests/faults/x.py::t": "failed"}, "reports": [
        row("kill durable", "collector_killed", "durable"),
        row("kill memory", "collector_killed", "memory", lost=7, expected_loss=True),
        row("429", "opensearch_429", "memory", lost=1)]}
    page = guarantees.render(document, "## Scope\nhand-written")
    kill = next(line for line in page.splitlines() if line.startswith("| kill -9 of the collector"))
    assert kill.split(" | ")[1:] == ["1 test: 0 lost, 0 duplicated", "1 test: **7 lost, by design**", "not tried |"]
    overload = next(line for line in page.splitlines() if line.startswith("| OpenSearch refusing items with 429"))
    assert "**1 lost, 0 duplicated (FAILED)**" in overload
    power = next(line for line in page.splitlines() if line.startswith("| power loss"))
    assert power.count("not tried") == 3
    row_line = "| kill memory | collector_killed | memory | 10 | 10 | 3 | 7 (by design) | 0 | - | SERVER_WORKERS=1 |"
    assert row_line in page
    assert "- failed: `tests/faults/x.py::t`" in page
    assert "commit `abc`" in page and page.rstrip().endswith("hand-written")


def test_the_files_run_for_the_report_are_those_that_report():
    files = guarantees.reporting_test_files()
    assert "tests/faults/test_crashes.py" in files and "tests/integration/test_kafka_indexer.py" in files
    assert "tests/unit/test_buffer.py" not in files and "tests/unit/test_guarantees_doc.py" not in files
