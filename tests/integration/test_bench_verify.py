"""``shardnet bench verify`` runs end to end on a small batch and writes its JSON."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from consensus.kernel.crypto import BACKEND_CRYPTOGRAPHY, VERIFY_BACKEND
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
    assert data["backend"] == VERIFY_BACKEND
    assert f"the nodes' path: {VERIFY_BACKEND}" in " ".join(result.output.split())
    paths = {"verify_1", "verify_n", "processes_n", "admit_1", "admit_n"}
    if VERIFY_BACKEND != BACKEND_CRYPTOGRAPHY:  # the extension, compared with OpenSSL
        paths |= {"openssl_1", "openssl_n"}
        assert f"{VERIFY_BACKEND} over OpenSSL: " in " ".join(result.output.split())
        assert data["cpu_speedup_1"] > 0 and data["cpu_speedup_n"] > 0
    assert set(data["per_s"]) == paths
    assert all(rate > 0 for rate in data["per_s"].values())
    assert data["verify_ratio"] == data["per_s"]["verify_n"] / data["per_s"]["verify_1"]
    assert len(data["load_average_before"]) == 3
