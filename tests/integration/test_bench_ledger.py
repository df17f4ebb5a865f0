"""``shardnet bench ledger`` runs end to end on a tiny load and writes its JSON."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from scripts.bench.ledger import PARTS, WORKLOADS
from scripts.cli.main import main


def test_bench_ledger_prints_a_table_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "ledger.json"
    args = ["bench", "ledger", "--txs", "40", "--reps", "2", "--accounts", "60", "--out", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "tx/s" in result.output
    data = json.loads(out.read_text())
    assert [w["workload"] for w in data["workloads"]] == list(WORKLOADS)
    for workload in data["workloads"]:
        assert workload["tx_per_s"] > 0
        # execution is apply_block minus a second timing of its root part: on a tiny,
        # noisy block only its presence is certain
        assert all(workload["per_tx_us"][p] > 0 for p in PARTS if p != "execution")
        assert all(len(workload["block_ms"][part]) == 2 for part in PARTS)
    assert data["params"] == {"txs_per_block": 40, "reps": 2, "accounts": 60, "seed": 1}
