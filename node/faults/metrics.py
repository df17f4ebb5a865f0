"""The fault state in ``GET /metrics`` (registered only on a node with faults armed)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from node.faults.state import BYZANTINE_MODES

LINK_EFFECTS = ("partition", "loss", "delay")


class FaultMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.links = Gauge("shardnet_fault_links", "Peers with an injected link fault, by "
                           "effect (partition, loss, delay)", ["effect"], registry=registry)
        self.byzantine = Gauge("shardnet_fault_byzantine", "1 for the injected byzantine mode "
                               "in force (none: honest)", ["mode"], registry=registry)
        self.acts = Counter("shardnet_fault_byzantine_acts_total",
                            "Byzantine acts of this node, by mode", ["mode"], registry=registry)
        self.changes = Counter("shardnet_fault_changes_total", "Changes of the fault state",
                               registry=registry)

    def set(self, snapshot: dict[str, Any]) -> None:
        links = snapshot["links"].values()
        counts = {"partition": sum(1 for r in links if r["partition"]),
                  "loss": sum(1 for r in links if r["loss"] and not r["partition"]),
                  "delay": sum(1 for r in links if r["delay_ms"] and not r["partition"])}
        for effect in LINK_EFFECTS:
            self.links.labels(effect=effect).set(counts[effect])
        for mode in BYZANTINE_MODES:
            self.byzantine.labels(mode=mode).set(int(mode == snapshot["byzantine"]))
