"""Issue 19 (deliverables 1 and 5), without Docker: the stack file's placement, publish
modes and load generator; the slot plan that spreads a shard's validators over machines;
the machine emulation options, the compose lines they write and the qdisc the container
entry point installs (with a fake ``tc``). The Docker runs are in tests/docker/."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]  # PyYAML (dev extras)
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from scripts.cli.testnet import emulation as em
from scripts.cli.testnet import swarm as sw
from scripts.cli.testnet.compose_file import render_compose
from scripts.cli.testnet.generate import TestnetSpec, node_entries

SPEC = TestnetSpec(shards=2, validators=4, accounts=10, docker=True, salt="s" * 32,
                   chain_id="shardnet-0123456789ab")


def _services(text: str) -> dict[str, Any]:
    services: dict[str, Any] = yaml.safe_load(text)["services"]
    return services


# -- the stack file ---------------------------------------------------------------------


def test_stack_pins_validator_i_of_every_shard_to_the_slot_i_label() -> None:
    services = _services(render_compose(SPEC, node_entries(SPEC), swarm=True))
    for node in node_entries(SPEC):
        deploy = services[node.name]["deploy"]
        assert deploy["placement"]["constraints"] == [
            f"node.labels.shardnet.slot{node.index} == true"]
        assert deploy["restart_policy"]["condition"] == "none"
        assert services[node.name]["volumes"] == [f"{node.name}-data:/data"]
        # Alive, not ready: Swarm puts a task in the overlay's DNS only once healthy, and
        # readiness (/v1/health) needs the peers found through that DNS.
        check = services[node.name]["healthcheck"]
        assert "/v1/status" in check["test"][-1] and check["start_period"] == "300s"


def test_stack_publishes_through_ingress_or_in_host_mode() -> None:
    nodes = node_entries(SPEC)
    for mode in ("ingress", "host"):
        services = _services(render_compose(SPEC, nodes, swarm=True, publish=mode))
        ports = [services[n.name]["ports"][0] for n in nodes]
        assert [p["published"] for p in ports] == list(range(8000, 8000 + len(nodes)))
        assert {p["mode"] for p in ports} == {mode} and {p["target"] for p in ports} == {8000}
        # Host mode: names resolve to task addresses (a virtual IP needs IPVS too).
        assert {services[n.name]["deploy"].get("endpoint_mode") for n in nodes} == {
            "dnsrr" if mode == "host" else None}
    with pytest.raises(ValueError, match="publish mode"):
        render_compose(SPEC, nodes, swarm=True, publish="mesh")


def test_loadgen_has_no_healthcheck_so_swarm_does_not_kill_it_with_137() -> None:
    """The earlier finding: `docker service scale shardnet_loadgen=1` -> exit 137. The
    load generator inherited the image's healthcheck (GET /v1/health on its own API
    port, which it does not serve): unhealthy after the start period, killed by Swarm."""
    for swarm in (False, True):
        loadgen = _services(render_compose(SPEC, node_entries(SPEC), swarm=swarm))["loadgen"]
        assert loadgen["healthcheck"] == {"disable": True}
    stack = yaml.safe_load(render_compose(SPEC, node_entries(SPEC), swarm=True))
    assert stack["services"]["loadgen"]["deploy"]["replicas"] == 0
    assert stack["networks"]["shardnet"] == {"attachable": True}


def _machines(count: int) -> list[sw.Machine]:
    return [sw.Machine(f"id{k}", f"host{k}") for k in range(count)]


@settings(max_examples=100, deadline=None)
@given(validators=st.sampled_from([4, 7, 10, 13]), machines=st.integers(1, 20))
def test_slot_plan_spreads_a_shards_validators_over_the_machines(validators: int,
                                                                 machines: int) -> None:
    plan = sw.slot_plan(validators, _machines(machines))
    slots = sorted(s for held in plan.values() for s in held)
    assert slots == list(range(validators))  # every slot placed once
    per_machine = [len(held) for held in plan.values()]
    # As even as it gets: no machine holds more than its share rounded up, so with
    # M >= R machines no two validators of a shard share one.
    assert max(per_machine) == -(-validators // min(machines, validators))
    if machines >= validators:
        assert max(per_machine) == 1


class FakeDocker:
    """`docker node ls / inspect / update` over a dict of labels."""

    def __init__(self, labels: dict[str, dict[str, str]]) -> None:
        self.labels = labels
        self.updates: list[list[str]] = []

    def __call__(self, *args: str, **_: Any) -> subprocess.CompletedProcess[str]:
        out = ""
        if args[:2] == ("node", "ls"):
            out = "\n".join(f"{i} host-{i} Ready Active" for i in self.labels)
        elif args[:2] == ("node", "inspect"):
            out = json.dumps(self.labels[args[-1]])
        elif args[:2] == ("node", "update"):
            self.updates.append(list(args))
            words = list(args[2:-1])
            for flag, value in zip(words[::2], words[1::2], strict=True):
                if flag == "--label-add":
                    key, _sep, val = value.partition("=")
                    self.labels[args[-1]][key] = val
                else:
                    self.labels[args[-1]].pop(value)
        return subprocess.CompletedProcess(list(args), 0, out, "")


def test_label_nodes_sets_the_plan_and_removes_stale_slots(monkeypatch: Any) -> None:
    fake = FakeDocker({"a": {"shardnet.slot5": "true", "zone": "x"}, "b": {}})
    monkeypatch.setattr(sw, "docker", fake)
    placement = sw.label_nodes(4)
    assert placement == {"host-a": [0, 2], "host-b": [1, 3]}
    assert fake.labels["a"] == {"zone": "x", "shardnet.slot0": "true",
                                "shardnet.slot2": "true"}
    fake.updates.clear()
    sw.label_nodes(4)  # already right: no update
    assert fake.updates == []


def test_load_job_report_is_read_from_the_service_logs() -> None:
    report = {"sent": 3, "audit": {"ok": True}}
    text = "waiting\n" + json.dumps(report, indent=2) + "\n"
    assert sw._report_in(text) == report
    assert sw._report_in(json.dumps(report, indent=2)) == report
    assert sw._report_in("Error: nodes did not answer\n") is None
    assert sw._report_in("x\n{\n  broken\n") is None


# -- emulating separate machines ------------------------------------------------------


@pytest.mark.parametrize(("text", "ms"), [("20ms", 20), ("0.05s", 50), ("7", 7), ("1ms", 1)])
def test_latency_parses_to_whole_milliseconds(text: str, ms: int) -> None:
    assert em.parse_latency(text) == ms


@pytest.mark.parametrize("text", ["0ms", "-5ms", "20us", "fast", "11s", ""])
def test_latency_refuses_what_it_cannot_emulate(text: str) -> None:
    with pytest.raises(em.EmulationError, match="latency"):
        em.parse_latency(text)


@pytest.mark.parametrize(("text", "bits"), [("1gbit", 10**9), ("100mbit", 10**8),
                                            ("512kbit", 512_000), ("1.5Gbit", 1_500_000_000)])
def test_bandwidth_parses_tc_bit_units(text: str, bits: int) -> None:
    assert em.parse_bandwidth(text) == bits
    assert em.parse_bandwidth(em.format_rate(bits)) == bits


@pytest.mark.parametrize("text", ["1gbps", "1000", "1kbit", "200gbit", "lots"])
def test_bandwidth_refuses_other_units_and_out_of_range(text: str) -> None:
    with pytest.raises(em.EmulationError, match="bandwidth"):
        em.parse_bandwidth(text)


@pytest.mark.parametrize("env", [{em.DELAY_ENV: "x"}, {em.DELAY_ENV: "0"},
                                 {em.RATE_ENV: "12"}, {em.DELAY_ENV: "99999"}])
def test_container_env_with_malformed_values_is_refused(env: dict[str, str]) -> None:
    with pytest.raises(em.EmulationError):
        em.from_env(env)


def test_compose_file_limits_cpus_and_asks_the_entry_point_for_the_qdisc() -> None:
    emulation = em.Emulation(cpus=0.5, delay_ms=20, rate_bit=10**9)
    services = _services(render_compose(SPEC, node_entries(SPEC), emulation=emulation))
    for node in node_entries(SPEC):
        service = services[node.name]
        assert service["cpus"] == 0.5 and service["cap_add"] == ["NET_ADMIN"]
        assert service["user"] == "0:0"  # drops to shardnet after tc (docker-node)
        assert service["environment"][em.DELAY_ENV] == "20"
        assert service["environment"][em.RATE_ENV] == "1000000000"
    assert em.from_env({k: str(v) for k, v in services["shard0-node0"]["environment"].items()}
                       ) == em.Emulation(delay_ms=20, rate_bit=10**9)
    cpus_only = _services(render_compose(SPEC, node_entries(SPEC),
                                         emulation=em.Emulation(cpus=2)))["shard0-node0"]
    assert cpus_only["cpus"] == 2 and "user" not in cpus_only and "cap_add" not in cpus_only
    with pytest.raises(ValueError, match="compose"):
        render_compose(SPEC, node_entries(SPEC), swarm=True, emulation=emulation)


def test_init_writes_the_emulation_into_the_compose_file_and_the_local_configs(
        tmp_path: Path) -> None:
    from scripts.cli.testnet.cli import testnet

    root = tmp_path / "net"
    done = CliRunner().invoke(testnet, ["init", "--dir", str(root), "--shards", "1",
                                        "--accounts", "10", "--cpus-per-node", "0.5",
                                        "--latency", "20ms", "--bandwidth", "1gbit"])
    assert done.exit_code == 0, done.output
    compose = _services((root / "docker-compose.yml").read_text())
    assert compose["shard0-node3"]["cpus"] == 0.5
    assert compose["shard0-node3"]["environment"][em.DELAY_ENV] == "20"
    assert "cpus" not in (root / "docker-stack.yml").read_text()
    # Local processes: each node delays its own p2p traffic (the CPU limit is compose's).
    from node.config import load_config

    local = load_config(root / "nodes" / "shard0-node3").net_emulation
    assert (local.mode, local.latency_ms, local.bandwidth_bits_per_s) == (
        "userspace", 20, 10**9)
    plain = tmp_path / "plain"
    assert CliRunner().invoke(testnet, ["init", "--dir", str(plain), "--shards", "1",
                                        "--accounts", "10"]).exit_code == 0
    assert load_config(plain / "nodes" / "shard0-node0").net_emulation.mode == "off"
    bad = CliRunner().invoke(testnet, ["init", "--dir", str(tmp_path / "bad"),
                                       "--latency", "20us"])
    assert bad.exit_code == 2 and "--latency" in bad.output
    assert not (tmp_path / "bad").exists()


class FakeTc:
    """``tc`` that answers like a kernel without netem (or refuses everything)."""

    def __init__(self, netem: bool = True, permitted: bool = True) -> None:
        self.netem, self.permitted = netem, permitted
        self.calls: list[list[str]] = []

    def __call__(self, argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        self.calls.append(list(argv))
        if not self.permitted:
            return subprocess.CompletedProcess(argv, 2, "", "RTNETLINK answers: Operation "
                                               "not permitted\n")
        if "netem" in argv and not self.netem:
            return subprocess.CompletedProcess(argv, 2, "", "Error: Specified qdisc kind is "
                                               "unknown.\n")
        return subprocess.CompletedProcess(argv, 0, "", "")


def _apply(emulation: em.Emulation, tc: Any) -> tuple[dict[str, Any], list[Any]]:
    import structlog

    with capture_logs() as logs:
        outcome = em.apply(emulation, structlog.get_logger(), run=tc, devices=["eth0"])
    return outcome, logs


def test_entry_point_installs_netem_with_delay_and_rate() -> None:
    tc = FakeTc()
    outcome, logs = _apply(em.Emulation(delay_ms=20, rate_bit=10**9), tc)
    assert tc.calls == [["tc", "qdisc", "replace", "dev", "eth0", "root", "netem", "delay",
                         "20ms", "limit", str(em.QUEUE_PACKETS), "rate", "1000000000bit"]]
    assert outcome["applied"] and [e["event"] for e in logs] == ["net.emulation.applied"]
    assert logs[0]["method"] == "netem"
    assert em.userspace_part(em.Emulation(delay_ms=20, rate_bit=10**9), outcome) == (
        em.Emulation())  # the kernel does it all: the node adds nothing


def test_kernel_without_netem_says_so_and_still_limits_the_rate_with_tbf() -> None:
    tc = FakeTc(netem=False)
    outcome, logs = _apply(em.Emulation(delay_ms=20, rate_bit=10**8), tc)
    assert tc.calls[1][6:10] == ["tbf", "rate", "100000000bit", "burst"]
    assert outcome["applied"] and outcome["reason"] == "no_netem"
    assert outcome["delay_ms"] is None
    assert [(e["event"], e.get("reason"), e["method"]) for e in logs] == [
        ("net.emulation.failed", "no_netem", "netem"),
        ("net.emulation.applied", "no_netem", "tbf")]
    # The delay falls back to the node (userspace); the rate stays with tbf.
    assert em.userspace_part(em.Emulation(delay_ms=20, rate_bit=10**8), outcome) == (
        em.Emulation(delay_ms=20))
    delay_only, logs = _apply(em.Emulation(delay_ms=20), FakeTc(netem=False))
    assert not delay_only["applied"] and delay_only["reason"] == "no_netem"
    assert em.userspace_part(em.Emulation(delay_ms=20), delay_only) == em.Emulation(
        delay_ms=20)


def test_without_net_admin_the_failure_is_logged_not_raised() -> None:
    outcome, logs = _apply(em.Emulation(rate_bit=10**9), FakeTc(permitted=False))
    assert not outcome["applied"] and outcome["reason"] == "not_permitted"
    assert logs[-1]["event"] == "net.emulation.failed"
    # Nothing installed: the node shapes its own traffic.
    assert em.userspace_part(em.Emulation(rate_bit=10**9), outcome) == em.Emulation(
        rate_bit=10**9)


def test_image_without_tc_is_reported() -> None:
    def missing(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        raise FileNotFoundError("tc")

    outcome, logs = _apply(em.Emulation(delay_ms=5), missing)
    assert outcome["reason"] == "no_tc" and logs[-1]["reason"] == "no_tc"


def test_no_emulation_runs_no_tc() -> None:
    tc = FakeTc()
    outcome, logs = _apply(em.Emulation(cpus=1), tc)
    assert outcome == {"applied": False} and tc.calls == [] and logs == []


def test_tbf_bucket_covers_ten_ms_of_the_rate() -> None:
    assert em.tbf_burst_bytes(10**9) == 1_250_000
    assert em.tbf_burst_bytes(10**6) == 16 * 1024
    assert re.fullmatch(r"\d+", str(em.tbf_burst_bytes(123_456_789)))


@pytest.mark.parametrize(("netem", "mode", "latency_ms", "rate_bit"), [
    (False, "userspace", 20, 0),  # no netem qdisc: tbf limits the rate, the node delays
    (True, "netem", 20, 10**8),  # the kernel does both: the node adds nothing
])
def test_container_entry_point_hands_what_the_kernel_cannot_do_to_the_node(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, netem: bool, mode: str,
        latency_ms: int, rate_bit: int) -> None:
    import os

    from node.config import load_config
    from scripts.cli.testnet import cli

    tc = FakeTc(netem=netem)
    monkeypatch.setattr(cli, "apply_emulation", lambda asked, log: em.apply(
        asked, log, run=tc, devices=["eth0"]))
    monkeypatch.setattr(cli, "drop_privileges", lambda: None)  # no `shardnet` user here
    exec_args: list[Any] = []
    monkeypatch.setattr(os, "execvp", lambda *args: exec_args.append(args))
    env = {"SHARDNET_NODE": "shard0-node1", "SHARDNET_SHARDS": "1", "SHARDNET_ACCOUNTS": "10",
           em.DELAY_ENV: "20", em.RATE_ENV: str(10**8)}
    done = CliRunner().invoke(cli.testnet, ["docker-node", "--data", str(tmp_path)], env=env)
    assert done.exit_code == 0, done.output
    emulation = load_config(tmp_path / "testnet" / "nodes" / "shard0-node1").net_emulation
    assert (emulation.mode, emulation.latency_ms, emulation.bandwidth_bits_per_s) == (
        mode, latency_ms, rate_bit)
    assert exec_args and exec_args[0][0] == "shardnet"
