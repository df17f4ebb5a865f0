"""Live progress with rich: elapsed, offered and achieved TPS, in flight, committed,
finalized, rejected, current p50/p99, per shard. On a terminal a live table twice a
second; elsewhere (CI, container logs) one line every few seconds."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from scripts.cli.load.stats import percentile

if TYPE_CHECKING:
    from scripts.cli.load.engine import Engine

WINDOW_S = 5  # seconds of buckets behind the "now" figures
LINE_INTERVAL_S = 5.0


def recent(engine: Engine) -> dict[str, Any]:
    """Figures over the last complete seconds."""
    now = int(engine.now())
    keys = [k for k in range(max(0, now - WINDOW_S), now) if k in engine.timeline.buckets]
    span = max(1, min(WINDOW_S, now))
    buckets = [engine.timeline.buckets[k] for k in keys]
    commit = sorted(ms for b in buckets for ms in b.commit_ms)
    finality = sorted(ms for b in buckets for ms in b.finality_ms)
    return {
        "sent_tps": sum(b.sent for b in buckets) / span,
        "committed_tps": sum(b.committed for b in buckets) / span,
        "p50": percentile(commit, 50) if commit else None,
        "p99": percentile(commit, 99) if commit else None,
        "final_p99": percentile(finality, 99) if finality else None,
    }


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


class Progress:
    def __init__(self, console: Console, *, enabled: bool = True) -> None:
        self.console = console
        self.enabled = enabled
        self.live_mode = enabled and console.is_terminal
        self._live: Live | None = None
        self._last = 0.0

    def __enter__(self) -> Progress:
        if self.live_mode:
            self._live = Live(Text("starting..."), console=self.console, auto_refresh=False,
                              transient=False)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.__exit__(None, None, None)
            self._live = None

    def update(self, engine: Engine) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        interval = 0.5 if self.live_mode else LINE_INTERVAL_S
        if now - self._last < interval and engine.state.phase != "done":
            return
        self._last = now
        if self._live is not None:
            self._live.update(self.render(engine), refresh=True)
        else:
            self.console.print(self.line(engine), highlight=False)

    def line(self, engine: Engine) -> str:
        counts, r = engine.tracker.counts(), recent(engine)
        return (f"{engine.now():6.1f}s {engine.state.phase}: offered {engine.state.offered:,}"
                f" sent {counts['sent']:,} ({r['sent_tps']:,.0f}/s) committed "
                f"{counts['committed']:,} ({r['committed_tps']:,.0f}/s) finalized "
                f"{counts['finalized']:,} rejected {counts['rejected']:,} in flight "
                f"{counts['in_flight']:,} p50 {_ms(r['p50'])} ms p99 {_ms(r['p99'])} ms")

    def render(self, engine: Engine) -> Group:
        counts, r, state = engine.tracker.counts(), recent(engine), engine.state
        offered_tps = 0.0
        schedule = engine.config.schedule
        if schedule is not None and state.phase == "sending":
            offered_tps = schedule.rate_at(engine.now())
        head = Table.grid(padding=(0, 2))
        for _ in range(6):
            head.add_column(justify="right")
        head.add_row("elapsed", f"{engine.now():.1f} s", "phase", state.phase,
                     "offered", f"{offered_tps:,.0f}/s" if schedule else
                     f"{engine.config.concurrency} users")
        head.add_row("sent", f"{counts['sent']:,} ({r['sent_tps']:,.0f}/s)", "committed",
                     f"{counts['committed']:,} ({r['committed_tps']:,.0f}/s)", "in flight",
                     f"{counts['in_flight']:,}")
        head.add_row("finalized", f"{counts['finalized']:,}", "rejected",
                     f"{counts['rejected']:,}", "errors", f"{sum(state.errors.values()):,}")
        head.add_row("commit p50", f"{_ms(r['p50'])} ms", "commit p99", f"{_ms(r['p99'])} ms",
                     "finality p99", f"{_ms(r['final_p99'])} ms")
        shards = Table(box=None, padding=(0, 1))
        for column in ("shard", "nodes up", "height", "mempool", "sent", "committed",
                       "view changes"):
            shards.add_column(column, justify="right")
        for shard in range(engine.network.num_shards):
            nodes = [engine.nodes[n.name] for n in engine.network.shard_nodes(shard)]
            statuses = [n.status for n in nodes if n.status is not None]
            mine = [rec for rec in engine.tracker.records.values()
                    if rec.shard == shard and rec.submitted_s is not None]
            shards.add_row(
                str(shard), f"{sum(n.up is True for n in nodes)}/{len(nodes)}",
                str(max((int(s["height"]) for s in statuses), default="-")),
                str(max((int(s["mempool"]) for s in statuses), default="-")),
                f"{len(mine):,}", f"{sum(bool(rec.commits) for rec in mine):,}",
                str(sum(1 for m in state.markers if m["kind"] == "view_change"
                        and m["node"] in {n.target.name for n in nodes})))
        return Group(head, shards)
