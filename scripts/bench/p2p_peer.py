"""A stand-alone p2p peer process for the p2p benchmark and tests.

``python -m scripts.bench.p2p_peer CONFIG_JSON`` runs a :class:`node.p2p.host.P2PHost` and talks
to its parent over stdin/stdout, one JSON object per line:

* it prints ``{"event": "ready", ...}`` once listening;
* stream messages on :data:`ECHO_CHANNEL` are sent back to their sender unchanged;
  messages on :data:`SINK_CHANNEL` (``u64 sequence | padding``) are counted and checked
  for order per sender;
* requests are answered with ``b"re:" + request``;
* gossip on every configured topic is recorded (``u64 seq | f64 sent_at | padding``);
* commands on stdin: ``{"cmd": "sink_report"}``, ``{"cmd": "publish", "topic", "count",
  "rate", "size"}``, ``{"cmd": "gossip_report"}``, ``{"cmd": "wait_peers", "count",
  "wait_s"}``, ``{"cmd": "stats"}``, ``{"cmd": "exit"}``; each gets one JSON answer.

CONFIG_JSON: ``{"seed": hex, "port": int, "peers": [[peer_id, "ip:port"], ...],
"topics": [...], "heartbeat_interval_s": float, "heartbeat_timeout_s": float,
"accept_unknown_peers": bool}``. Like a node, the peer serves only the peers listed
(``accept_unknown_peers`` false, the default): benchmarks and tests give every process
the full list, so none of them relies on being served as a stranger.
"""

from __future__ import annotations

import asyncio
import json
import logging
import struct
import sys
import time
from collections import defaultdict
from typing import Any

import structlog

from node.p2p.config import P2PConfig, PeerSpec
from node.p2p.host import P2PHost

ECHO_CHANNEL = 1
SINK_CHANNEL = 2
_SEQ = struct.Struct(">Q")
_GOSSIP = struct.Struct(">Qd")


# CONFIG_JSON keys that override a P2PConfig default when given, and their types.
_OPTIONAL = {"heartbeat_interval_s": float, "heartbeat_timeout_s": float,
             "gossip_degree": int, "gossip_degree_low": int, "gossip_degree_high": int,
             "accept_unknown_peers": bool}


def config_from_json(spec: dict[str, Any]) -> P2PConfig:
    return P2PConfig(
        private_key_seed=bytes.fromhex(spec["seed"]),
        listen_host="127.0.0.1",
        listen_port=int(spec["port"]),
        peers=tuple(PeerSpec(address=addr, peer_id=pid) for pid, addr in spec["peers"]),
        gossip_topics=tuple(spec.get("topics", ())),
        # A peer process redials sooner than a node: tests restart peers.
        dial_backoff_max_s=float(spec.get("dial_backoff_max_s", 2.0)),
        **{key: kind(spec[key]) for key, kind in _OPTIONAL.items() if key in spec},
    )


class PeerProcess:
    def __init__(self, host: P2PHost) -> None:
        self.host = host
        self.sink_count: dict[str, int] = defaultdict(int)
        self.sink_next: dict[str, int] = defaultdict(int)
        self.sink_out_of_order = 0
        self.sink_last_at = 0.0
        self.gossip_seen: dict[str, set[int]] = defaultdict(set)
        self.gossip_latency_ms: list[float] = []
        self.gossip_duplicates = 0
        host.on_message(self.on_message)
        host.set_request_handler(self.on_request)
        for topic in host.config.gossip_topics:
            host.subscribe(topic, self.on_gossip)

    def on_message(self, peer: str, channel: int, data: bytes) -> None:
        if channel == ECHO_CHANNEL:
            self.host.send_nowait(peer, ECHO_CHANNEL, data)
        elif channel == SINK_CHANNEL:
            (seq,) = _SEQ.unpack_from(data)
            if seq != self.sink_next[peer]:
                self.sink_out_of_order += 1
            self.sink_next[peer] = seq + 1
            self.sink_count[peer] += 1
            self.sink_last_at = time.time()

    async def on_request(self, peer: str, data: bytes) -> bytes:
        return b"re:" + data

    def on_gossip(self, origin: str, data: bytes) -> None:
        seq, sent_at = _GOSSIP.unpack_from(data)
        seen = self.gossip_seen[origin]
        if seq in seen:
            self.gossip_duplicates += 1
            return
        seen.add(seq)
        self.gossip_latency_ms.append((time.time() - sent_at) * 1000)

    async def publish(self, topic: str, count: int, rate: float, size: int) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        start = loop.time()
        padding = b"\x00" * max(0, size - _GOSSIP.size)
        for seq in range(count):
            # Pace against the schedule, not the previous send, so the rate holds.
            delay = start + seq / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            self.host.publish(topic, _GOSSIP.pack(seq, time.time()) + padding)
        return {"published": count, "seconds": loop.time() - start}

    async def command(self, cmd: dict[str, Any]) -> dict[str, Any]:
        name = cmd["cmd"]
        if name == "sink_report":
            return {
                "received": dict(self.sink_count),
                "out_of_order": self.sink_out_of_order,
                "last_at": self.sink_last_at,
            }
        if name == "publish":
            return await self.publish(
                cmd["topic"], int(cmd["count"]), float(cmd["rate"]), int(cmd["size"])
            )
        if name == "gossip_report":
            return {
                "received": {origin: len(seqs) for origin, seqs in self.gossip_seen.items()},
                "duplicates": self.gossip_duplicates,
                "latency_ms": self.gossip_latency_ms,
            }
        if name == "wait_peers":
            deadline = time.monotonic() + float(cmd["wait_s"])
            while len(self.host.connected_peers()) < int(cmd["count"]):
                if time.monotonic() > deadline:
                    return {"ok": False, "connected": len(self.host.connected_peers())}
                await asyncio.sleep(0.05)
            return {"ok": True, "connected": len(self.host.connected_peers())}
        if name == "stats":
            return self.host.stats_snapshot()
        return {"error": f"unknown command {name}"}


def _print(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def run(spec: dict[str, Any]) -> None:
    log = structlog.get_logger().bind(node=spec.get("name", "peer"))
    async with P2PHost(config_from_json(spec), log) as host:
        peer = PeerProcess(host)
        _print({"event": "ready", "peer_id": host.peer_id, "listen": host.listen_addrs})
        while True:
            line = await asyncio.to_thread(sys.stdin.readline)
            if not line or json.loads(line)["cmd"] == "exit":
                break
            _print(await peer.command(json.loads(line)))


def main() -> None:
    # Entry point: the only place that configures logging for this process.
    logging.basicConfig(level=logging.ERROR, stream=sys.stderr)
    logging.getLogger("libp2p").setLevel(logging.CRITICAL)  # logs ERROR per failed dial
    structlog.configure(
        processors=[structlog.processors.add_log_level, structlog.processors.JSONRenderer()],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )
    asyncio.run(run(json.loads(sys.argv[1])))


if __name__ == "__main__":
    main()
