"""``shardnet load compare A B`` on two small fabricated reports."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from scripts.cli.load.cli import load
from scripts.cli.load.compare import compare, read_report


def report(sent: int, committed: int, p99: float, rejected: dict[str, int],
           tps: float, lost: int = 0) -> dict[str, Any]:
    latency = {"count": committed, "p50": p99 / 2, "p90": p99 * 0.8, "p99": p99,
               "p999": p99 * 1.1, "max": p99 * 1.2, "mean": p99 / 2}
    return {
        "sent": sent, "committed": committed, "finalized": committed // 5,
        "rejected": rejected, "rejected_total": sum(rejected.values()),
        "duration_s": 10.0, "tps_committed": tps,
        "latency_ms": {"commit": latency,
                       "finality": {**latency, "p99": p99 * 2, "max": None}},
        "audit": {"ok": lost == 0, "lost": lost, "duplicated": 0},
    }


@pytest.fixture
def reports(tmp_path: Path) -> tuple[Path, Path]:
    a = tmp_path / "a" / "report.json"
    a.parent.mkdir()
    a.write_text(json.dumps(report(1000, 990, 800.0, {"bad_nonce": 10}, 99.0)))
    b = tmp_path / "b.json"
    b.write_text(json.dumps(report(2000, 1990, 1200.0, {"mempool_full": 10}, 199.0, lost=1)))
    return a, b


def invoke(*args: str) -> Any:
    return CliRunner().invoke(load, ["compare", *args], catch_exceptions=False)


def test_compare_differences(reports: tuple[Path, Path]) -> None:
    a, b = reports
    rows = compare(read_report(a), read_report(b))
    assert rows["sent"] == {"a": 1000, "b": 2000, "diff": 1000, "rel_pct": 100.0}
    assert rows["tps_committed"]["diff"] == pytest.approx(100.0)
    assert rows["latency_ms.commit.p99"] == {"a": 800.0, "b": 1200.0, "diff": 400.0,
                                             "rel_pct": 50.0}
    assert rows["latency_ms.finality.p99"]["a"] == 1600.0
    assert rows["latency_ms.finality.max"] == {"a": None, "b": None, "diff": None,
                                               "rel_pct": None}
    # a reason only one side saw counts 0 on the other; no relative change from 0
    assert rows["rejected.bad_nonce"] == {"a": 10, "b": 0, "diff": -10, "rel_pct": -100.0}
    assert rows["rejected.mempool_full"] == {"a": 0, "b": 10, "diff": 10, "rel_pct": None}
    assert rows["rejected"]["diff"] == 0
    assert rows["audit.lost"]["diff"] == 1
    assert rows["audit.ok"] == {"a": True, "b": False, "diff": None, "rel_pct": None}
    for kind in ("commit", "finality"):
        for p in ("p50", "p90", "p99", "p999", "max"):
            assert f"latency_ms.{kind}.{p}" in rows


def test_compare_json_and_folder(reports: tuple[Path, Path]) -> None:
    a, b = reports
    result = invoke(str(a.parent), str(b), "--json")  # a folder holding report.json
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["a"] == str(a.parent)
    assert doc["metrics"]["committed"]["rel_pct"] == pytest.approx(101.01)
    assert doc["metrics"]["duration_s"]["diff"] == 0


def test_compare_table(reports: tuple[Path, Path]) -> None:
    a, b = reports
    result = invoke(str(a), str(b))
    assert result.exit_code == 0, result.output
    for text in ("sent", "latency_ms.commit.p999", "+1,000", "+100.0%", "+50.0%",
                 "rejected.mempool_full", "NO"):
        assert text in result.output


@pytest.mark.parametrize("content, message", [
    (None, "no such file"),
    ("not json", "not a load report (not JSON"),
    ("[1, 2]", "not a load report (not a JSON object)"),
    ('{"steps": []}', "not a load report (no sent, committed, latency_ms)"),
])
def test_compare_errors(tmp_path: Path, reports: tuple[Path, Path], content: str | None,
                        message: str) -> None:
    bad = tmp_path / "bad.json"
    if content is not None:
        bad.write_text(content)
    result = CliRunner().invoke(load, ["compare", str(reports[0]), str(bad)])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and str(bad) in lines[0], result.output
    empty = tmp_path / "empty"
    empty.mkdir()
    result = CliRunner().invoke(load, ["compare", str(empty), str(reports[1])])
    assert result.exit_code == 1 and "report.json: no such file" in result.output
