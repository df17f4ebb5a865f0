"""One source of defaults: the config.toml the testnet generator writes, the NodeConfig
defaults and the p2p layer's P2PConfig defaults agree, and they are node/defaults.py's
values (docs/NODE.md section 2)."""

from __future__ import annotations

from pathlib import Path

import msgspec

from node import defaults
from node.config import NodeConfig, load_config, parse_config
from node.p2p.config import P2PConfig
from scripts.cli.testnet.generate import TestnetSpec, generate
from scripts.cli.testnet.layout import TestnetDir

# What the generator sets per node: identity, addresses, advertised URLs.
PER_NODE = {"node": {"shard", "index", "name"},
            "p2p": {"listen_port", "announce_host"},
            "api": {"port", "advertise_urls"}}


def sections(config: NodeConfig) -> dict[str, dict[str, object]]:
    return {field.name: msgspec.structs.asdict(getattr(config, field.name))
            for field in msgspec.structs.fields(NodeConfig) if field.name != "home"}


def test_the_generated_config_holds_the_node_config_defaults(tmp_path: Path) -> None:
    """Every key testnet init writes, beyond a node's identity and addresses, is the
    NodeConfig default: the generator repeats no default of its own."""
    manifest = generate(TestnetSpec(shards=1, validators=4, accounts=10), tmp_path / "net")
    home = TestnetDir(tmp_path / "net").home(manifest.nodes[1].name)
    generated = sections(load_config(home))
    default = sections(parse_config("[node]\nshard = 0\nindex = 1\n"))
    for section, values in generated.items():
        for key, value in values.items():
            if key not in PER_NODE.get(section, set()):
                assert value == default[section][key], f"{section}.{key}"


def test_node_config_defaults_are_the_defaults_module() -> None:
    config = parse_config("[node]\nshard = 0\nindex = 0\n")
    p2p, consensus = config.p2p, config.consensus
    assert (p2p.listen_host, p2p.write_timeout_ms, p2p.heartbeat_interval_ms,
            p2p.dial_backoff_min_ms, p2p.dial_backoff_max_ms, p2p.frame_bytes_max) == (
        defaults.P2P_LISTEN_HOST, defaults.P2P_WRITE_TIMEOUT_MS,
        defaults.P2P_HEARTBEAT_INTERVAL_MS, defaults.P2P_DIAL_BACKOFF_MIN_MS,
        defaults.P2P_DIAL_BACKOFF_MAX_MS, defaults.P2P_FRAME_BYTES_MAX)
    assert config.api.batch_txs_max == defaults.API_BATCH_TXS_MAX
    assert (consensus.block_txs_max, consensus.checkpoint_interval,
            consensus.request_timeout_ms, consensus.view_change_timeout_ms) == (
        defaults.CONSENSUS_BLOCK_TXS_MAX, defaults.CONSENSUS_CHECKPOINT_INTERVAL_BLOCKS,
        defaults.CONSENSUS_REQUEST_TIMEOUT_MS, defaults.CONSENSUS_VIEW_CHANGE_TIMEOUT_MS)


def test_p2p_config_defaults_agree_with_the_node_config_in_seconds() -> None:
    """A P2PConfig built without arguments (tests, benchmarks, the peer process) runs
    with the values a default node gives its p2p layer; the node's heartbeat timeout is
    5 heartbeat intervals."""
    p2p = parse_config("[node]\nshard = 0\nindex = 0\n").p2p
    config = P2PConfig(private_key_seed=bytes(32))
    assert config.listen_host == p2p.listen_host
    assert config.write_timeout_s * 1000 == p2p.write_timeout_ms
    assert config.heartbeat_interval_s * 1000 == p2p.heartbeat_interval_ms
    assert config.heartbeat_timeout_s * 1000 == 5 * p2p.heartbeat_interval_ms
    assert config.dial_backoff_min_s * 1000 == p2p.dial_backoff_min_ms
    assert config.dial_backoff_max_s * 1000 == p2p.dial_backoff_max_ms
    assert config.frame_bytes_max == p2p.frame_bytes_max == 8 * 1024 * 1024


def test_the_disputed_defaults_keep_what_a_default_testnet_ran_with() -> None:
    """Frame 8 MiB (not 4), checkpoint every 16 blocks (not 10), request and view-change
    timeouts 4,000 ms (not 2,000): the values of the config.toml nodes already ran."""
    consensus = parse_config("[node]\nshard = 0\nindex = 0\n").consensus
    assert defaults.P2P_FRAME_BYTES_MAX == 8 * 1024 * 1024
    assert (consensus.checkpoint_interval, consensus.request_timeout_ms,
            consensus.view_change_timeout_ms) == (16, 4_000, 4_000)


def test_strangers_are_refused_unless_the_node_config_says_otherwise(tmp_path: Path) -> None:
    """Issue 14 finding 6: the p2p gate serves only genesis validators by default; the
    one switch to serve other keys is the node's own config.toml."""
    from consensus.kernel.crypto import KeyPair
    from node.main import p2p_config
    from sharding.genesis import load_genesis

    manifest = generate(TestnetSpec(shards=1, validators=4, accounts=10), tmp_path / "net")
    net = TestnetDir(tmp_path / "net")
    home = net.home(manifest.nodes[1].name)
    genesis = load_genesis(home / "genesis.json")
    key = KeyPair.generate()
    assert p2p_config(load_config(home), genesis, key).accept_unknown_peers is False
    text = (home / "config.toml").read_text()
    assert "accept_unknown_peers = false" in text  # the generator writes it, off
    (home / "config.toml").write_text(
        text.replace("accept_unknown_peers = false", "accept_unknown_peers = true"))
    assert p2p_config(load_config(home), genesis, key).accept_unknown_peers is True
