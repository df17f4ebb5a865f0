"""Prometheus for a testnet (issue 17): the scrape configurations and recording rules that
`testnet init` writes, `promtool` on them when it is installed (Debian's `prometheus`
package; .ci/run installs it), and the node metrics' naming conventions."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]  # PyYAML: via schemathesis (dev)
from prometheus_client.parser import text_string_to_metric_families

from node.metrics import NodeMetrics
from scripts.cli.testnet import prometheus as prom
from scripts.cli.testnet.compose_file import render_compose
from scripts.cli.testnet.generate import (
    TestnetSpec,
    dev_spec,
    fresh_identity,
    generate,
    node_entries,
)

REPO = Path(__file__).resolve().parents[2]
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool not on PATH (Debian: apt-get install prometheus; .ci/run installs it)")


def _testnet(tmp_path: Path, shards: int) -> tuple[Path, TestnetSpec]:
    """What `testnet init` writes: a fresh chain id and validator-key salt."""
    root = tmp_path / f"net{shards}"
    spec = fresh_identity(TestnetSpec(shards=shards, validators=4, accounts=10,
                                      base_port=31000))
    generate(spec, root)
    return root, spec


def _targets(config: dict[str, Any]) -> dict[str, tuple[str, str]]:
    (job,) = config["scrape_configs"]
    assert job["job_name"] == prom.JOB and job["metrics_path"] == "/metrics"
    out = {}
    for static in job["static_configs"]:
        (target,) = static["targets"]
        out[target] = (static["labels"]["shard"], static["labels"]["node"])
    return out


@pytest.mark.parametrize("shards", [1, 2])
def test_init_writes_scrape_configs_listing_every_node(tmp_path: Path, shards: int) -> None:
    root, spec = _testnet(tmp_path, shards)
    folder = root / prom.FOLDER
    local = yaml.safe_load((folder / prom.LOCAL_CONFIG).read_text())
    docker = yaml.safe_load((folder / prom.DOCKER_CONFIG).read_text())
    assert local["rule_files"] == docker["rule_files"] == [prom.RULES]
    nodes = node_entries(TestnetSpec(shards=shards, validators=4, base_port=31000))
    assert _targets(local) == {f"127.0.0.1:{n.api_port}": (str(n.shard), n.name) for n in nodes}
    assert len(_targets(local)) == shards * 4
    # In Docker: each node service's container API port, on the compose network.
    assert _targets(docker) == {f"{n.name}:8000": (str(n.shard), n.name) for n in nodes}
    # No secret in them (the salt stays in the manifest and the compose files), so the
    # container's prometheus user may read them.
    assert spec.salt and spec.salt in (root / "docker-compose.yml").read_text()
    assert all(spec.salt not in p.read_text() for p in folder.iterdir())
    assert all(p.stat().st_mode & 0o004 for p in folder.iterdir())


def test_rules_are_yaml_with_the_per_shard_records() -> None:
    rules = yaml.safe_load(prom.render_rules())
    records = {r["record"]: r["expr"] for g in rules["groups"] for r in g["rules"]}
    assert set(records) == set(prom.record_names())
    assert "max by (shard)" in records["shard:shardnet_txs_committed:rate1m"]
    assert "shardnet_txs_committed_total" in records["shard:shardnet_txs_committed:rate1m"]
    p99 = records["shard:shardnet_commit_latency_seconds:p99_1m"]
    assert p99.startswith("histogram_quantile(0.99, sum by (shard, le)")
    assert "shardnet_commit_latency_seconds_bucket" in p99
    for name in ("shard:shardnet_blocks_committed:rate1m", "shard:shardnet_view_changes:rate5m"):
        assert name in records
    # Every metric a rule reads is one the node exports (a renamed metric breaks a rule).
    exported = {f.name for f in text_string_to_metric_families(NodeMetrics().render().decode())}
    read = {metric for expr in records.values()
            for metric in re.findall(r"\b(shardnet_[a-z_]+?)(?:_total|_bucket)?[\[{]", expr)}
    assert {"shardnet_txs_committed", "shardnet_commit_latency_seconds",
            "shardnet_blocks_committed", "shardnet_view_changes"} <= read
    assert read <= exported, read - exported


def test_committed_root_files_match_the_compose_file() -> None:
    """The committed docker-compose.yml mounts prometheus/docker.yml and rules.yml: they are
    the generator's output for the committed topology."""
    nodes = node_entries(dev_spec())
    assert (REPO / prom.FOLDER / prom.DOCKER_CONFIG).read_text() == prom.render_config(
        nodes, docker=True)
    assert (REPO / prom.FOLDER / prom.RULES).read_text() == prom.render_rules()


def test_compose_file_has_prometheus_under_the_monitoring_profile() -> None:
    spec = dev_spec()
    nodes = node_entries(spec)
    compose = yaml.safe_load(render_compose(spec, nodes))
    service = compose["services"]["prometheus"]
    assert service["profiles"] == ["monitoring"]
    assert service["image"] == prom.IMAGE
    assert service["ports"] == ["127.0.0.1:9090:9090"]
    assert service["volumes"] == [
        "./prometheus/docker.yml:/etc/prometheus/prometheus.yml:ro",
        "./prometheus/rules.yml:/etc/prometheus/rules.yml:ro"]
    assert service["networks"] == compose["services"][nodes[0].name]["networks"]
    # Swarm rejects profiles: the stack file has no prometheus service.
    stack = yaml.safe_load(render_compose(spec, nodes, swarm=True))
    assert "prometheus" not in stack["services"]


@needs_promtool
@pytest.mark.parametrize("shards", [1, 2])
def test_promtool_accepts_the_generated_configs_and_rules(tmp_path: Path, shards: int) -> None:
    folder = _testnet(tmp_path, shards)[0] / prom.FOLDER
    assert PROMTOOL is not None
    for args in (["check", "config", str(folder / prom.LOCAL_CONFIG)],
                 ["check", "config", str(folder / prom.DOCKER_CONFIG)],
                 ["check", "rules", str(folder / prom.RULES)]):
        done = subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=60,
                              check=False)
        assert done.returncode == 0, (args, done.stdout, done.stderr)
        assert "SUCCESS" in done.stdout + done.stderr
    done = subprocess.run([PROMTOOL, "check", "rules", str(folder / prom.RULES)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert f"{len(prom.record_names())} rules found" in done.stdout


@needs_promtool
def test_promtool_refuses_a_broken_rule(tmp_path: Path) -> None:
    """The check has teeth: a rule with a PromQL syntax error fails it."""
    assert PROMTOOL is not None
    broken = tmp_path / "rules.yml"
    broken.write_text(prom.render_rules().replace("max by (shard)", "max by (shard", 1))
    done = subprocess.run([PROMTOOL, "check", "rules", str(broken)], capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode != 0


# --- naming conventions over a live node registry ----------------------------------------

AVERAGE = re.compile(r"(^|_)(avg|average|mean|per)(_|$)")
DURATION = re.compile(r"(^|_)(latency|duration|time|elapsed|delay|seconds)(_|$)")
SHARE = re.compile(r"(share|fraction|percent)")


async def _commit_and_scrape(tmp_path: Path) -> str:
    """The /metrics text of a node of four in-process validators that committed a
    transfer (tests/node/test_node_parts.py's memory parts)."""
    from tests.node.test_node_parts import make_nodes, submit_and_commit

    nodes = make_nodes(tmp_path)
    accepted, status, _ = await submit_and_commit(nodes)
    assert accepted and status == "finalized"
    return nodes[2].service.metrics_text().decode()


def test_live_node_metrics_follow_prometheus_conventions(tmp_path: Path) -> None:
    import asyncio

    text = asyncio.run(_commit_and_scrape(tmp_path))
    families = list(text_string_to_metric_families(text))
    by_name = {f.name: f for f in families}
    bad = []
    for family in families:
        if family.name.endswith("_created"):  # prometheus_client's creation timestamps
            continue
        samples = [s.name for s in family.samples if not s.name.endswith("_created")]
        if family.type == "counter" and not all(n.endswith("_total") for n in samples):
            bad.append(f"counter {family.name}: {samples} (not _total)")
        if family.type == "gauge" and AVERAGE.search(family.name):
            bad.append(f"gauge {family.name} is an average (export the two counters)")
        if DURATION.search(family.name) and not re.search(r"_seconds(_total)?$", family.name):
            bad.append(f"{family.name}: a duration not in _seconds")
        if "bytes" in family.name and not re.search(r"_bytes(_total)?$", family.name):
            bad.append(f"{family.name}: a size not ending in _bytes")
        if SHARE.search(family.name) and not family.name.endswith("_ratio"):
            bad.append(f"{family.name}: a share not ending in _ratio")
        if family.type == "histogram" and not re.search(r"_(seconds|bytes)$", family.name):
            bad.append(f"histogram {family.name} without a unit")
    assert not bad, bad
    # The counters the recording rules read moved: the scrape is of a node that worked.
    committed = sum(s.value for s in by_name["shardnet_txs_committed"].samples
                    if s.name == "shardnet_txs_committed_total")
    assert committed >= 1
    assert "shardnet_executor_largest_component_ratio" in by_name
    (build,) = by_name["shardnet_build_info"].samples
    assert build.name == "shardnet_build_info" and build.value == 1
    assert set(build.labels) == {"version", "python", "commit"}
    (cpu,) = by_name["process_cpu_seconds"].samples
    assert cpu.name == "process_cpu_seconds_total" and cpu.value > 0
    assert "python_info" in text
