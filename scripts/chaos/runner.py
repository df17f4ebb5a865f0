"""Run a scenario: load, the planned faults, heal, quiescence, audit, checks.

One event loop: the load generator's ``Engine`` (``scripts/cli/load``) sends the
scenario's ``[load]`` profile and follows every shard's blocks; beside it the chaos
driver applies each step of the plan at its time (node control and the fault
endpoint are blocking calls: in threads), undoes it after its ``duration``, and
heals whatever is left when the sending phase ends (which ``end_after_heal_s`` may
bring forward: once every fault healed and its shards committed that long after). A
node started or restarted counts as back (healed) once it answers ``/v1/status`` again
(bounded, ``up_s``), so a staggered restart never takes the next node down before the
last one is up. Each fault is a marker on the load's timeline (``kind`` ``fault`` /
``fault_end``). The engine then drains, waits for quiescence and runs the conservation audit
(``end_audit``); exactly-once comes from its tracker. Then the checks:

- ``safety``: every honest node (not a byzantine target) has the same block hash at
  every height it committed (``GET /v1/blocks/{h}`` on every node, and the blocks the
  load saw), after a bounded wait for every node to reach its shard's height;
- ``recovery``: after each fault, the shard's commits resumed within the action's
  ``recovery_bound_s`` (``recovery_s``: the longest time without a commit on the
  affected shards from the fault on, measured on the blocks' header times);
- ``audit``: quiescence, conservation, and no transaction lost or duplicated;
- ``actions``: every action was carried out.

Per fault: ``recovery_s``, the view changes (the shard's view before it and at the
next fault or the end), the TPS dip (the lowest committed tx/s second of its window
against the seconds before the first fault), and the lost / duplicated transactions
submitted in its window.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import time
import tomllib
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from scripts.chaos import faults as fault_api
from scripts.chaos.faults import FaultClient, FaultsError
from scripts.chaos.manifest import Scenario
from scripts.chaos.schedule import ScheduleError, Step, Topology, plan, resolve_live
from scripts.cli.client import ApiFailure, call
from scripts.cli.load import cli as load_cli
from scripts.cli.load.end_audit import conservation_audit
from scripts.cli.load.engine import Engine, RunConfig
from scripts.cli.load.report import add_audit, build_report
from scripts.cli.load.signer import Signer
from scripts.cli.load.targets import Network
from scripts.cli.testnet.control import ControlError, NodeControl

STATUS_TIMEOUT_S = 2.0
CATCHUP_S = 60.0
UP_S = 60.0
AUDIT_WAIT_S = 60.0
BLOCK_FETCH_WORKERS = 8
BASELINE_SKIP_S = 1.0  # the load's first second is its ramp, not the baseline


class ChaosError(click.ClickException):
    """The scenario cannot run on this testnet: one line saying why."""


class ChaosEngine(Engine):
    """The load engine, also keeping each committed block's hash and header time."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.blocks: dict[int, dict[int, tuple[str, int]]] = {}
        self.wall_offset = 0.0  # wall clock (s) = engine time + wall_offset

    def _on_block(self, event: dict[str, Any]) -> None:
        if "hash" in event and "time_ms" in event:
            self.blocks.setdefault(int(event["shard"]), {})[int(event["height"])] = (
                str(event["hash"]), int(event["time_ms"]))
        super()._on_block(event)

    def mark(self, kind: str, node: str, **extra: Any) -> None:
        self._mark(kind, node, **extra)


@dataclass
class Fault:
    """One application of a step to a group of nodes (each node, when staggered)."""

    step: Step
    nodes: list[str]
    t_s: float  # engine time when applied
    wall_s: float
    views_before: dict[int, int]
    healed_t_s: float | None = None
    healed_wall_s: float | None = None
    errors: list[str] = field(default_factory=list)
    undo: Callable[[], list[str]] | None = None

    @property
    def shards(self) -> list[int]:
        return sorted({int(n.split("-")[0].removeprefix("shard")) for n in self.nodes})


@dataclass
class RunOptions:
    seed: int = 1
    catchup_s: float = CATCHUP_S
    audit_wait_s: float = AUDIT_WAIT_S
    up_s: float = UP_S  # a started node answers within this
    on_event: Callable[[str], None] | None = None
    # None: the load sends for its whole duration. A number: the sending phase ends
    # (bounded by the duration) once every fault has healed and each shard it touched
    # has committed a block this many seconds or more after its heal.
    end_after_heal_s: float | None = None


class Chaos:
    """The faults of one run against ``control`` (and ``faults``, the endpoint client)."""

    def __init__(self, scenario: Scenario, control: NodeControl, faults: FaultClient | None,
                 network: Network, topology: Topology, options: RunOptions,
                 data_dir: Callable[[str], Path | None] | None = None,
                 wipe_container: Callable[[str], None] | None = None) -> None:
        self.scenario = scenario
        self.control = control
        self.faults = faults
        self.network = network
        self.topology = topology
        self.options = options
        self.data_dir = data_dir
        self.wipe_container = wipe_container
        self.steps = plan(scenario, options.seed, topology)
        self.applied: list[Fault] = []
        self.byzantine: set[str] = set()
        self.urls = {n.name: n.url for n in network.nodes}
        self.errors: list[str] = []
        self._undo_tasks: set[asyncio.Task[None]] = set()

    # -- helpers ---------------------------------------------------------------------

    def say(self, text: str) -> None:
        if self.options.on_event is not None:
            self.options.on_event(text)

    def statuses(self) -> dict[str, dict[str, Any] | None]:
        def one(name: str) -> dict[str, Any] | None:
            try:
                status: dict[str, Any] = call("GET", f"{self.urls[name]}/v1/status",
                                              timeout_s=STATUS_TIMEOUT_S)
            except (ApiFailure, OSError, ValueError):
                return None
            return status

        names = self.topology.names
        with ThreadPoolExecutor(max_workers=min(16, len(names))) as pool:
            return dict(zip(names, pool.map(one, names), strict=True))

    @staticmethod
    def views(statuses: Mapping[str, Mapping[str, Any] | None], topology: Topology
              ) -> dict[int, int]:
        out = {}
        for shard, names in enumerate(topology.shards):
            seen = [int(s.get("view", 0)) for n in names if (s := statuses.get(n)) is not None]
            if seen:
                out[shard] = max(seen)
        return out

    def _each(self, nodes: Sequence[str], verb: Callable[[str], Any]) -> list[str]:
        """``verb`` on every node at once (threads); the errors, one line each."""
        def one(name: str) -> str | None:
            try:
                verb(name)
            except (ControlError, FaultsError, OSError) as exc:
                return f"{name}: {getattr(exc, 'message', None) or exc}"
            return None

        if not nodes:
            return []
        with ThreadPoolExecutor(max_workers=len(nodes)) as pool:
            return [e for e in pool.map(one, nodes) if e is not None]

    def _up(self, name: str) -> None:
        """Wait (bounded) until ``name`` answers ``/v1/status`` again: a node started
        or restarted is back (and its fault healed) only when it serves."""
        deadline = time.monotonic() + self.options.up_s
        while True:
            try:
                call("GET", f"{self.urls[name]}/v1/status", timeout_s=STATUS_TIMEOUT_S)
                return
            except (ApiFailure, OSError, ValueError):
                if time.monotonic() > deadline:
                    raise ControlError(f"{name} did not answer /v1/status within "
                                       f"{self.options.up_s:.0f} s of its start") from None
                time.sleep(0.1)

    def _start(self, name: str) -> None:
        self.control.start(name)
        self._up(name)

    def _restart(self, name: str) -> None:
        self.control.restart(name)
        self._up(name)

    def _endpoint(self) -> FaultClient:
        if self.faults is None:
            raise ChaosError("this scenario needs the nodes' fault endpoint: make the testnet "
                             "with `shardnet testnet init --faults`")
        return self.faults

    # -- actions ---------------------------------------------------------------------

    def _wipe(self, name: str) -> None:
        self.control.stop(name)
        if self.wipe_container is not None:
            self.wipe_container(name)
            return
        folder = self.data_dir(name) if self.data_dir is not None else None
        if folder is None:
            raise ControlError(f"{name}: no data folder known to wipe")
        shutil.rmtree(folder, ignore_errors=True)

    def apply(self, step: Step, nodes: list[str]) -> tuple[list[str], Callable[[], list[str]]
                                                          | None]:
        """Carry out ``step`` on ``nodes`` (blocking); the errors and how to undo it."""
        a = step.action
        c = self.control
        if a.action == "kill":
            return self._each(nodes, c.kill), lambda: self._each(nodes, self._start)
        if a.action == "stop":
            return self._each(nodes, c.stop), lambda: self._each(nodes, self._start)
        if a.action == "restart":
            return self._each(nodes, self._restart), None
        if a.action == "pause":
            return self._each(nodes, c.pause), lambda: self._each(nodes, c.resume)
        if a.action == "wipe":
            errors = self._each(nodes, self._wipe)
            if a.duration_s is None:
                return errors + self._each(nodes, self._start), None
            return errors, lambda: self._each(nodes, self._start)
        client = self._endpoint()
        others = [n for n in self.topology.names if n not in nodes]
        if a.action in ("partition", "degrade"):
            rule = ({"partition": True} if a.action == "partition" else
                    {"delay_ms": a.delay_ms, "loss": a.loss})

            def links(on: bool) -> list[str]:
                kwargs: dict[str, Any] = rule if on else {}
                return (self._each(nodes, lambda n: fault_api.set_links(client, n, others,
                                                                        **kwargs))
                        + self._each(others, lambda n: fault_api.set_links(client, n, nodes,
                                                                           **kwargs)))

            return links(True), lambda: links(False)
        mode = a.mode or "none"
        self.byzantine.update(nodes)
        return (self._each(nodes, lambda n: fault_api.set_byzantine(client, n, mode)),
                lambda: self._each(nodes, lambda n: fault_api.set_byzantine(client, n, "none")))

    # -- the driver ------------------------------------------------------------------

    async def drive(self, engine: ChaosEngine) -> None:
        """Apply the plan on the engine's clock; heal when the sending phase ends."""
        while engine.state.phase in ("starting",) or not engine.state.started:
            await asyncio.sleep(0.05)
        engine.wall_offset = time.time() - engine.now()
        try:
            for step in self.steps:
                groups = self._groups(step)
                for k, group in enumerate(groups):
                    due = step.at_s + k * step.action.stagger_s
                    while engine.state.phase == "sending" and engine.now() < due:
                        await asyncio.sleep(min(0.05, max(0.0, due - engine.now())))
                    if engine.state.phase != "sending":
                        self.errors.append(f"action {step.action.index} ({step.action.action})"
                                           f" not applied: the load ended first")
                        break
                    await self._apply_one(engine, step, group)
            while engine.state.phase == "sending":
                if self.recovered(engine):
                    engine.end_sending()
                await asyncio.sleep(0.05)
        finally:
            await self.heal(engine)

    def recovered(self, engine: ChaosEngine) -> bool:
        """With ``end_after_heal_s`` set: every fault healed, and every shard it touched
        committed a block (header time) at least that long after the heal."""
        tail_s = self.options.end_after_heal_s
        if tail_s is None or not self.applied:
            return False
        for fault in self.applied:
            if fault.healed_wall_s is None:
                return False
            due_ms = 1000 * (fault.healed_wall_s + tail_s)
            for shard in fault.shards:
                if not any(t >= due_ms for _, t in engine.blocks.get(shard, {}).values()):
                    return False
        return True

    def _groups(self, step: Step) -> list[list[str] | None]:
        """The node groups of a step, in order: one group, or one node each when staggered
        (None: resolved when applied)."""
        if step.action.stagger_s and not step.live:
            return [[n] for n in step.nodes]
        return [None]

    async def _apply_one(self, engine: ChaosEngine, step: Step, group: list[str] | None
                         ) -> None:
        statuses = await asyncio.to_thread(self.statuses)
        nodes = list(group) if group is not None else list(step.nodes)
        errors: list[str] = []
        for selector in step.live if group is None else ():
            try:
                nodes += [n for n in resolve_live(self.topology, selector, statuses)
                          if n not in nodes]
            except ScheduleError as exc:
                errors.append(str(exc))
        fault = Fault(step, nodes, engine.now(), time.time(),
                      self.views(statuses, self.topology))
        self.applied.append(fault)
        a = step.action
        for name in nodes:
            engine.mark("fault", name, action=a.action, fault=len(self.applied) - 1,
                        **({"mode": a.mode} if a.mode else {}))
        self.say(f"{engine.now():6.1f}s  {a.action}{f' ({a.mode})' if a.mode else ''} "
                 f"{', '.join(nodes) or '(no node)'}")
        applied_errors, undo = await asyncio.to_thread(self.apply, step, nodes)
        fault.errors = errors + applied_errors
        for error in fault.errors:
            self.say(f"          error: {error}")
        if undo is None:
            fault.healed_t_s, fault.healed_wall_s = engine.now(), time.time()
            return
        fault.undo = undo
        if a.duration_s is not None:
            task = asyncio.ensure_future(self._undo_after(engine, fault, a.duration_s))
            self._undo_tasks.add(task)
            task.add_done_callback(self._undo_tasks.discard)

    async def _undo_after(self, engine: ChaosEngine, fault: Fault, delay_s: float) -> None:
        end = fault.t_s + delay_s
        while engine.now() < end and engine.state.phase == "sending":
            await asyncio.sleep(min(0.05, max(0.0, end - engine.now())))
        await self._undo(engine, fault)

    async def _undo(self, engine: ChaosEngine, fault: Fault) -> None:
        undo, fault.undo = fault.undo, None
        if undo is None:
            return
        errors = await asyncio.to_thread(undo)
        fault.errors += errors
        fault.healed_t_s, fault.healed_wall_s = engine.now(), time.time()
        for name in fault.nodes:
            engine.mark("fault_end", name, action=fault.step.action.action,
                        fault=self.applied.index(fault))
        self.say(f"{engine.now():6.1f}s  healed {fault.step.action.action} "
                 f"{', '.join(fault.nodes)}" + "".join(f"\n          error: {e}"
                                                        for e in errors))

    async def heal(self, engine: ChaosEngine) -> None:
        """Undo every fault still in force; clear every node's fault endpoint."""
        for task in list(self._undo_tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for fault in self.applied:
            await self._undo(engine, fault)
        if self.faults is not None and self.scenario.needs_fault_endpoint:
            client = self.faults
            errors = await asyncio.to_thread(
                self._each, self.topology.names, lambda n: fault_api.heal(client, n))
            self.errors += [f"heal: {e}" for e in errors]

    # -- after the run ---------------------------------------------------------------

    def byzantine_acts(self) -> dict[str, dict[str, float]]:
        """What each byzantine target did, by mode (``shardnet_fault_byzantine_acts_total``
        of its ``/metrics``): a mode that never acted exercised nothing."""
        from prometheus_client.parser import text_string_to_metric_families

        out: dict[str, dict[str, float]] = {}
        for name in sorted(self.byzantine):
            try:
                with urllib.request.urlopen(f"{self.urls[name]}/metrics",
                                            timeout=STATUS_TIMEOUT_S) as answer:
                    text = answer.read().decode()
            except (OSError, ValueError):
                continue
            acts = out.setdefault(name, {})
            for family in text_string_to_metric_families(text):
                for sample in family.samples:
                    if sample.name == "shardnet_fault_byzantine_acts_total":
                        acts[sample.labels.get("mode", "?")] = sample.value
        return out

    def wait_caught_up(self) -> tuple[bool, dict[int, dict[str, int]]]:
        """Wait (bounded) until every node of each shard is at the same height."""
        deadline = time.monotonic() + self.options.catchup_s
        while True:
            statuses = self.statuses()
            heights = {s: {n: int(st["height"]) if (st := statuses.get(n)) else -1
                           for n in names} for s, names in enumerate(self.topology.shards)}
            if all(min(h.values()) >= 0 and len(set(h.values())) == 1
                   for h in heights.values()):
                return True, heights
            if time.monotonic() > deadline:
                return False, heights
            time.sleep(0.25)

    def compare_blocks(self, heights: Mapping[int, Mapping[str, int]],
                       seen: Mapping[int, Mapping[int, tuple[str, int]]]) -> dict[str, Any]:
        """Every honest node's block hash at every height it has, and the load's view."""
        honest = [n for n in self.topology.names if n not in self.byzantine]
        jobs = [(n, h) for n in honest
                for h in range(1, max(0, heights[self.topology.shard_of(n)].get(n, 0)) + 1)]

        def fetch(job: tuple[str, int]) -> str | None:
            name, height = job
            try:
                return str(call("GET", f"{self.urls[name]}/v1/blocks/{height}",
                                timeout_s=STATUS_TIMEOUT_S)["hash"])
            except (ApiFailure, OSError, ValueError, KeyError):
                return None

        with ThreadPoolExecutor(max_workers=BLOCK_FETCH_WORKERS) as pool:
            hashes = list(pool.map(fetch, jobs))
        return compare_hashes(
            self.topology, {job: digest for job, digest in zip(jobs, hashes, strict=True)},
            {shard: {h: v[0] for h, v in blocks.items()} for shard, blocks in seen.items()})


def compare_hashes(topology: Topology, by_node: Mapping[tuple[str, int], str | None],
                   seen: Mapping[int, Mapping[int, str]]) -> dict[str, Any]:
    """The safety check: at each (shard, height), one hash among every honest node's
    answer and the load's. Pure: the mutation tests feed it forks."""
    per: dict[tuple[int, int], dict[str, str]] = {}
    missing = 0
    for (name, height), digest in by_node.items():
        if digest is None:
            missing += 1
            continue
        per.setdefault((topology.shard_of(name), height), {})[name] = digest
    for shard, blocks in seen.items():
        for height, digest in blocks.items():
            per.setdefault((shard, height), {})["load"] = digest
    forks = [{"shard": shard, "height": height, "hashes": answers}
             for (shard, height), answers in sorted(per.items())
             if len(set(answers.values())) > 1]
    return {"ok": not forks and not missing, "heights_compared": len(per),
            "unreadable": missing, "forks": forks[:10], "forks_total": len(forks)}


# ---------------------------------------------------------------------------
# Per-fault measures (pure)


def recovery_s(commit_walls: Sequence[float], t0: float, healed: float, window_end: float
               ) -> float | None:
    """The longest time without a commit from ``t0`` on: over consecutive commits
    (a, b) with b > t0 and a < ``window_end``, the largest b - max(a, t0). None when no
    commit came after the heal (after ``t0`` for a fault healed only when the load
    ended: there was nothing left to commit after it)."""
    commits = sorted(commit_walls)
    must_follow = max(t0, healed) if healed < window_end else t0
    if not any(c > must_follow for c in commits):
        return None
    best = 0.0
    before = [c for c in commits if c <= t0]
    previous = before[-1] if before else t0
    for c in commits:
        if c <= t0:
            continue
        if previous >= window_end:
            break
        best = max(best, c - max(previous, t0))
        previous = c
    return round(best, 3)


def resumed_after(commit_walls: Sequence[float], healed: float) -> float | None:
    """Seconds from the heal to the first commit after it (None: none came)."""
    after = [c for c in commit_walls if c > healed]
    return round(min(after) - healed, 3) if after else None


def tps_dip(rows: Sequence[Mapping[str, Any]], shards: Sequence[int], baseline_end: float,
            start: float, end: float) -> dict[str, float | None]:
    """Committed tx/s of ``shards`` per second: the mean before the first fault, the
    lowest second within [start, end), and the dip in percent."""
    def tps(row: Mapping[str, Any]) -> float:
        return sum(float(row.get(f"shard{s}_committed_tps") or 0) for s in shards)

    before = [tps(r) for r in rows if BASELINE_SKIP_S <= float(r["t_s"]) < baseline_end - 1]
    during = [tps(r) for r in rows if start - 1 < float(r["t_s"]) < end]
    base = sum(before) / len(before) if before else None
    low = min(during) if during else None
    dip = None if base is None or low is None or base <= 0 else \
        round(max(0.0, 100.0 * (1 - low / base)), 1)
    return {"tps_before": None if base is None else round(base, 1), "tps_min": low,
            "dip_pct": dip}


def _load_options(scenario: Scenario, network: Network, root: Path | None, seed: int
                  ) -> dict[str, Any]:
    """The load command's options from the scenario's ``[load]`` table, as
    ``shardnet load --profile`` reads it; the seed and quiet from the chaos run."""
    ctx = load_cli.load.make_context("load", ["--quiet", "--rng-seed", str(seed)])
    params = {p.name: p for p in ctx.command.params if p.name}
    aliases = {"threshold": "thresholds", "url": "urls", "testnet": "root",
               "json": "as_json", "report": "report_dir", "audit": "run_audit"}
    for key, value in scenario.load.items():
        name = aliases.get(key.replace("-", "_"), key.replace("-", "_"))
        param = params.get(name)
        if param is None or name in ("profile", "root", "urls", "rng_seed", "quiet",
                                     "as_json", "report_dir", "find_max"):
            raise ChaosError(f"[load] {key}: not a load option a scenario may set")
        try:
            if param.multiple and not isinstance(value, list):
                value = [value]
            ctx.params[name] = param.type_cast_value(ctx, value)
        except click.BadParameter as exc:
            raise ChaosError(f"[load] {key}: {exc.message}") from None
    opts = dict(ctx.params)
    opts["root"] = root
    return opts


def run_scenario(scenario: Scenario, control: NodeControl, network: Network,
                 faults: FaultClient | None, *, root: Path | None, options: RunOptions,
                 wipe_container: Callable[[str], None] | None = None
                 ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Run ``scenario``; the load report with its ``chaos`` part (plan, faults, checks),
    and the load's timeline rows (for ``timeseries.csv`` and the charts)."""
    topology = Topology.from_names([n.name for n in network.nodes])
    if len(topology.shards) < scenario.shards:
        raise ChaosError(f"scenario {scenario.name} needs {scenario.shards} shard(s); the "
                         f"testnet has {len(topology.shards)}")
    if scenario.needs_fault_endpoint and faults is None:
        raise ChaosError(f"scenario {scenario.name} needs the nodes' fault endpoint: make "
                         "the testnet with `shardnet testnet init --faults`")

    def data_dir(name: str) -> Path | None:
        if root is None:
            return None
        home = root / "nodes" / name
        try:
            config = tomllib.loads((home / "config.toml").read_text())
        except (OSError, tomllib.TOMLDecodeError):
            return home / "data"
        relative = Path(str(config.get("node", {}).get("data_dir", "data")))
        return relative if relative.is_absolute() else home / relative

    try:
        chaos = Chaos(scenario, control, faults, network, topology, options,
                      data_dir=data_dir, wipe_container=wipe_container)
    except ScheduleError as exc:
        raise ChaosError(f"scenario {scenario.name}: {exc}") from None
    opts = _load_options(scenario, network, root, options.seed)
    _, mix, hot, schedule = load_cli._parse_options(opts)
    duration = opts["duration"] or scenario.load_duration_s
    seed, universe, workload = load_cli._workload(network, opts, mix, hot)
    config = RunConfig(schedule=schedule, concurrency=0, poisson=opts["poisson"],
                       duration_s=duration, max_txs=opts["max_txs"], drain_s=opts["drain"],
                       batch_txs_max=opts["batch"], tick_s=max(0.001, opts["batch_interval"]),
                       rng_seed=options.seed)
    settings = load_cli._settings(opts, schedule, duration, len(universe.senders), seed)
    signer = Signer(network.chain_id, seed, [s.index for s in universe.senders],
                    opts["sign_workers"])
    engine = ChaosEngine(network, universe, workload, signer, config)
    audit_result: dict[str, Any] = {}

    drivers: list[asyncio.Future[None]] = []

    async def settle() -> None:
        # The heal (nodes started and answering, fault endpoints cleared) comes before
        # the audit: the driver ends once it has healed.
        await asyncio.gather(*drivers, return_exceptions=True)
        audit_result["value"] = await asyncio.to_thread(
            conservation_audit, network, root, max(options.audit_wait_s, opts["audit_wait"]))

    async def main() -> None:
        driver = asyncio.ensure_future(chaos.drive(engine))
        drivers.append(driver)
        try:
            await engine.run(settle)
            await asyncio.gather(driver, return_exceptions=True)
        finally:
            if not driver.done():  # the load failed: stop applying faults
                driver.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await driver
            await chaos.heal(engine)

    cpu_started = time.process_time()
    try:
        asyncio.run(main())
    finally:
        signer.close()
    report = build_report(engine, settings=settings, cpu_s=time.process_time() - cpu_started)
    conservation, quiescence, problem = audit_result.get("value", (None, None, "audit not run"))
    add_audit(report, engine, conservation, quiescence, problem)
    caught_up, heights = chaos.wait_caught_up()
    safety = chaos.compare_blocks(heights, engine.blocks)
    report["chaos"] = summarize(chaos, engine, report, caught_up, heights, safety)
    return report, engine.timeline.rows(network.num_shards)


def summarize(chaos: Chaos, engine: ChaosEngine, report: dict[str, Any], caught_up: bool,
              heights: Mapping[int, Mapping[str, int]], safety: dict[str, Any]
              ) -> dict[str, Any]:
    """The chaos part of the report: the plan, each fault's measures, the checks."""
    rows = engine.timeline.rows(engine.network.num_shards)
    final_views = Chaos.views(chaos.statuses(), chaos.topology)
    send_end = engine.state.send_done_s or engine.now()
    commit_walls = {shard: [t / 1000 for _, t in blocks.values()]
                    for shard, blocks in engine.blocks.items()}
    once = engine.tracker.exactly_once()
    submitted = {h: engine.tracker.records[h].submitted_s for h in
                 [*once["lost"], *once["duplicated"]]}
    first_t = chaos.applied[0].t_s if chaos.applied else send_end
    acts = chaos.byzantine_acts()
    faults_out: list[dict[str, Any]] = []
    for k, fault in enumerate(chaos.applied):
        later = chaos.applied[k + 1] if k + 1 < len(chaos.applied) else None
        end_t = max(fault.healed_t_s or fault.t_s, later.t_s if later else send_end)
        end_t = min(end_t, send_end)
        healed_wall = fault.healed_wall_s or fault.wall_s
        window_end_wall = end_t + engine.wall_offset
        shards = fault.shards
        recoveries = [recovery_s(commit_walls.get(s, []), fault.wall_s, healed_wall,
                                 max(window_end_wall, healed_wall)) for s in shards]
        recovery = None if not recoveries or None in recoveries else \
            max(r for r in recoveries if r is not None)
        views_after = later.views_before if later else final_views
        view_changes = sum(max(0, views_after.get(s, 0) - fault.views_before.get(s, 0))
                           for s in shards)
        in_window = [h for h, t in submitted.items() if t is not None and
                     fault.t_s <= t < (later.t_s if later else float("inf"))]
        bound = fault.step.action.recovery_bound_s
        faults_out.append({
            "fault": k, "action": fault.step.action.action, "mode": fault.step.action.mode,
            "nodes": fault.nodes, "shards": shards, "t_s": round(fault.t_s, 2),
            "healed_t_s": None if fault.healed_t_s is None else round(fault.healed_t_s, 2),
            "recovery_s": recovery, "recovery_bound_s": bound,
            "after_heal_s": max((r for s in shards if (r := resumed_after(
                commit_walls.get(s, []), healed_wall)) is not None), default=None),
            "recovered": recovery is not None and recovery <= bound,
            "view_changes": view_changes,
            **tps_dip(rows, shards, first_t, fault.t_s, end_t),
            "lost": sum(1 for h in in_window if h in once["lost"]),
            "duplicated": sum(1 for h in in_window if h in once["duplicated"]),
            "errors": fault.errors,
            **({"byzantine_acts": {n: acts.get(n, {}).get(fault.step.action.mode or "", 0)
                                   for n in fault.nodes}}
               if fault.step.action.action == "byzantine" else {}),
        })
    audit = report.get("audit") or {}
    checks = {
        "safety": {"ok": safety["ok"] and caught_up, "caught_up": caught_up,
                   "heights": {str(s): h for s, h in heights.items()}, **safety},
        "recovery": {"ok": all(f["recovered"] for f in faults_out),
                     "late": [f["fault"] for f in faults_out if not f["recovered"]]},
        "audit": {"ok": bool(audit.get("ok")), "lost": audit.get("lost"),
                  "duplicated": audit.get("duplicated"),
                  "problems": audit.get("problems", [])},
        "actions": {"ok": not chaos.errors and not any(f["errors"] for f in faults_out)
                    and len(chaos.applied) > 0, "errors": chaos.errors},
    }
    scenario = chaos.scenario
    return {
        "scenario": scenario.name, "description": scenario.description,
        "rng_seed": chaos.options.seed, "plan": [s.describe() for s in chaos.steps],
        "byzantine": sorted(chaos.byzantine), "faults": faults_out, "checks": checks,
        "ok": all(c["ok"] for c in checks.values()),
        "summary": {
            "recovery_s_max": max((f["recovery_s"] or 0 for f in faults_out), default=None),
            "view_changes": sum(f["view_changes"] for f in faults_out),
            "dip_pct_max": max((f["dip_pct"] for f in faults_out if f["dip_pct"] is not None),
                               default=None),
            "lost": audit.get("lost"), "duplicated": audit.get("duplicated"),
            "audit_ok": bool(audit.get("ok")),
        },
    }


def compose_wiper(container_of: Callable[[str], str | None]) -> Callable[[str], None]:
    """Wipe a compose node's data: its container is stopped, so a throwaway container
    with its volumes deletes the node's data folder."""
    def wipe(name: str) -> None:
        container = container_of(name)
        if container is None:
            raise ControlError(f"{name}: no container to wipe")
        done = subprocess.run(
            ["docker", "run", "--rm", "--volumes-from", container, "--entrypoint", "sh",
             _image_of(container), "-c", f"rm -rf /data/testnet/nodes/{name}/data"],
            capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            raise ControlError(f"{name}: wipe failed: {done.stderr.strip()[-200:]}")
    return wipe


def _image_of(container: str) -> str:
    done = subprocess.run(["docker", "inspect", "-f", "{{.Config.Image}}", container],
                          capture_output=True, text=True, timeout=60, check=False)
    return done.stdout.strip() or "shardnet:latest"
