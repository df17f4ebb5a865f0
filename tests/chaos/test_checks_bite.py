"""The mutation checks: the chaos runner against a fake node that loses, duplicates
or stops committing on purpose. A clean run passes every check; each injected defect
fails exactly the check that guards against it (the real-network scenarios are in
``test_scenarios_local.py``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from scripts.chaos.manifest import parse_scenario
from scripts.chaos.runner import RunOptions, run_scenario
from scripts.cli.load.report import write_report_dir
from scripts.cli.load.targets import discover_urls
from tests.chaos.fakes import FakeControl, HaltableNode
from tests.support.load import fake_node


def run(node: HaltableNode, *, kill_s: float = 1.0, bound_s: float = 5.0,
        halts: bool = True, report_dir: Path | None = None,
        end_after_heal_s: float | None = None) -> tuple[dict[str, Any], FakeControl]:
    scenario = parse_scenario({
        "recovery_bound_s": bound_s,
        "load": {"rate": 40, "duration": "5s", "mix": "transfer=1", "sign-workers": 0,
                 "drain": "5s", "audit-wait": "10s", "senders": 8},
        "actions": [{"at": "1.5s", "action": "kill", "nodes": "shard0-node1",
                     "duration": kill_s}],
    }, name="fake")
    control = FakeControl(node, halts=halts)
    with fake_node(node):
        network = discover_urls([node.url])
        report, rows = run_scenario(scenario, control, network, None, root=None,
                                    options=RunOptions(seed=3, catchup_s=5, audit_wait_s=10,
                                                       end_after_heal_s=end_after_heal_s))
    if report_dir is not None:
        write_report_dir(report_dir, report, rows)
    return report, control


def checks(report: dict[str, Any]) -> dict[str, bool]:
    return {name: c["ok"] for name, c in report["chaos"]["checks"].items()}


def test_a_clean_run_passes_every_check_and_undoes_its_fault(tmp_path: Path) -> None:
    report, control = run(HaltableNode(), report_dir=tmp_path)
    assert checks(report) == {"safety": True, "recovery": True, "audit": True,
                              "actions": True}, report["chaos"]
    assert control.calls == [("kill", "shard0-node1"), ("start", "shard0-node1")]
    fault = report["chaos"]["faults"][0]
    assert 0.9 <= fault["recovery_s"] <= 5 and fault["lost"] == fault["duplicated"] == 0
    kinds = [(m["kind"], m.get("action")) for m in report["markers"]]
    assert ("fault", "kill") in kinds and ("fault_end", "kill") in kinds
    # The load's own report, with the fault on its timeline.
    page = (tmp_path / "report.html").read_text()
    assert "<td>fault: kill</td>" in page and "<td>fault healed: kill</td>" in page
    assert json.loads((tmp_path / "report.json").read_text())["chaos"]["ok"] is True


def test_the_load_can_end_once_the_fault_healed_and_commits_went_on() -> None:
    """``end_after_heal_s`` (the test run's scenarios): the sending phase ends early,
    but only after a block committed that long after the heal; the checks still run."""
    report, control = run(HaltableNode(), end_after_heal_s=1.0)
    assert checks(report) == {"safety": True, "recovery": True, "audit": True,
                              "actions": True}, report["chaos"]
    assert control.calls == [("kill", "shard0-node1"), ("start", "shard0-node1")]
    fault = report["chaos"]["faults"][0]
    # Healed about 2.5 s into the 5 s load; sending ended 1 s or more after that.
    assert fault["healed_t_s"] + 0.99 <= report["duration_s"] < 4.5, report["duration_s"]
    assert report["committed"] == report["sent"] > 0


def test_a_duplicated_transaction_fails_the_audit_check() -> None:
    node = HaltableNode(duplicate={7})
    report, _ = run(node)
    assert checks(report)["audit"] is False
    assert report["chaos"]["checks"]["audit"]["duplicated"] == 1
    assert report["audit"]["duplicated_hashes"] == [node.accepted_order[7]]
    assert not report["chaos"]["ok"]


def test_a_lost_transaction_fails_the_audit_check() -> None:
    node = HaltableNode(lose={7})
    report, _ = run(node)
    assert checks(report)["audit"] is False and report["chaos"]["summary"]["lost"] == 1
    assert not report["chaos"]["ok"]


def test_commits_that_resume_too_late_fail_the_recovery_check() -> None:
    # The fault halts block production for 2.5 s; the scenario allows 1 s.
    report, _ = run(HaltableNode(), kill_s=2.5, bound_s=1.0)
    fault = report["chaos"]["faults"][0]
    assert fault["recovery_s"] >= 2.4 and not fault["recovered"]
    assert checks(report)["recovery"] is False and checks(report)["audit"] is True
    assert report["chaos"]["checks"]["recovery"]["late"] == [0]
