"""``shardnet bench verify`` runs end to end on a small batch and writes its JSON."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from scripts.cli.main import main


def test_bench_verify_prints_both_paths_and_their_ratio(tmp_path: Path) -> None:
    out = tmp_path / "verify.json"
    args = ["bench", "verify", "--signatures", "64", "--threads", "2", "--rounds", "1",
            "--out", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "verify_many" in result.output and "admit_batch" in result.output
    data = json.loads(out.read_text())
    assert (data["signatures"], data["threads"], data["rounds"]) == (64, 2, 1)
    assert set(data["per_s"]) == {"verify_1", "verify_n", "processes_n", "admit_1", "admit_n"}
    assert all(rate > 0 for rate in data["per_s"].values())
    assert data["verify_ratio"] == data["per_s"]["verify_n"] / data["per_s"]["verify_1"]
    assert len(data["load_average_before"]) == 3
