"""``shardnet testnet start|stop|kill|restart|pause|resume|disconnect|connect NODE``.

One node at a time, by hand: a local testnet's processes (``--testnet``) or a compose
project's containers (``--compose``). The work is ``scripts.cli.testnet.control``'s;
this is the command line: one line of result (``--json``: one JSON object), errors
one line on stderr saying what to fix, exit 1 (2 for a wrong name or missing folder;
``--json`` also prints ``{"ok": false, "error": ...}`` on stdout).
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from scripts.cli.params import DEFAULT_TESTNET, json_option, testnet_option
from scripts.cli.testnet.control import (
    STOP_TIMEOUT_S,
    ControlError,
    ControlResult,
    LocalNodes,
    NodeControl,
    open_nodes,
    resolve,
)
from scripts.cli.testnet.processes import url_status, wait_for

DEFAULT_DIR = DEFAULT_TESTNET
START_TIMEOUT_S = 60.0

HELP = {
    "start": "Start a stopped node (the command `testnet up` runs; `docker start`) and wait "
             "until its API answers.",
    "stop": "Stop a node gracefully: SIGTERM, SIGKILL after --timeout (`docker stop`).",
    "kill": "Crash a node: SIGKILL to its process tree (`docker kill`).",
    "restart": "Stop then start a node; wait until its API answers.",
    "pause": "Freeze a node: SIGSTOP to its process tree (`docker pause`). It keeps its "
             "sockets but answers nothing.",
    "resume": "Unfreeze a paused node: SIGCONT (`docker unpause`).",
    "disconnect": "Compose only: take a node's container off the compose network "
                  "(`docker network disconnect`).",
    "connect": "Compose only: put a disconnected container back on the compose network.",
}


def local_nodes(root: Path) -> LocalNodes:
    """The node processes of ``root``; ControlError (one line, exit 2) when there is no
    testnet there."""
    return LocalNodes(root)


def perform(nodes: NodeControl, verb: str, node: str, timeout_s: float,
            wait_s: float) -> ControlResult:
    """Run ``verb`` on ``node``; after start/restart, wait up to ``wait_s`` for its API."""
    if verb in ("stop", "restart"):
        result: ControlResult = getattr(nodes, verb)(node, timeout_s)
    else:
        result = getattr(nodes, verb)(node)
    if verb in ("start", "restart") and result.changed and wait_s > 0:
        url = nodes.api_url(result.node)
        if url is not None and not wait_for(lambda: url_status(url) is not None, wait_s,
                                            interval_s=0.2):
            state = nodes.state(result.node)
            raise ControlError(
                f"{result.node} was {'re' if verb == 'restart' else ''}started but its API "
                f"({url}) did not answer within {wait_s:.0f}s (now {state}); see its log")
    return result


def _command(verb: str) -> click.Command:
    @click.command(verb, help=HELP[verb] + " NODE: shard0-node1, s0n1 or 0/1.")
    @click.argument("node")
    @testnet_option()
    @click.option("--compose", "compose", type=click.Path(path_type=Path), default=None,
                  help="A compose project instead: its folder or compose file.")
    @click.option("--project", default=None,
                  help="With --compose: the compose project name (docker compose -p).")
    @click.option("--timeout", "timeout_s", type=click.FloatRange(min=0),
                  default=STOP_TIMEOUT_S, show_default=True,
                  help="Grace period of a stop before SIGKILL, in seconds.")
    @click.option("--wait", "wait_s", type=click.FloatRange(min=0), default=START_TIMEOUT_S,
                  show_default=True,
                  help="After start/restart: wait this long for the API (0: do not wait).")
    @json_option("One JSON object on stdout.")
    def command(node: str, root: Path, compose: Path | None, project: str | None,
                timeout_s: float, wait_s: float, as_json: bool) -> None:
        try:
            nodes = open_nodes(root=root, compose=compose, project=project)
            result = perform(nodes, verb, node, timeout_s, wait_s)
        except ControlError as exc:
            if as_json:
                click.echo(json.dumps({"ok": False, "action": verb, "node": node,
                                       "error": str(exc)}))
            raise
        click.echo(json.dumps(result.as_dict()) if as_json else result.describe())

    return command


COMMANDS = [_command(verb) for verb in HELP]

__all__ = ["COMMANDS", "local_nodes", "perform", "resolve"]
