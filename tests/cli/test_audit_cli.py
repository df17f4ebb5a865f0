"""``shardnet audit``: conservation from the shards' counters, per asset and per channel,
and the quiescence predicate of ``--wait`` (docs/PROTOCOL.md section 6).

The pure functions run on fabricated ``GET /v1/audit`` and ``GET /v1/status``
answers; the command runs against a generated testnet folder with the node API
stood in for (``scripts.cli.audit.fetch``). The live end-to-end run is in
tests/integration/test_testnet_cli.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import scripts.cli.audit as audit_cli
from scripts.cli.audit import Seen, compute_report, get_still_moving, track_heights
from scripts.cli.testnet.generate import TestnetSpec, generate
from scripts.cli.testnet.layout import TestnetDir
from sharding.audit import compute_audit
from sharding.genesis import genesis_state, load_genesis, make_genesis_dict, total_supply
from sharding.receipts import CREDIT, Receipt
from sharding.records import out_seq_key, received_key, sent_key

SUPPLY = {0: 1000, 1: 500}
NAMES = {0: "COIN", 1: "USD"}


def shard_audit(shard: int, *, height: int = 5, balances: dict[int, int] | None = None,
                reserves: dict[int, int] | None = None, out_seq: int = 0, in_cursor: int = 0,
                sent: dict[int, int] | None = None, received: dict[int, int] | None = None
                ) -> dict[str, Any]:
    """A ``GET /v1/audit`` answer of one shard of a 2-shard network (keys are strings)."""
    other = str(1 - shard)
    return {
        "shard": shard, "height": height, "state_root": "00" * 32,
        "balances": {str(a): n for a, n in (balances or {}).items()},
        "reserves": {str(a): n for a, n in (reserves or {}).items()},
        "out_seq": {other: out_seq}, "in_cursor": {other: in_cursor},
        "sent": {other: {str(a): n for a, n in (sent or {0: 0, 1: 0}).items()}},
        "received": {other: {str(a): n for a, n in (received or {0: 0, 1: 0}).items()}},
    }


def two_shards_with_77_coin_in_flight() -> dict[int, dict[str, Any]]:
    """Shard 0 sent 2 receipts (100 COIN) to shard 1, which applied the first (23)."""
    return {
        0: shard_audit(0, balances={0: 600, 1: 300}, reserves={0: 100}, out_seq=2,
                       sent={0: 100, 1: 0}),
        1: shard_audit(1, balances={0: 223, 1: 150}, reserves={1: 50}, in_cursor=1,
                       received={0: 23, 1: 0}),
    }


def row(report: dict[str, Any], asset: str) -> dict[str, Any]:
    return next(r for r in report["assets"] if r["asset"] == asset)


def channel(report: dict[str, Any], src: int, dst: int) -> dict[str, Any]:
    return next(c for c in report["channels"] if (c["src"], c["dst"]) == (src, dst))


# ---------------------------------------------------------------------------
# Conservation (pure)


def test_conservation_holds_with_receipts_in_flight() -> None:
    report = compute_report(two_shards_with_77_coin_in_flight(), SUPPLY, NAMES)
    assert report["ok"] and report["problems"] == []
    assert report["heights"] == {"0": 5, "1": 5}
    assert report["receipts_in_flight"] == 1
    assert row(report, "COIN") == {"asset": "COIN", "balances": 823, "reserves": 100,
                                   "in_flight": 77, "supply": 1000, "ok": True}
    assert row(report, "USD")["in_flight"] == 0 and row(report, "USD")["ok"]
    assert channel(report, 0, 1) == {"src": 0, "dst": 1, "receipts_in_flight": 1,
                                     "in_flight": {"COIN": 77, "USD": 0}, "ok": True}
    assert channel(report, 1, 0)["receipts_in_flight"] == 0


def test_a_lost_unit_fails_the_asset_and_names_it() -> None:
    audits = two_shards_with_77_coin_in_flight()
    audits[1]["balances"]["0"] -= 1  # one COIN vanished on shard 1
    report = compute_report(audits, SUPPLY, NAMES)
    assert not report["ok"]
    assert not row(report, "COIN")["ok"] and row(report, "USD")["ok"]
    assert report["problems"] == ["asset COIN: balances + reserves + in flight = 999, "
                                  "supply 1,000"]


def test_supply_off_by_one_fails() -> None:
    report = compute_report(two_shards_with_77_coin_in_flight(), {0: 1001, 1: 500}, NAMES)
    assert not report["ok"] and not row(report, "COIN")["ok"]


def test_in_flight_is_per_channel_positive_and_negative() -> None:
    # 0->1: 40 COIN sent, 10 received (+30 in flight, 2 receipts); 1->0: 5 USD sent,
    # but 0 says it received 8 (-3: applied more than was ever sent).
    audits = {
        0: shard_audit(0, balances={0: 960, 1: 498}, out_seq=3, in_cursor=2,
                       sent={0: 40, 1: 0}, received={0: 0, 1: 8}),
        1: shard_audit(1, balances={0: 10, 1: 5}, out_seq=1, in_cursor=1,
                       sent={0: 0, 1: 5}, received={0: 10, 1: 0}),
    }
    report = compute_report(audits, SUPPLY, NAMES)
    forward, backward = channel(report, 0, 1), channel(report, 1, 0)
    assert forward == {"src": 0, "dst": 1, "receipts_in_flight": 2,
                       "in_flight": {"COIN": 30, "USD": 0}, "ok": True}
    assert backward["in_flight"] == {"COIN": 0, "USD": -3}
    assert backward["receipts_in_flight"] == -1 and not backward["ok"]
    assert row(report, "COIN")["in_flight"] == 30 and row(report, "USD")["in_flight"] == -3
    assert not report["ok"]
    assert "channel 1->0: destination applied more than the source sent" in report["problems"]


def test_at_quiescence_anything_in_flight_fails() -> None:
    audits = two_shards_with_77_coin_in_flight()
    assert compute_report(audits, SUPPLY, NAMES)["ok"]
    report = compute_report(audits, SUPPLY, NAMES, require_idle=True)
    assert not report["ok"]
    assert report["problems"] == ["channel 0->1: 1 receipt (77 COIN) in flight at quiescence"]


def test_malformed_audit_answer_raises_value_or_key_error() -> None:
    audits = two_shards_with_77_coin_in_flight()
    del audits[1]["sent"]
    with pytest.raises(KeyError):
        compute_report(audits, SUPPLY, NAMES)
    audits = two_shards_with_77_coin_in_flight()
    audits[1]["shard"] = 0
    with pytest.raises(ValueError, match="reports shard 0"):
        compute_report(audits, SUPPLY, NAMES)


def test_state_audit_flags_counters_that_disagree_with_the_receipts() -> None:
    genesis = load_genesis(make_genesis_dict(num_shards=2, accounts=10))
    states = {shard: genesis_state(genesis, shard) for shard in (0, 1)}
    supply = total_supply(genesis)
    assert compute_audit(states, [], supply).ok
    # A counter says 5 COIN left shard 0 for shard 1, but no receipt was emitted.
    states[0].apply_writes({sent_key(1, 0): (5).to_bytes(16, "big")})
    report = compute_audit(states, [], supply)
    assert not report.ok and report.problems
    assert "0->1: counters say {0: 5} in flight, receipts say {}" in report.problems[0]
    # The destination counting a receipt it never applied: negative in flight.
    states[0].apply_writes({sent_key(1, 0): None})
    states[1].apply_writes({received_key(0, 0): (5).to_bytes(16, "big")})
    report = compute_audit(states, [], supply)
    (forward,) = [c for c in report.channels if (c.src, c.dst) == (0, 1)]
    assert forward.amounts == {0: -5} and not forward.ok and not report.ok


def test_state_audit_counts_in_flight_from_receipts_and_counters_alike() -> None:
    genesis = load_genesis(make_genesis_dict(num_shards=2, accounts=10))
    states = {shard: genesis_state(genesis, shard) for shard in (0, 1)}
    receipt = Receipt(src_shard=0, dst_shard=1, seq=1, kind=CREDIT, origin=bytes(32),
                      sender=bytes(32), recipient=bytes(32), asset=0, amount=5)
    # Shard 0 debited 5 and emitted the receipt: counters and receipts agree.
    supply = dict(total_supply(genesis))
    supply[0] += 5  # the debit is not in the state here; account for it in the supply
    states[0].apply_writes({sent_key(1, 0): (5).to_bytes(16, "big"),
                            out_seq_key(1): (1).to_bytes(8, "big")})
    report = compute_audit(states, [receipt], supply)
    assert report.ok, report
    assert report.in_flight_receipts == 1 and not report.idle


# ---------------------------------------------------------------------------
# Quiescence (pure)


def statuses(mempools: dict[str, int] | None = None, heights: dict[str, int] | None = None
             ) -> dict[str, dict[str, Any] | None]:
    names = [f"shard{s}-node{i}" for s in (0, 1) for i in range(2)]
    return {name: {"node": name, "shard": int(name[5]), "height": (heights or {}).get(name, 5),
                   "mempool": (mempools or {}).get(name, 0)} for name in names}


def idle_report() -> dict[str, Any]:
    audits = two_shards_with_77_coin_in_flight()
    audits[1]["in_cursor"]["0"] = 2
    audits[1]["received"]["0"]["0"] = 100
    audits[1]["balances"]["0"] += 77
    report = compute_report(audits, SUPPLY, NAMES, require_idle=True)
    assert report["ok"] and report["receipts_in_flight"] == 0
    return report


def settled(status: dict[str, dict[str, Any] | None], since_ms: int = 0) -> dict[str, Seen]:
    return track_heights({}, {n: int(s["height"]) for n, s in status.items() if s}, since_ms)


def test_quiescent_when_mempools_empty_nothing_in_flight_and_heights_still() -> None:
    status = statuses()
    assert get_still_moving(status, idle_report(), settled(status), 600, 600) == []


def test_not_quiescent_while_a_mempool_is_not_empty() -> None:
    status = statuses(mempools={"shard1-node1": 3})
    moving = get_still_moving(status, idle_report(), settled(status), 10_000, 600)
    assert moving == ["shard1-node1 mempool 3"]


def test_not_quiescent_while_a_channel_has_receipts_in_flight() -> None:
    status = statuses()
    report = compute_report(two_shards_with_77_coin_in_flight(), SUPPLY, NAMES)
    moving = get_still_moving(status, report, settled(status), 10_000, 600)
    assert moving == ["channel 0->1 1 receipts in flight"]


def test_not_quiescent_until_heights_are_still_for_the_quiet_period() -> None:
    status = statuses()
    seen = settled(status, since_ms=0)
    assert get_still_moving(status, idle_report(), seen, 1_000, 600) == []
    moved = statuses(heights={"shard0-node1": 6})
    seen = track_heights(seen, {n: int(s["height"]) for n, s in moved.items() if s}, 1_000)
    assert seen["shard0-node1"] == Seen(6, 1_000) and seen["shard0-node0"] == Seen(5, 0)
    assert get_still_moving(moved, idle_report(), seen, 1_200, 600) == [
        "shard 0 height moved 200 ms ago (shard0-node1 at 6)"]
    assert get_still_moving(moved, idle_report(), seen, 1_600, 600) == []


def test_a_node_that_does_not_answer_is_left_out_of_quiescence() -> None:
    status = statuses(mempools={"shard0-node0": 9})
    status["shard0-node0"] = None
    assert get_still_moving(status, idle_report(), settled(status), 600, 600) == []


def test_many_busy_nodes_are_listed_in_one_short_line() -> None:
    names = [f"shard0-node{i}" for i in range(7)]
    status: dict[str, dict[str, Any] | None] = {
        n: {"shard": 0, "height": 1, "mempool": 1} for n in names}
    moving = get_still_moving(status, idle_report(), settled(status), 600, 600)
    assert moving[-1] == "and 3 more" and len(moving) == 5


# ---------------------------------------------------------------------------
# The command, with the node API stood in for


Answer = Callable[[str], Any]


@pytest.fixture
def testnet(tmp_path: Path) -> Path:
    generate(TestnetSpec(shards=2, validators=4, accounts=10), tmp_path)
    for name in ("shard0-node0", "shard1-node0"):  # the largest interval wins
        config = TestnetDir(tmp_path).home(name) / "config.toml"
        config.write_text(config.read_text().replace("block_interval_ms = 200",
                                                     "block_interval_ms = 20"))
    for home in (tmp_path / "nodes").iterdir():
        config = home / "config.toml"
        config.write_text(config.read_text().replace("block_interval_ms = 200",
                                                     "block_interval_ms = 10"))
    return tmp_path


def balanced_audits(root: Path) -> dict[int, dict[str, Any]]:
    """The network's whole supply on shard 0, nothing in flight."""
    supply = total_supply(load_genesis(TestnetDir(root).genesis_path))
    return {0: shard_audit(0, balances=supply, sent=dict.fromkeys(supply, 0),
                           received=dict.fromkeys(supply, 0)),
            1: shard_audit(1, sent=dict.fromkeys(supply, 0),
                           received=dict.fromkeys(supply, 0))}


def stand_in(monkeypatch: pytest.MonkeyPatch, root: Path, answer: Callable[[str, str], Any]
             ) -> list[str]:
    """Route ``fetch`` to ``answer(node name, path)``; return the URLs asked."""
    by_url = {n.api_url: n.name for n in TestnetDir(root).load_manifest().nodes}
    asked: list[str] = []

    def fetch(url: str, timeout_s: float) -> Any:
        asked.append(url)
        base, _, path = url.partition("/v1/")
        return answer(by_url[base], path)

    monkeypatch.setattr(audit_cli, "fetch", fetch)
    return asked


def run(root: Path, *args: str) -> Any:
    return CliRunner().invoke(audit_cli.audit, ["--testnet", str(root), *args])


def test_command_reads_another_node_of_the_shard_when_the_first_is_down(
    testnet: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    audits = balanced_audits(testnet)

    def answer(node: str, path: str) -> Any:
        if node == "shard1-node0":
            raise ConnectionRefusedError("connection refused")
        return audits[int(node[5])]

    stand_in(monkeypatch, testnet, answer)
    result = run(testnet, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["ok"] and report["sources"] == {"0": "shard0-node0", "1": "shard1-node1"}
    assert report["quiescence"] is None and len(report["channels"]) == 2


def test_command_exits_3_with_one_line_when_no_node_of_a_shard_answers(
    testnet: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    audits = balanced_audits(testnet)

    def answer(node: str, path: str) -> Any:
        if node.startswith("shard1"):
            raise ConnectionRefusedError("connection refused")
        return audits[0]

    stand_in(monkeypatch, testnet, answer)
    result = run(testnet)
    assert result.exit_code == 3  # exits.UNREACHABLE
    assert result.output.startswith("Error: no node of shard 1 answers /v1/audit")
    assert result.output.count("\n") == 1 and "Traceback" not in result.output


def test_command_exits_1_when_an_asset_does_not_add_up(
    testnet: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    audits = balanced_audits(testnet)
    audits[0]["balances"]["1"] -= 1
    stand_in(monkeypatch, testnet, lambda node, path: audits[int(node[5])])
    result = run(testnet, "--json")
    assert result.exit_code == 1
    report = json.loads(result.output)
    assert [r["asset"] for r in report["assets"] if not r["ok"]] == ["USD"]


def test_wait_returns_at_quiescence_with_the_config_block_interval(
    testnet: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    audits = balanced_audits(testnet)
    polls = {"n": 0}

    def answer(node: str, path: str) -> Any:
        if path == "status":
            if node == "shard0-node0":
                polls["n"] += 1
            # shard 0 commits for the first three polls, then stays at height 8
            height = 5 + min(polls["n"], 3) if node.startswith("shard0") else 5
            return {"shard": int(node[5]), "height": height, "mempool": 0}
        answer = dict(audits[int(node[5])])
        answer["height"] = 5 + min(polls["n"], 3) if node.startswith("shard0") else 5
        return answer

    stand_in(monkeypatch, testnet, answer)
    result = run(testnet, "--wait", "10", "--quiet-intervals", "2", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["ok"] and report["heights"] == {"0": 8, "1": 5}
    assert report["quiescence"]["block_interval_ms"] == 20
    assert report["quiescence"]["quiet_intervals"] == 2
    assert report["quiescence"]["waited_ms"] >= 40 and polls["n"] > 3


def test_wait_exits_1_with_one_line_naming_what_still_moves(
    testnet: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    audits = balanced_audits(testnet)
    audits[0]["out_seq"]["1"] = 4  # 4 receipts for shard 1 that it never applies
    audits[0]["sent"]["1"]["0"] = 40
    audits[0]["balances"]["0"] -= 40

    def answer(node: str, path: str) -> Any:
        if path == "status":
            return {"shard": int(node[5]), "height": 5,
                    "mempool": 2 if node == "shard1-node3" else 0}
        return audits[int(node[5])]

    stand_in(monkeypatch, testnet, answer)
    result = run(testnet, "--wait", "0.2")
    assert result.exit_code == 1  # exits.CHECK_FAILED: not quiescent
    assert result.output == ("Error: not quiescent after 0.2 s: shard1-node3 mempool 2; "
                             "channel 0->1 4 receipts in flight\n")


def test_wait_shorter_than_the_quiet_period_is_refused(
    testnet: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stand_in(monkeypatch, testnet, lambda node, path: pytest.fail("no request expected"))
    result = run(testnet, "--wait", "0.05", "--quiet-intervals", "3")
    assert result.exit_code == 2  # exits.USAGE
    assert "shorter than 3 block intervals of 20 ms" in result.output


def test_missing_testnet_is_one_line(tmp_path: Path) -> None:
    result = run(tmp_path / "nowhere")
    assert result.exit_code == 2 and result.output.count("\n") == 1  # exits.USAGE
    assert "testnet.json not found" in result.output
