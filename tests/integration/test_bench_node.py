"""``shardnet bench node --quick``: a real 4-process shard commits every transaction of
the load and the command writes its JSON (figures are the benchmark's, not asserted)."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from consensus.kernel.crypto import BACKEND_CRYPTOGRAPHY, VERIFY_BACKEND
from scripts.cli.main import main


def test_bench_node_quick_commits_the_whole_load_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "node.json"
    result = CliRunner().invoke(main, ["bench", "node", "--quick", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "crypto ceiling" in result.output
    data = json.loads(out.read_text())
    assert data["txs_per_run"] == 2_000 and len(data["rows"]) == 1
    row = data["rows"][0]
    assert row["committed"] == 2_000
    assert row["tps"] > 0 and 0 < row["latency_p50_ms"] <= row["latency_p99_ms"]
    assert data["crypto_ceiling_tps"] > 0
    assert data["verify_per_s"] == max(data["verify_per_s_before"], data["verify_per_s_after"])
    # the ceiling names the nodes' verify path; with the extension, OpenSSL's is given too
    assert data["verify_backend"] == VERIFY_BACKEND
    assert set(data["ceilings"]) == {VERIFY_BACKEND, BACKEND_CRYPTOGRAPHY}
    assert data["ceilings"][VERIFY_BACKEND]["crypto_ceiling_tps"] == data["crypto_ceiling_tps"]
    printed = " ".join(result.output.split())  # the console wraps at its width
    assert f"with {VERIFY_BACKEND} (the nodes' path)" in printed
    assert row["p2p"]["shardnet_blocks_committed_total"] >= 1
