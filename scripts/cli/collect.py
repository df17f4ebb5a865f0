"""``shardnet collect``: one archive of a testnet for a bug report (issue 17).

A ``.tar.gz`` with, per node, the end of its log (at most ``--log-mib`` MiB), its
``config.toml``, and snapshots of ``/metrics``, ``/v1/status`` and ``/v1/health`` (a node
that does not answer is noted in ``summary.json``, not fatal); the testnet's genesis and
manifest; and the last load report (``--load-report``, else the newest ``report.json`` under the
testnet folder: ``shardnet load --report DIR`` writes one). A compose testnet
(``--compose``) gives its compose file and ``docker logs`` instead.

Secrets stay out: no ``node_key.json`` (validator keys), no ``faults.token``, and the
validator-key salt of the manifest and the compose file is replaced by ``<redacted>``.
"""

from __future__ import annotations

import io
import json
import re
import tarfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import click

from scripts.cli.exits import UsageFailure
from scripts.cli.params import AliasedOption, json_option, out_option, testnet_option

SNAPSHOT_TIMEOUT_S = 3.0
LOG_MIB_DEFAULT = 8
REDACTED = "<redacted>"
REPORT_FILE = "report.json"
REPORT_SEARCH_MAX = 10_000  # paths looked at under the testnet folder for report.json
_SALT_LINE = re.compile(r'^(\s*SHARDNET_SALT:\s*).*$', re.M)


class Archive:
    """Members added from bytes, under one top folder; what went in, listed."""

    def __init__(self, path: Path, top: str) -> None:
        self.path = path
        self.top = top
        self.members: list[str] = []
        self._tar = tarfile.open(path, "w:gz")  # noqa: SIM115 (closed by close())

    def add(self, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(f"{self.top}/{name}")
        info.size = len(data)
        info.mtime = int(time.time())
        info.mode = 0o600
        self._tar.addfile(info, io.BytesIO(data))
        self.members.append(name)

    def close(self) -> None:
        self._tar.close()


def tail_bytes(path: Path, limit: int) -> bytes:
    """The last ``limit`` bytes of ``path``, from the start of a line."""
    with path.open("rb") as file:
        size = file.seek(0, 2)
        if size <= limit:
            file.seek(0)
            return file.read()
        file.seek(size - limit)
        data = file.read()
    cut = data.find(b"\n")
    return data[cut + 1:] if cut >= 0 else data


def redact_manifest(data: bytes) -> bytes:
    doc = json.loads(data)
    if doc.get("salt"):
        doc["salt"] = REDACTED
    return json.dumps(doc, indent=2).encode()


def redact_compose(text: str) -> str:
    return _SALT_LINE.sub(lambda m: f'{m.group(1)}"{REDACTED}"', text)


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=SNAPSHOT_TIMEOUT_S) as response:
        body: bytes = response.read()
        return body


def snapshot(archive: Archive, name: str, api_url: str | None) -> dict[str, Any]:
    """``/metrics``, ``/v1/status`` and ``/v1/health`` of one node; what failed, noted."""
    noted: dict[str, Any] = {"node": name, "api_url": api_url}
    if api_url is None:
        noted["error"] = "no API address (container not running?)"
        return noted
    for route, member in (("/metrics", "metrics.txt"), ("/v1/status", "status.json"),
                          ("/v1/health", "health.json")):
        try:
            body = _get(api_url.rstrip("/") + route)
        except urllib.error.HTTPError as exc:  # /v1/health answers 503 when not ready
            body = exc.read()
        except (OSError, ValueError) as exc:
            noted["error"] = f"{route}: {exc}"
            break
        archive.add(f"nodes/{name}/{member}", body)
    return noted


def newest_report(root: Path) -> Path | None:
    found: list[Path] = []
    for k, path in enumerate(root.rglob(REPORT_FILE)):
        if k >= REPORT_SEARCH_MAX:
            break
        found.append(path)
    return max(found, key=lambda p: p.stat().st_mtime, default=None)


def collect_local(archive: Archive, root: Path, log_bytes: int) -> list[dict[str, Any]]:
    from scripts.cli.testnet.layout import TestnetDir

    testnet = TestnetDir(root)
    try:
        manifest = testnet.load_manifest()
    except (OSError, ValueError) as exc:
        raise UsageFailure(f"{root}: not a testnet folder ({exc})") from None
    archive.add("testnet.json", redact_manifest(testnet.manifest_path.read_bytes()))
    if testnet.genesis_path.is_file():
        archive.add("genesis.json", testnet.genesis_path.read_bytes())
    notes = []
    for node in manifest.nodes:
        config = testnet.home(node.name) / "config.toml"
        if config.is_file():
            archive.add(f"nodes/{node.name}/config.toml", config.read_bytes())
        log = testnet.log(node.name)
        if log.is_file():
            archive.add(f"nodes/{node.name}/node.log", tail_bytes(log, log_bytes))
        notes.append(snapshot(archive, node.name, node.api_url))
    return notes


def collect_compose(archive: Archive, path: Path, log_bytes: int) -> list[dict[str, Any]]:
    from scripts.cli.testnet.control import ComposeNodes, ControlError

    try:
        nodes = ComposeNodes(path)
        names = nodes.names()
    except ControlError as exc:
        raise UsageFailure(str(exc)) from None
    archive.add("docker-compose.yml", redact_compose(nodes.file.read_text()).encode())
    notes = []
    for name in names:
        try:
            container = nodes.container(name)
            api_url = nodes.api_url(name)
            if container is not None:
                # Lines, not bytes: about 1 KiB a line of JSON logs.
                logs = nodes._docker("logs", "--tail", str(max(1, log_bytes // 1024)),
                                     container)
                archive.add(f"nodes/{name}/node.log", logs.encode()[-log_bytes:])
        except ControlError as exc:
            notes.append({"node": name, "api_url": None, "error": str(exc)})
            continue
        notes.append(snapshot(archive, name, api_url))
    return notes


@click.command("collect")
@testnet_option(default=None, help="A local testnet folder [default: testnets/default].")
@click.option("--compose", "compose", type=click.Path(path_type=Path), default=None,
              help="A compose project instead: its docker-compose.yml or the folder of it.")
@click.option("--load-report", "report", cls=AliasedOption, hidden_aliases=("--report",),
              type=click.Path(exists=True, path_type=Path), metavar="PATH",
              default=None, help="The load report to include (report.json or the folder "
              "`shardnet load --report` wrote) [default: the newest under the testnet "
              "folder].")
@out_option("The archive [default: shardnet-collect-<UTC time>.tar.gz here].", aliases=())
@click.option("--log-mib", type=click.IntRange(1, 1024), default=LOG_MIB_DEFAULT,
              show_default=True, help="The last MiB of each node's log.")
@json_option("Print a JSON summary on stdout.")
def collect(root: Path | None, compose: Path | None, report: Path | None, out: Path | None,
            log_mib: int, as_json: bool) -> None:
    """Pack logs, configs, /metrics and status snapshots and the last load report of a
    testnet into one .tar.gz for a bug report (no keys, salt redacted)."""
    if root is not None and compose is not None:
        raise UsageFailure("give --testnet or --compose, not both")
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out = out or Path(f"shardnet-collect-{stamp}.tar.gz")
    archive = Archive(out, f"shardnet-collect-{stamp}")
    try:
        if compose is not None:
            notes = collect_compose(archive, compose, log_mib * 1024 * 1024)
            search = compose if compose.is_dir() else compose.parent
        else:
            root = root or Path("testnets/default")
            notes = collect_local(archive, root, log_mib * 1024 * 1024)
            search = root
        if report is not None and report.is_dir():
            report = report / REPORT_FILE
        report = report if report is not None and report.is_file() else newest_report(search)
        if report is not None:
            archive.add("load/report.json", report.read_bytes())
        summary: dict[str, Any] = {"archive": str(out), "source": str(compose or root),
                                   "backend": "compose" if compose is not None else "local",
                                   "load_report": str(report) if report is not None else None,
                                   "nodes": notes,
                                   "down": [n["node"] for n in notes if "error" in n]}
        archive.add("summary.json", json.dumps(summary, indent=2).encode())
        summary["files"] = len(archive.members)
    except BaseException:
        archive.close()
        out.unlink(missing_ok=True)
        raise
    archive.close()
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    down = summary["down"]
    click.echo(f"{out}  ({summary['files']} files, {len(notes)} nodes"
               + (f", not answering: {', '.join(down)}" if down else "") + ")")
