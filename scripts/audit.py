"""``shardnet audit``: the invariant of PROTOCOL.md section 6 over a running testnet.

For every asset: balances + pool reserves over all shards + amounts of receipts
emitted but not yet applied = genesis supply. Each shard reports its totals and
channel counters (``/v1/audit``); receipts in flight (``seq`` above the
destination's cursor) are fetched from their source shard (``/v1/receipts``).
Shards are read one after another: run it at quiescence (after a load), or a
receipt applied in between can be counted twice or not at all.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from scripts.client import ApiFailure, call
from scripts.testnet.layout import TestnetDir
from sharding.genesis import load_genesis, total_supply


def gather(urls_by_shard: dict[int, str]) -> tuple[dict[int, dict[str, Any]], list[dict[str, Any]]]:
    reports = {shard: call("GET", f"{url}/v1/audit") for shard, url in urls_by_shard.items()}
    in_flight: list[dict[str, Any]] = []
    for src, report in reports.items():
        for dst_text, out_seq in report["out_seq"].items():
            dst = int(dst_text)
            applied = int(reports[dst]["in_cursor"][str(src)])
            first = applied + 1
            while first <= out_seq:
                last = min(out_seq, first + 999)
                page = call("GET", f"{urls_by_shard[src]}/v1/receipts?dst={dst}&from={first}"
                                   f"&to={last}")["receipts"]
                if not page:
                    raise click.ClickException(f"shard {src} holds no receipts {first}..{last} "
                                               f"for shard {dst}")
                in_flight.extend(page)
                first = page[-1]["seq"] + 1
    return reports, in_flight


@click.command("audit")
@click.option("--testnet", "root", type=click.Path(path_type=Path),
              default=Path("testnets/default"), show_default=True)
@click.option("--json", "as_json", is_flag=True)
def audit(root: Path, as_json: bool) -> None:
    """Check that nothing was lost: supply = balances + reserves + receipts in flight."""
    testnet = TestnetDir(root)
    manifest = testnet.load_manifest()
    genesis = load_genesis(testnet.genesis_path)
    urls = {}
    for node in manifest.nodes:
        urls.setdefault(node.shard, node.api_url)
    try:
        reports, in_flight = gather(urls)
    except (ApiFailure, OSError) as exc:
        raise click.ClickException(f"testnet not reachable: {exc}") from None
    supply = total_supply(genesis)
    rows = []
    for asset in sorted(supply):
        balances = sum(int(r["balances"].get(str(asset), 0)) for r in reports.values())
        reserves = sum(int(r["reserves"].get(str(asset), 0)) for r in reports.values())
        flying = sum(int(r["amount"]) for r in in_flight if r["asset"] == asset)
        rows.append({"asset": genesis.asset_name(asset), "balances": balances,
                     "reserves": reserves, "in_flight": flying, "supply": supply[asset],
                     "ok": balances + reserves + flying == supply[asset]})
    ok = all(row["ok"] for row in rows)
    heights = {str(s): r["height"] for s, r in sorted(reports.items())}
    if as_json:
        click.echo(json.dumps({"ok": ok, "heights": heights, "receipts_in_flight":
                               len(in_flight), "assets": rows}, indent=2))
    else:
        table = Table(title=f"audit at heights {heights}: {len(in_flight)} receipts in flight")
        for column in ("asset", "balances", "reserves", "in flight", "supply", "ok"):
            table.add_column(column, justify="left" if column == "asset" else "right")
        for row in rows:
            table.add_row(row["asset"], f"{row['balances']:,}", f"{row['reserves']:,}",
                          f"{row['in_flight']:,}", f"{row['supply']:,}",
                          "yes" if row["ok"] else "NO")
        Console(width=120).print(table)
    if not ok:
        raise SystemExit(1)
