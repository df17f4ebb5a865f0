"""The compose file of a testnet (the committed root docker-compose.yml is one).

One image; services ``shard0-node0`` ... differ only by environment and volume.
Each container derives the same testnet from (seed, salt, chain id, shards,
validators) and runs its own node (``shardnet testnet docker-node``): no bind mounts,
so the file also deploys with ``docker stack deploy``. API ports are published on
127.0.0.1. The salt gives every validator key: a generated file is as private as the
testnet's manifest (the committed root files carry the public development salt).

The Swarm twin (docs/SWARM.md) pins validator ``i`` of every shard to the machines
labelled ``shardnet.slot<i>=true`` (``SLOT_LABEL``), so the validators of one shard run
on different machines when there are several, and publishes the API ports through the
ingress routing mesh or, with ``publish="host"``, on the machine each task runs on.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from node import defaults
from scripts.cli.testnet.generate import DEV_SALT

if TYPE_CHECKING:
    from scripts.cli.testnet.emulation import Emulation
    from scripts.cli.testnet.generate import TestnetSpec
    from scripts.cli.testnet.layout import NodeEntry

IMAGE = "shardnet:latest"
NETWORK = "shardnet"
# Swarm placement: validator i of every shard runs on a machine with this label = true.
SLOT_LABEL = "shardnet.slot{index}"
PUBLISH_MODES = ("ingress", "host")
# `testnet init --restart`: what Docker does when a node exits. "no" by default, so a
# crash shows as a stopped container in tests and chaos runs instead of a quiet restart.
RESTART_POLICIES = ("no", "on-failure", "always")
_SWARM_CONDITION = {"no": "none", "on-failure": "on-failure", "always": "any"}
# The healthcheck: GET /v1/health on the container's own API port (API_PORT, which the
# image sets and each service repeats); a 503 (not ready: no peers, stalled) raises.
HEALTHCHECK = (
    "    test: [\"CMD\", \"python\", \"-c\", \"import os, urllib.request; "
    "urllib.request.urlopen('http://127.0.0.1:%s/v1/health' % os.environ['API_PORT'], "
    "timeout=2)\"]"
)
# Swarm's: alive (GET /v1/status answers), not ready. Swarm adds a task to the overlay's
# DNS only once it is healthy, and a node is ready (/v1/health) only with a quorum of its
# peers connected, which it finds by those DNS names: readiness would never come. Swarm
# also kills an unhealthy task (exit 137), so the check is lenient: a node on a saturated
# machine (the probe is a Python process) is killed only after minutes without an answer.
SWARM_HEALTHCHECK = HEALTHCHECK.replace("/v1/health", "/v1/status")


def _logging(indent: str) -> list[str]:
    """Docker keeps a container's stdout in a json-file without bound by default: rotate
    it at the node's own log file bounds (node/defaults.py)."""
    mib = defaults.LOG_FILE_BYTES_MAX // defaults.MIB
    return [
        f"{indent}logging:",
        f"{indent}  driver: json-file",
        f"{indent}  options:",
        f"{indent}    max-size: \"{mib}m\"",
        f"{indent}    max-file: \"{defaults.LOG_FILE_BACKUPS + 1}\"",
    ]


def render_compose(spec: TestnetSpec, nodes: list[NodeEntry], *, swarm: bool = False,
                   restart: str = "no", publish: str = "ingress",
                   emulation: Emulation | None = None) -> str:
    """The compose file, or with ``swarm`` its twin for ``docker stack deploy``: Swarm
    rejects ``profiles`` (the compose file's ``load`` profile), so there ``loadgen`` is a
    service of zero replicas, and Swarm publishes ports on every interface (``publish``:
    through the ingress mesh, or ``host`` mode). ``restart`` is one of
    ``RESTART_POLICIES`` (Swarm's ``restart_policy`` condition in the stack).
    ``emulation`` (compose only) limits each node's CPUs and shapes its network."""
    if restart not in RESTART_POLICIES:
        raise ValueError(f"restart policy {restart!r} is not one of {RESTART_POLICIES}")
    if publish not in PUBLISH_MODES:
        raise ValueError(f"publish mode {publish!r} is not one of {PUBLISH_MODES}")
    if swarm and emulation is not None:
        raise ValueError("machine emulation applies to the compose file, not the stack")
    lines = _header(spec, swarm, restart)
    for k, node in enumerate(nodes):
        lines += (_swarm_node_service(spec, node, k, restart, publish) if swarm else
                  _node_service(spec, node, k, emulation))
    lines += _loadgen_service(spec, nodes, swarm)
    lines += [] if swarm else _prometheus_service()
    lines += [
        "",
        "networks:",
        # No driver: compose makes a bridge network, Swarm an overlay network (attachable:
        # a one-off `docker run --network <stack>_shardnet` can reach the nodes too).
        f"  {NETWORK}: {{attachable: true}}" if swarm else f"  {NETWORK}: {{}}",
        "",
        "volumes:",
    ]
    lines += [f"  {node.name}-data:" for node in nodes]
    return "\n".join(lines) + "\n"


def _header(spec: TestnetSpec, swarm: bool, restart: str) -> list[str]:
    """The comment lines and the ``x-node`` template every node service extends."""
    usage = (
        "# Start: shardnet testnet swarm up --testnet DIR (labels, publish mode; "
        "docs/SWARM.md)    Load: shardnet testnet swarm load" if swarm else
        "# Start: docker compose up -d    Load: docker compose --profile load run --rm loadgen"
    )
    if not spec.salt:
        keys = "from the seed alone (--deterministic-keys): public, tests only."
    elif spec.salt == DEV_SALT:
        keys = ("from the public development salt: anyone can sign as these validators, "
                "local use only (`shardnet testnet init` draws a private salt).")
    else:
        keys = "from SHARDNET_SALT below: keep this file private."
    return [
        "# Generated by `shardnet testnet init` "
        f"(--shards {spec.shards} --validators {spec.validators} --accounts {spec.accounts}"
        f" --seed {spec.seed}). Do not edit: regenerate.",
        f"# Chain {spec.chain_id}. Validator keys: {keys}",
        usage,
        "x-node: &node",
        f"  image: {IMAGE}",
        *([] if swarm else ["  build: ."]),
        "  command: [\"testnet\", \"docker-node\"]",
        *([] if swarm else [f"  restart: {json.dumps(restart)}"]),
        "  stop_grace_period: 20s",
        *_logging("  "),
        "  networks: [" + NETWORK + "]",
        "  healthcheck:",
        *([SWARM_HEALTHCHECK, "    interval: 10s", "    timeout: 30s", "    retries: 6",
           "    start_period: 300s"] if swarm else
          [HEALTHCHECK, "    interval: 2s", "    timeout: 3s", "    retries: 3",
           "    start_period: 60s"]),
        "",
        "services:",
    ]


def _testnet_env(spec: TestnetSpec) -> list[str]:
    """What a container needs to derive the testnet (``generate.spec_from_env``): shards,
    validators, accounts, seed, chain id, the validator-key salt, and whether the nodes'
    fault endpoints are armed (``testnet init --faults``; reached through ``docker exec``)."""
    faults = ["      SHARDNET_FAULTS: \"1\""] if spec.faults else []
    return [
        *faults,
        f"      SHARDNET_SHARDS: \"{spec.shards}\"",
        f"      SHARDNET_VALIDATORS: \"{spec.validators}\"",
        f"      SHARDNET_ACCOUNTS: \"{spec.accounts}\"",
        f"      SHARDNET_SEED: {spec.seed}",
        f"      SHARDNET_CHAIN_ID: {json.dumps(spec.chain_id)}",
        f"      SHARDNET_SALT: {json.dumps(spec.salt)}",
    ]


def _node_service(spec: TestnetSpec, node: NodeEntry, k: int,
                  emulation: Emulation | None) -> list[str]:
    return [
        f"  {node.name}:",
        "    <<: *node",
        f"    hostname: {node.name}",
        *_emulation(emulation),
        "    environment:",
        f"      SHARDNET_NODE: {node.name}",
        *_testnet_env(spec),
        *(f"      {key}: \"{value}\"" for key, value in
          sorted((emulation.env() if emulation else {}).items())),
        f"      API_PORT: \"{node.api_port}\"",
        "    ports:",
        f"      - \"127.0.0.1:{8000 + k}:{node.api_port}\"",
        "    volumes:",
        f"      - {node.name}-data:/data",
    ]


def _emulation(emulation: Emulation | None) -> list[str]:
    """A node's CPU limit, and what shaping its network takes: the container starts as
    root with NET_ADMIN, installs the qdisc and drops to the image's user
    (scripts/cli/testnet/emulation.py)."""
    if emulation is None:
        return []
    lines = [] if emulation.cpus is None else [f"    cpus: {emulation.cpus:g}"]
    if emulation.shapes_network:
        lines += ["    user: \"0:0\"", "    cap_add: [NET_ADMIN]"]
    return lines


def _swarm_node_service(spec: TestnetSpec, node: NodeEntry, k: int, restart: str,
                        publish: str) -> list[str]:
    """A node service of the stack: placed by its validator index (``SLOT_LABEL``), its
    API port published through the ingress mesh or in host mode. In host mode its name
    resolves to the task's address (``dnsrr``): a virtual IP is balanced with IPVS, which
    a machine without the ingress mesh lacks too."""
    label = SLOT_LABEL.format(index=node.index)
    return [
        f"  {node.name}:",
        "    <<: *node",
        f"    hostname: {node.name}",
        "    deploy:",
        "      restart_policy:",
        f"        condition: {_SWARM_CONDITION[restart]}",
        *(["      endpoint_mode: dnsrr"] if publish == "host" else []),
        "      placement:",
        f"        constraints: [\"node.labels.{label} == true\"]",
        "    environment:",
        f"      SHARDNET_NODE: {node.name}",
        *_testnet_env(spec),
        f"      API_PORT: \"{node.api_port}\"",
        "    ports:",
        f"      - target: {node.api_port}",
        f"        published: {8000 + k}",
        "        protocol: tcp",
        f"        mode: {publish}",
        "    volumes:",
        f"      - {node.name}-data:/data",
    ]


def _loadgen_service(spec: TestnetSpec, nodes: list[NodeEntry], swarm: bool) -> list[str]:
    return [
        "  loadgen:",
        f"    image: {IMAGE}",
        *(["    deploy:", "      replicas: 0", "      restart_policy:",
           "        condition: none"] if swarm else
          ["    profiles: [load]",
           "    depends_on:",
           *(f"      {n.name}: {{condition: service_healthy}}" for n in nodes)]),
        "    networks: [" + NETWORK + "]",
        *_logging("    "),
        # It serves no API: the image's healthcheck (GET /v1/health) would mark it
        # unhealthy after the start period, and Swarm kills an unhealthy task (exit 137).
        "    healthcheck:",
        "      disable: true",
        "    environment:",
        *_testnet_env(spec),
        "    command: [\"testnet\", \"docker-load\", \"--txs\", \"400\", \"--cross-shard\", "
        "\"0.2\"]",
        *([] if swarm else ["    restart: \"no\""]),
    ]


def _prometheus_service() -> list[str]:
    """Prometheus (profile ``monitoring``; compose only: Swarm rejects profiles and its
    bind mounts would need the folder on every host) scraping every node service with the
    folder's ``prometheus/docker.yml`` and ``rules.yml`` (scripts/cli/testnet/prometheus.py),
    its UI and API on 127.0.0.1:9090. The image: ``make prometheus-image`` (offline)."""
    from scripts.cli.testnet import prometheus as prom

    return [
        "  prometheus:",
        f"    image: {prom.IMAGE}",
        "    profiles: [monitoring]",
        "    networks: [" + NETWORK + "]",
        *_logging("    "),
        "    ports:",
        f"      - \"127.0.0.1:{prom.HOST_PORT}:9090\"",
        "    volumes:",
        f"      - ./{prom.FOLDER}/{prom.DOCKER_CONFIG}:{prom.CONTAINER_DIR}/prometheus.yml:ro",
        f"      - ./{prom.FOLDER}/{prom.RULES}:{prom.CONTAINER_DIR}/{prom.RULES}:ro",
        "    restart: \"no\"",
    ]
