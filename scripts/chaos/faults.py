"""A client of the nodes' fault endpoint (docs/NODE.md, "Faults and byzantine modes").

A node whose config says ``[faults] enabled = true`` (``shardnet testnet init
--faults``) listens on 127.0.0.1 only, on the port it writes to
``<home>/faults.port``, and wants ``Authorization: Bearer <token>`` with the token of
``<home>/faults.token`` (new at every start: both files are read for every call).

- ``LocalFaults``: a testnet folder's node homes, straight over HTTP.
- ``ComposeFaults``: inside each container, through ``docker exec ... python -c``
  (the endpoint listens on the container's own loopback).

Every call returns the endpoint's JSON answer or raises ``FaultsError`` with one line
(``unavailable``: the node was not made with ``--faults``, or is down).
"""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Protocol

from scripts.cli.testnet.layout import TestnetDir

PORT_FILE = "faults.port"
TOKEN_FILE = "faults.token"
HTTP_TIMEOUT_S = 5.0
DOCKER_EXEC_TIMEOUT_S = 30.0
CONTAINER_HOMES = "/data/testnet/nodes"


class FaultsError(RuntimeError):
    """A fault request failed; ``unavailable`` when the node has no endpoint now."""

    def __init__(self, node: str, message: str, *, unavailable: bool = False) -> None:
        super().__init__(f"{node}: {message}")
        self.node = node
        self.unavailable = unavailable


class FaultClient(Protocol):
    def call(self, node: str, method: str, path: str, body: dict[str, Any] | None = None
             ) -> Any: ...


def links_body(peers: list[str] | str, *, delay_ms: int = 0, loss: float = 0.0,
               partition: bool = False) -> dict[str, Any]:
    return {"peers": peers, "delay_ms": delay_ms, "loss": loss, "partition": partition}


def set_links(client: FaultClient, node: str, peers: list[str] | str, *, delay_ms: int = 0,
              loss: float = 0.0, partition: bool = False) -> Any:
    return client.call(node, "PUT", "/faults/links",
                       links_body(peers, delay_ms=delay_ms, loss=loss, partition=partition))


def set_byzantine(client: FaultClient, node: str, mode: str) -> Any:
    return client.call(node, "PUT", "/faults/byzantine", {"mode": mode})


def heal(client: FaultClient, node: str) -> Any:
    return client.call(node, "DELETE", "/faults")


def state(client: FaultClient, node: str) -> Any:
    return client.call(node, "GET", "/faults")


class LocalFaults:
    """The fault endpoints of a local testnet's nodes."""

    def __init__(self, root: Path) -> None:
        self.dir = TestnetDir(root)

    def available(self, node: str) -> bool:
        return (self.dir.home(node) / PORT_FILE).is_file()

    def call(self, node: str, method: str, path: str, body: dict[str, Any] | None = None
             ) -> Any:
        home = self.dir.home(node)
        try:
            port = int((home / PORT_FILE).read_text().strip())
            token = (home / TOKEN_FILE).read_text().strip()
        except (OSError, ValueError):
            raise FaultsError(node, f"no fault endpoint ({home / PORT_FILE} missing): "
                              "make the testnet with `shardnet testnet init --faults` and "
                              "start the node", unavailable=True) from None
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}{path}", data=data, method=method,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as answer:
                return json.loads(answer.read() or b"null")
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:300].decode(errors="replace")
            raise FaultsError(node, f"{method} {path}: HTTP {exc.code} {detail}") from None
        except (OSError, ValueError) as exc:
            raise FaultsError(node, f"{method} {path}: {exc}", unavailable=True) from None


# Run inside the container: find the node's home by its port file, call, print JSON.
_IN_CONTAINER = r"""
import glob, json, sys, urllib.request, urllib.error
method, path, body = sys.argv[1], sys.argv[2], sys.argv[3]
found = glob.glob(sys.argv[4] + "/*/faults.port")
if not found:
    print(json.dumps({"ok": False, "unavailable": True, "detail": "no faults.port"})); sys.exit(0)
home = found[0].rsplit("/", 1)[0]
port = open(found[0]).read().strip(); token = open(home + "/faults.token").read().strip()
req = urllib.request.Request("http://127.0.0.1:%s%s" % (port, path),
    data=body.encode() if body else None, method=method,
    headers={"Authorization": "Bearer " + token, "Content-Type": "application/json"})
try:
    with urllib.request.urlopen(req, timeout=5) as r:
        print(json.dumps({"ok": True, "answer": json.loads(r.read() or b"null")}))
except urllib.error.HTTPError as e:
    print(json.dumps({"ok": False, "status": e.code, "detail": e.read()[:300].decode()}))
except OSError as e:
    print(json.dumps({"ok": False, "unavailable": True, "detail": str(e)}))
"""


class ComposeFaults:
    """The fault endpoints of a compose project's containers (``docker exec``)."""

    def __init__(self, container_of: Any) -> None:
        self.container_of = container_of  # node name -> container id (or None)

    def call(self, node: str, method: str, path: str, body: dict[str, Any] | None = None
             ) -> Any:
        container = self.container_of(node)
        if container is None:
            raise FaultsError(node, "no container", unavailable=True)
        command = ["docker", "exec", container, "python", "-c", _IN_CONTAINER, method, path,
                   "" if body is None else json.dumps(body), CONTAINER_HOMES]
        try:
            done = subprocess.run(command, capture_output=True, text=True, check=False,
                                  timeout=DOCKER_EXEC_TIMEOUT_S)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise FaultsError(node, f"docker exec: {exc}", unavailable=True) from None
        try:
            result = json.loads(done.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise FaultsError(node, f"docker exec failed: {done.stderr.strip()[-300:]}",
                              unavailable=True) from None
        if not result.get("ok"):
            raise FaultsError(node, f"{method} {path}: {result.get('status', '')} "
                              f"{result.get('detail', '')}".strip(),
                              unavailable=bool(result.get("unavailable")))
        return result.get("answer")
