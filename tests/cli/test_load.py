"""``shardnet load``: the pure parts (percentiles, rate schedules, workloads, nonces,
the exactly-once check, thresholds) and runs of the real command against a fake
node (tests/support/load.py)."""

from __future__ import annotations

import json
import random
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from scripts.cli.load.accounts import NonceBook, build_universe
from scripts.cli.load.cli import AUDIT_EXIT, THRESHOLD_EXIT, load
from scripts.cli.load.rate import Arrivals, RateError, RateSchedule, parse_duration
from scripts.cli.load.report import Threshold
from scripts.cli.load.stats import percentile, summarize
from scripts.cli.load.targets import TargetError, discover_urls
from scripts.cli.load.tracker import Tracker, TxRecord
from scripts.cli.load.workload import Workload, WorkloadError, WorkloadSpec, parse_hot, parse_mix
from scripts.cli.testnet.generate import TestnetSpec, genesis_document, node_entries
from sharding.genesis import load_genesis
from tests.support.load import FakeNode, fake_node

# -- percentiles -----------------------------------------------------------------------


def test_percentiles_are_exact_nearest_rank_on_known_data() -> None:
    values = [float(v) for v in range(1, 1001)]
    assert [percentile(values, p) for p in (50, 90, 99, 99.9, 100)] == [
        500.0, 900.0, 990.0, 999.0, 1000.0]
    assert percentile([7.0], 50) == 7.0
    assert percentile([1.0, 2.0], 50) == 1.0  # rank ceil(0.5 * 2) = 1
    assert percentile([1.0, 2.0, 3.0, 4.0], 75) == 3.0
    assert percentile([], 50) is None
    summary = summarize(reversed(values))
    assert summary == {"count": 1000, "p50": 500.0, "p90": 900.0, "p99": 990.0,
                       "p999": 999.0, "max": 1000.0, "mean": 500.5}


def test_percentile_refuses_out_of_range() -> None:
    with pytest.raises(ValueError):
        percentile([1.0], 0)
    with pytest.raises(ValueError):
        percentile([1.0], 101)


# -- rate schedules ----------------------------------------------------------------------


def test_rate_forms_constant_ramp_and_steps() -> None:
    constant = RateSchedule.parse("500")
    assert constant.total_s is None and constant.expected_count(10) == 5000
    ramp = RateSchedule.parse("500:3000:30s")
    assert ramp.total_s == 30 and ramp.rate_at(15) == 1750
    assert ramp.expected_count(30) == pytest.approx((500 + 3000) / 2 * 30)
    steps = RateSchedule.parse("500,1000,2000:20s")
    assert steps.total_s == 60
    assert [steps.rate_at(t) for t in (0, 19.9, 20, 45, 61)] == [500, 500, 1000, 2000, 0]
    assert steps.expected_count(60) == pytest.approx(70_000)
    assert parse_duration("2m") == 120 and parse_duration("250ms") == 0.25


@pytest.mark.parametrize("text", ["", "fast", "0", "-5", "1:2", "1,2", "1:2:3:4", "5:6:x"])
def test_rate_refuses_malformed_specs(text: str) -> None:
    with pytest.raises(RateError):
        RateSchedule.parse(text)


def test_even_arrivals_release_exactly_the_expected_count() -> None:
    arrivals = Arrivals(RateSchedule.parse("200:600:2s"), poisson=False,
                        rng=random.Random(1))
    released = [arrivals.due(k / 50) for k in range(1, 101)]
    assert sum(released) == 800
    assert sum(released[:50]) == 300  # first second: integral of 200..400


def test_poisson_arrivals_average_the_rate() -> None:
    arrivals = Arrivals(RateSchedule.parse("1000"), poisson=True, rng=random.Random(3))
    count = sum(arrivals.due(k / 10) for k in range(1, 101))
    assert abs(count - 10_000) < 4 * 10_000 ** 0.5  # 4 sigma


# -- workloads and accounts ---------------------------------------------------------------


def _genesis(shards: int = 2) -> Any:
    spec = TestnetSpec(shards=shards, validators=4, accounts=200)
    return load_genesis(genesis_document(spec, node_entries(spec)))


def test_workload_mix_cross_shard_share_and_reproducibility() -> None:
    universe = build_universe(_genesis(), "shardnet", 200, 20)
    assert len(universe.senders) == 20
    assert {s.shard for s in universe.senders[:2]} == {0, 1}  # interleaved
    spec = WorkloadSpec(parse_mix("transfer=70,swap=30"), cross_shard=0.25,
                        hot=parse_hot("zipf:1.2"), rng_seed=9)
    intents = [Workload(spec, universe).next() for _ in range(1)]
    stream = Workload(spec, universe)
    intents = [stream.next() for _ in range(4000)]
    again = Workload(spec, universe)
    assert [again.next() for _ in range(4000)] == intents
    swaps = sum(i.kind == "swap" for i in intents) / len(intents)
    crossing = sum(i.src_shard != i.dst_shard for i in intents) / len(intents)
    assert 0.27 < swaps < 0.33 and 0.22 < crossing < 0.28
    assert {i.inbound_hops for i in intents if i.kind == "swap" and
            i.src_shard != i.dst_shard} == {2}
    assert all(i.src_shard == universe.senders[i.sender].shard for i in intents)
    targets = [i.target for i in intents if i.kind == "transfer"]
    top = max(targets.count(t) for t in set(targets))
    assert top > len(targets) / 20  # zipf: a hot recipient


def test_workload_and_mix_refusals() -> None:
    with pytest.raises(WorkloadError):
        parse_mix("transfer=1,mint=2")
    with pytest.raises(WorkloadError):
        parse_hot("zipf:-1")
    universe = build_universe(_genesis(1), "shardnet", 200, 4)
    with pytest.raises(WorkloadError, match="2 shards"):
        Workload(WorkloadSpec({"transfer": 1.0}, cross_shard=0.5), universe)


def test_nonce_book_reuses_a_rejected_nonce_and_resyncs_to_the_node() -> None:
    book, sender = NonceBook(), b"s" * 32
    book.set(sender, 10)
    assert [book.take(sender) for _ in range(3)] == [10, 11, 12]
    book.give_back(sender, 11)  # rejected: the gap is closed by the next transaction
    assert book.take(sender) == 11 and book.take(sender) == 13
    book.give_back(sender, 12)
    book.resync(sender, 20)  # the node says 20 is next: 12 is not usable any more
    assert book.take(sender) == 20
    book.give_back(sender, 15)  # a late rejection below the node's nonce: ignored
    assert book.take(sender) == 21


# -- exactly once ----------------------------------------------------------------------


def _record(digest: str, hops: int = 0) -> TxRecord:
    return TxRecord(digest, 0, 0, 1 if hops else 0, "transfer", hops, b"s" * 32, 0,
                    submitted_s=0.0, accepted=True)


def test_exactly_once_catches_a_lost_and_a_duplicated_transaction() -> None:
    tracker = Tracker()
    for digest, hops in (("a", 0), ("b", 0), ("c", 1), ("d", 1), ("e", 0)):
        tracker.add(_record(digest, hops))
    tracker.on_rejected("e", "insufficient_funds")
    tracker.on_block({"shard": 0, "height": 1, "txs": ["a", "c", "d"]}, 0.5)
    tracker.on_block({"shard": 0, "height": 1, "txs": ["a"]}, 0.6)  # the same block again
    tracker.on_block({"shard": 1, "height": 4, "inbound_origins": ["c", "d"]}, 0.9)
    assert tracker.exactly_once()["lost"] == ["b"] and not tracker.exactly_once()["duplicated"]
    tracker.on_block({"shard": 0, "height": 2, "txs": ["a"]}, 1.0)  # committed twice
    tracker.on_block({"shard": 1, "height": 5, "inbound_origins": ["d"]}, 1.1)  # applied twice
    assert tracker.exactly_once()["duplicated"] == ["a", "d"]
    assert tracker.counts()["rejected"] == 1 and tracker.records["c"].finalized_s == 0.9


# -- find-max -------------------------------------------------------------------------


def _fake_step(capacity: float) -> Any:
    def run(rate: float) -> dict[str, Any]:
        tps = min(rate, capacity) * 0.98
        p99 = 300.0 if rate <= capacity else 5000.0
        return {"latency_ms": {"commit": {"p99": p99, "p50": 100.0}}, "sent": int(rate),
                "offered": int(rate), "skipped": 0, "rejected_total": 0,
                "tps_committed": tps, "tps_offered": rate, "in_flight_at_end": 0,
                "lost": 0, "duplicated": 0}
    return run


@pytest.mark.parametrize(("start", "capacity"), [(500.0, 1000.0), (500.0, 300.0)])
def test_find_max_steps_up_or_down_then_refines_once(
        monkeypatch: pytest.MonkeyPatch, start: float, capacity: float) -> None:
    from scripts.cli.load import findmax

    monkeypatch.setattr(findmax, "run_step", _fake_step(capacity))
    found = findmax.find_max(lambda rate, step: rate, start, findmax.Limits())  # type: ignore
    rates = [row["rate"] for row in found["steps"]]
    if capacity > start:
        assert rates == [500.0, 650.0, 845.0, 1098.5, 971.8]  # up x1.3, then the midpoint
    else:
        assert rates == [500.0, 384.6, 295.9, 340.3]  # down /1.3, then the midpoint
    best = max(r for r in rates if r <= capacity)
    assert found["max_rate"] == best and found["max_tps"] == pytest.approx(best * 0.98, rel=1e-3)


# -- thresholds ------------------------------------------------------------------------


def test_thresholds_parse_and_check() -> None:
    report = {"latency_ms": {"commit": {"p99": 900.0}, "finality": {"p99": 3000.0}},
              "sent": 200, "rejected_total": 3, "tps_committed": 480.0, "errors": {},
              "failed": 0, "audit": {"lost": 0, "duplicated": 0}}
    checks = {text: Threshold.parse(text).check(report)["ok"] for text in (
        "p99<1000ms", "p99<0.5s", "finality.p99<2.5s", "rejected<1%", "rejected<=3",
        "tps>450", "lost==0")}
    assert checks == {"p99<1000ms": True, "p99<0.5s": False, "finality.p99<2.5s": False,
                      "rejected<1%": False, "rejected<=3": True, "tps>450": True,
                      "lost==0": True}
    for bad in ("p99<1000%", "latency<1s", "p99 1000", "rejected<2ms"):
        with pytest.raises(ValueError):
            Threshold.parse(bad)


# -- the command against a fake node ------------------------------------------------------


def run_load(*args: str) -> tuple[int, dict[str, Any], str]:
    result = CliRunner().invoke(load, [*args, "--json", "--quiet"], catch_exceptions=False)
    try:
        report = json.loads(result.stdout)
    except ValueError:
        report = {}
    return result.exit_code, report, result.output


def test_open_loop_spreads_its_rate_against_a_fake_node() -> None:
    """400 tx/s for 3 s: exactly 1,200 sent and committed, spread over the run rather than
    sent in a burst. How evenly a shared machine lets them out is measured by the
    benchmarks, not asserted here; the release schedule itself is checked exactly by
    test_even_arrivals_release_exactly_the_expected_count."""
    with fake_node() as node:
        code, report, output = run_load("--url", node.url, "--rate", "400", "--duration", "3s",
                                        "--mix", "transfer=1", "--sign-workers", "0",
                                        "--no-audit", "--drain", "5s", "--senders", "16")
        received = sorted(r.t for r in node.received)
    assert code == 0, output
    assert report["sent"] == report["committed"] == len(received) == 1200
    # A burst would arrive within a fraction of a second; paced, the last of them leaves
    # about 3 s after the first (later, never earlier, on a starved machine).
    assert received[-1] - received[0] >= 2.5
    assert sum(t < received[0] + 1.0 for t in received) <= 400 * 1.15
    assert report["latency_ms"]["commit"]["count"] == 1200
    assert report["offered"] == 1200


def test_ramp_sends_the_integral_and_closed_loop_waits_for_commits() -> None:
    with fake_node() as node:
        code, report, output = run_load("--url", node.url, "--rate", "100:300:2s",
                                        "--mix", "transfer=1", "--sign-workers", "1",
                                        "--no-audit", "--drain", "5s")
        assert code == 0, output
        assert report["sent"] == 400 and report["committed"] == 400
        code, report, output = run_load("--url", node.url, "--concurrency", "4",
                                        "--duration", "1s", "--mix", "transfer=1",
                                        "--no-audit", "--sign-workers", "0")
    assert code == 0, output
    # 4 users, each waiting ~1 block (100 ms) per transaction: about 40 in one second.
    assert 8 <= report["sent"] <= 80 and report["committed"] == report["sent"]


def test_503_retry_after_backs_off_and_resubmits() -> None:
    """A full mempool answers 503 + Retry-After: 1: the refused transactions are sent
    again after the delay, counted as back-offs, none dropped."""
    with fake_node(FakeNode(busy_posts=3)) as node:
        code, report, output = run_load("--url", node.url, "--rate", "100", "--duration", "1s",
                                        "--mix", "transfer=1", "--sign-workers", "0",
                                        "--no-audit", "--drain", "10s")
        accepted = sorted(r.t for r in node.received if r.accepted)
        refused = node.refused
    assert code == 0, output
    assert report["busy_backoffs"] == 3 and report["retries"] >= 3
    assert report["sent"] == report["committed"] == 100 and report["rejected_total"] == 0
    assert len(accepted) == 100  # each one accepted exactly once, after its back-off
    assert accepted[-1] - refused[0] >= 0.9  # Retry-After was honoured


def test_nonce_resync_after_a_rejection() -> None:
    """Someone else used nonces 0..4 of a sender: its first transaction is rejected
    (wrong_nonce); the generator reads the node's nonce and carries on from 5."""
    node = FakeNode()
    universe = build_universe(_genesis(1), "shardnet", 100, 4)
    victim = universe.senders[0].address
    node.nonce_jump[victim] = 5
    with fake_node(node):
        code, report, output = run_load("--url", node.url, "--rate", "100", "--duration", "2s",
                                        "--senders", "4", "--mix", "transfer=1",
                                        "--sign-workers", "0", "--audit-wait", "10s")
    assert code == 0, output
    mine = [r for r in node.received if r.sender == victim]
    accepted = [r.nonce for r in mine if r.accepted]
    assert mine[0].error == "wrong_nonce"
    assert accepted == list(range(5, 5 + len(accepted))) and len(accepted) > 10
    assert report["nonce_resyncs"] >= 1 and report["rejected"]["wrong_nonce"] >= 1
    assert report["audit"]["ok"] and report["audit"]["lost"] == 0


def test_audit_catches_an_injected_loss_and_duplicate() -> None:
    node = FakeNode(lose={5}, duplicate={9})
    with fake_node(node):
        code, report, output = run_load("--url", node.url, "--rate", "50", "--duration", "1s",
                                        "--mix", "transfer=1", "--sign-workers", "0",
                                        "--drain", "2s", "--audit-wait", "10s",
                                        "--threshold", "p99<10s")
    assert code == AUDIT_EXIT, output
    audit = report["audit"]
    assert not audit["ok"] and audit["conservation_ok"]
    assert audit["lost"] == 1 and audit["lost_hashes"] == [node.accepted_order[5]]
    assert audit["duplicated"] == 1 and audit["duplicated_hashes"] == [node.accepted_order[9]]


def test_a_failed_threshold_exits_99() -> None:
    with fake_node() as node:
        code, report, _ = run_load("--url", node.url, "--rate", "50", "--duration", "1s",
                                   "--no-audit", "--sign-workers", "0", "--mix", "transfer=1",
                                   "--threshold", "p99<1ms", "--threshold", "rejected<1%")
    assert code == THRESHOLD_EXIT
    assert [row["ok"] for row in report["thresholds"]] == [False, True]


def test_discovery_falls_back_to_the_genesis_address_and_reports_bad_targets(
        tmp_path: Path) -> None:
    with fake_node(FakeNode(advertise_url="http://127.0.0.1:9")) as node:
        network = discover_urls([node.url])
        assert [n.url for n in network.nodes] == [node.url] * 4
        assert network.chain_id == "shardnet-local" and network.num_shards == 1
    with pytest.raises(TargetError, match="no node answers /v1/network"):
        discover_urls(["http://127.0.0.1:9"])
    code, _, output = run_load("--url", "http://127.0.0.1:9")
    assert code == 3 and "Error: no node answers /v1/network" in output  # exits.UNREACHABLE
    assert "Traceback" not in output
    code, _, output = run_load("--testnet", str(tmp_path / "none"))
    assert code == 2 and "not found" in output  # exits.USAGE


def test_profile_file_supplies_options_and_the_command_line_wins(tmp_path: Path) -> None:
    profile = tmp_path / "profile.toml"
    profile.write_text('[load]\nrate = "60"\nduration = "1s"\nmix = "transfer=1"\n'
                       'sign-workers = 0\naudit = false\nthresholds = ["rejected<1%"]\n')
    with fake_node() as node:
        code, report, output = run_load("--url", node.url, "--profile", str(profile),
                                        "--rate", "120")
    assert code == 0, output
    assert report["sent"] == 120 and report["settings"]["rate"] == "120 tx/s"
    assert report["thresholds"][0]["threshold"] == "rejected<1%"
    profile.write_text("speed = 3\n")
    code, _, output = run_load("--profile", str(profile))
    assert code == 1 and "unknown key 'speed'" in output


# -- the HTML report -----------------------------------------------------------------------


def test_report_files_and_html_render_in_headless_chromium(tmp_path: Path) -> None:
    with fake_node() as node:
        code, _, output = run_load("--url", node.url, "--rate", "200", "--duration", "2s",
                                        "--mix", "transfer=1", "--sign-workers", "0",
                                        "--report", str(tmp_path / "out"), "--audit-wait", "10s")
    assert code == 0, output
    out = tmp_path / "out"
    saved = json.loads((out / "report.json").read_text())
    for key in ("sent", "committed", "finalized", "rejected", "duration_s", "tps_committed"):
        assert key in saved
    for kind in ("commit", "finality"):
        assert set(saved["latency_ms"][kind]) >= {"p50", "p90", "p99", "p999", "max"}
    assert set(saved["audit"]) >= {"ok", "lost", "duplicated", "assets"}
    assert saved["audit"]["assets"]["COIN"]["ok"]
    header = (out / "timeseries.csv").read_text().splitlines()[0]
    assert header.startswith("t_s,offered_tps,sent_tps,committed_tps")
    page = (out / "report.html").read_text()
    assert page.count("<svg") >= 4
    # Offline: nothing to fetch (no script, no linked stylesheet, image or font).
    assert "<script" not in page and "<link" not in page
    assert not re.search(r"(src|href)\s*=\s*[\"'](https?:)?//|url\(\s*[\"']?(https?:)?//", page)
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed (Debian package `chromium`): the page was "
                    "checked as text only")
    command = [browser, "--headless", "--no-sandbox", "--disable-gpu",
               "--window-size=1000,3000"]
    dom = subprocess.run([*command, "--dump-dom", (out / "report.html").as_uri()],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    assert dom.count("<svg") >= 4 and "committed tx/s per shard" in dom
    shot = tmp_path / "report.png"
    subprocess.run([*command, f"--screenshot={shot}", (out / "report.html").as_uri()],
                   capture_output=True, timeout=120, check=True)
    assert shot.stat().st_size > 20_000  # a blank page of this size is ~5 KB


def test_events_503_retry_after_is_honoured_not_hammered() -> None:
    """Every /v1/events (the fake shard's 4 validators share one URL) is at its subscriber
    cap (503 + Retry-After: 1) for the first 6 requests: the generator tries each node of
    the shard once, then waits as told before the next round (it asked again every 0.2 s
    before), still learns every commit, and counts the refusals."""
    with fake_node(FakeNode(busy_events=6)) as node:
        code, report, output = run_load("--url", node.url, "--rate", "50", "--duration", "1s",
                                        "--mix", "transfer=1", "--sign-workers", "0",
                                        "--no-audit", "--drain", "10s")
        refused, accepted = list(node.events_refused), list(node.events_accepted)
    assert code == 0, output
    assert len(refused) == 6 and accepted
    # One round of 4 nodes, then the pause the node asked for, then the next round.
    assert refused[3] - refused[0] < 0.9 <= refused[4] - refused[3]
    assert report["errors"].get("events_http_503") == 6
    assert report["sent"] == report["committed"] == 50


def test_each_find_max_step_reports_its_own_generator_cpu_not_the_shared_signers_total(
        ) -> None:
    """The steps of a find-max (and bench e2e's half-load step) share one signer: a step's
    report counts the signing CPU spent during that step (it counted everything the signer
    had done since it started, overstating bench e2e's generator share)."""
    from scripts.bench.e2e import engine_factory
    from scripts.cli.load.findmax import run_step
    from scripts.cli.load.signer import Signer

    with fake_node() as node:
        network = discover_urls([node.url])
        universe = build_universe(network.genesis, "shardnet", 100, 16)
        signer = Signer(network.chain_id, "shardnet", [s.index for s in universe.senders], 1)
        try:
            make = engine_factory(network, universe, signer, 0.0, 1.0, 5.0)
            first = run_step(make(200, 0))
            spent_before = signer.worker_cpu_s
            second = run_step(make(200, 1))
            total = signer.worker_cpu_s
        finally:
            signer.close()
    assert first["sent"] == second["sent"] == 200 and spent_before > 0
    assert second["generator"]["signing_cpu_s"] == pytest.approx(total - spent_before, abs=0.011)
    assert second["generator"]["signing_cpu_s"] < round(total, 2)
