"""One command line (issue 17, deliverable 4; README "Command line"): every subcommand
answers ``--help``; one spelling per meaning (``--testnet DIR``, ``--seed`` the account
seed string, ``--rng-seed N``, ``--out FILE``; ``--dir`` and ``--json-out`` only as hidden
aliases); ``--json`` on every command that reports, parsed here (offline, and against a
real 1 x 4 testnet started through the CLI); a missing folder, a node that does not
answer and a bad flag are one line with the exit code of scripts/cli/exits.py."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result

from scripts.cli import exits
from scripts.cli.main import main
from scripts.cli.params import AliasedOption, free_base_port, visible_names
from scripts.cli.testnet.layout import TestnetDir
from scripts.cli.testnet.processes import stop_node
from sharding.accounts import derive_account

Path_ = tuple[str, ...]


def walk(command: click.Command, path: Path_ = ()) -> Iterator[tuple[Path_, click.Command]]:
    yield path, command
    if isinstance(command, click.Group):
        ctx = click.Context(command, info_name=path[-1] if path else "shardnet")
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            assert sub is not None, f"shardnet {' '.join((*path, name))} does not load"
            yield from walk(sub, (*path, name))


COMMANDS = list(walk(main))[1:]
RUNNABLE = [(path, c) for path, c in COMMANDS
            if not isinstance(c, click.Group) or c.invoke_without_command]
# Commands that report nothing a script would parse (each with the reason).
NOT_REPORTING = {
    ("node",): "runs a validator until stopped; its logs are JSON already",
    ("completion",): "prints a shell script",
    ("demo",): "hidden old name: one line saying where it moved",
    ("testnet", "docker-node"): "hidden container entry point (execs a node)",
    ("testnet", "docker-load"): "hidden container entry point (runs shardnet load)",
}
# Commands with --json whose JSON is parsed elsewhere, or which take minutes here.
JSON_ELSEWHERE = {
    ("fuzz",): "tests/fuzz parse its --json report",
    ("simulate",): "tests/cli/test_simulate_network.py parses its --json",
    ("chaos", "run"): "minutes of faults under load: tests/chaos",
    ("project",): "a calibration run (issue 19): tests/cli/test_project.py",
    ("project", "calibrate"): "a calibration run (issue 19): tests/cli/test_project.py",
    ("testnet", "swarm"): "needs a Docker swarm: tests/docker",
    ("bench",): "each a benchmark run; the --json path is bench/common.report's, run "
                "here for state-root",
    ("tx",): "every tx call signs as tx transfer does (run here); their options are "
             "tested with each program",
    ("keys", "import"): "same output as keys new (run here)",
}
MISSING = "/nonexistent/p17-testnet"
# Run with --json below: the offline cases and the live testnet's.
JSON_RUN: set[Path_] = set()


def cmd_id(path: Path_) -> str:
    return " ".join(path)


def run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), prog_name="shardnet")


def one_line_error(result: Result, code: int, *says: str) -> None:
    assert result.exit_code == code, (result.exit_code, result.output)
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    for text in says:
        assert text in lines[0], (text, lines[0])


def parsed(result: Result) -> Any:
    """stdout is exactly one JSON document (or JSON lines), nothing else."""
    assert result.exit_code == 0, (result.exit_code, result.output)
    text = result.stdout
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return [json.loads(line) for line in text.splitlines() if line.strip()]


def json_run(path: Path_, *args: str) -> Any:
    JSON_RUN.add(path)
    return parsed(run(*path, *args, "--json"))


@pytest.fixture(autouse=True)
def no_url_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SHARDNET_URL", raising=False)


@pytest.fixture(scope="module")
def dead_url() -> str:
    return f"http://127.0.0.1:{free_base_port(1)}"


# ---------------------------------------------------------------------------
# --help everywhere; one spelling per meaning


@pytest.mark.parametrize("path", [p for p, _ in COMMANDS], ids=cmd_id)
def test_every_subcommand_answers_help(path: Path_) -> None:
    result = run(*path, "--help")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"Usage: shardnet {' '.join(path)}")


def test_no_visible_option_is_spelled_dir_or_json_out() -> None:
    for path, command in COMMANDS:
        for param in command.params:
            names = visible_names(param)
            assert "--dir" not in names and "--json-out" not in names, (path, names)
        help_text = run(*path, "--help").stdout
        assert "--dir" not in help_text and "--json-out" not in help_text, path


def test_seed_never_takes_an_integer_and_rng_seed_always_does() -> None:
    seen = 0
    for path, command in COMMANDS:
        for param in command.params:
            opts = getattr(param, "opts", [])
            if "--seed" in opts:
                assert isinstance(param.type, click.types.StringParamType), (path, param.type)
                seen += 1
            if "--rng-seed" in opts:
                assert isinstance(param.type, click.types.IntParamType), (path, param.type)
    assert seen >= 5  # keys, tx, account, load, testnet init at least


def test_an_integer_seed_where_a_run_seed_is_meant_names_rng_seed() -> None:
    with_rng = [path for path, c in RUNNABLE
                if any("--rng-seed" in getattr(p, "opts", []) for p in c.params)
                and any(getattr(p, "hidden", False) and "--seed" in getattr(p, "opts", [])
                        for p in c.params)]
    assert ("bench", "ledger") in with_rng and ("fuzz",) in with_rng
    for path in with_rng:
        one_line_error(run(*path, "--seed", "3"), exits.USAGE, "--rng-seed")


def test_old_spellings_still_parse_but_are_hidden() -> None:
    aliased = {(path, alias) for path, c in COMMANDS for p in c.params
               if isinstance(p, AliasedOption) for alias in p.hidden_aliases}
    assert (("testnet", "status"), "--dir") in aliased
    assert (("bench", "verify"), "--json-out") in aliased
    # --dir is --testnet: the missing folder is named, not the option refused.
    one_line_error(run("testnet", "status", "--dir", MISSING), exits.USAGE, MISSING)
    verify = dict(COMMANDS)[("bench", "verify")]
    ctx = verify.make_context("verify", ["--json-out", "x.json"])
    assert ctx.params["json_out"] == Path("x.json")


def test_internal_commands_and_the_old_demo_are_hidden() -> None:
    top = run("--help").stdout
    listed = top.split("Commands:", 1)[1].split("\n\n", 1)[0]
    names = {line.split()[0] for line in listed.splitlines() if line.startswith("  ")
             and line.strip()}
    assert "ledger-demo" in names and "completion" in names and "demo" not in names
    testnet = run("testnet", "--help").stdout
    assert "docker-node" not in testnet and "docker-load" not in testnet
    moved = run("demo")
    one_line_error(moved, exits.USAGE, "shardnet ledger-demo", "make demo")


def test_help_epilog_is_the_exit_code_table() -> None:
    text = run("--help").stdout
    for code, meaning in exits.MEANINGS.items():
        assert f"{code:<3} {meaning}" in text
    assert "shardnet completion bash|zsh|fish" in text


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_script_comes_from_click(shell: str) -> None:
    result = run("completion", shell)
    assert result.exit_code == 0, result.output
    assert "_SHARDNET_COMPLETE" in result.stdout


def test_completion_completes_visible_commands_only() -> None:
    result = CliRunner().invoke(main, [], prog_name="shardnet", env={
        "_SHARDNET_COMPLETE": "bash_complete", "COMP_WORDS": "shardnet testnet d",
        "COMP_CWORD": "2"})
    words = {line.split(",", 1)[1] for line in result.stdout.splitlines() if "," in line}
    assert words == {"disconnect", "down"}, result.stdout
    options = CliRunner().invoke(main, [], prog_name="shardnet", env={
        "_SHARDNET_COMPLETE": "bash_complete",
        "COMP_WORDS": "shardnet testnet status --", "COMP_CWORD": "3"})
    offered = {line.split(",", 1)[1] for line in options.stdout.splitlines() if "," in line}
    assert "--testnet" in offered and "--dir" not in offered, offered


def test_every_reporting_command_has_json() -> None:
    for path, command in RUNNABLE:
        if path in NOT_REPORTING:
            continue
        names = {n for p in command.params for n in visible_names(p)}
        assert "--json" in names, f"shardnet {cmd_id(path)} has no --json"


# ---------------------------------------------------------------------------
# Errors: one line, the documented exit code


def test_a_bad_flag_is_one_line_naming_it() -> None:
    one_line_error(run("testnet", "status", "--bogus"), exits.USAGE, "--bogus",
                   "shardnet testnet status --help")
    one_line_error(run("block", "--shard", "x"), exits.USAGE, "--shard")
    one_line_error(run("nosuch"), exits.USAGE, "nosuch")


MISSING_FOLDER_CASES = [
    ("testnet", "status"), ("testnet", "down"), ("testnet", "reset"), ("testnet", "load"),
    ("testnet", "stop", "s0n0"), ("audit",), ("load",), ("block",), ("events",),
    ("tx", "get", "ab" * 32), ("account", "ab" * 32), ("collect",), ("logs",),
    ("chaos", "run", "primary-crash"), ("dashboard", "--once"),
    ("tx", "transfer", "--to", "ab" * 32, "--amount", "1"),
]


@pytest.mark.parametrize("args", MISSING_FOLDER_CASES, ids=cmd_id)
def test_a_missing_testnet_folder_is_one_line_exit_2(args: Path_) -> None:
    one_line_error(run(*args, "--testnet", MISSING), exits.USAGE, MISSING)


UNREACHABLE_CASES = [
    ("testnet", "status"), ("audit",), ("load",), ("block",), ("events",),
    ("tx", "get", "ab" * 32), ("account", "ab" * 32), ("dashboard", "--once"),
    ("tx", "transfer", "--to", "ab" * 32, "--amount", "1"), ("keys",),
]


@pytest.mark.parametrize("args", UNREACHABLE_CASES, ids=cmd_id)
def test_a_url_nobody_answers_is_one_line_exit_3(args: Path_, dead_url: str) -> None:
    one_line_error(run(*args, "--url", dead_url), exits.UNREACHABLE, dead_url.split("//")[1])


@pytest.mark.parametrize("args", [("audit",), ("load",), ("block",), ("account", "ab" * 32)],
                         ids=cmd_id)
def test_a_folder_whose_nodes_are_down_is_one_line_exit_3(args: Path_,
                                                          tmp_path_factory: Any) -> None:
    root = tmp_path_factory.mktemp("down") / "net"
    assert run("testnet", "init", "--testnet", str(root), "--shards", "1",
               "--base-port", str(free_base_port(8))).exit_code == 0
    result = run(*args, "--testnet", str(root))
    assert result.exit_code == exits.UNREACHABLE, result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output


# ---------------------------------------------------------------------------
# --json, parsed


def test_json_offline(tmp_path: Path) -> None:
    assert json_run(("ledger-demo",))["ok"] is True
    names = {row["name"] for row in json_run(("chaos", "list"))}
    assert "primary-crash" in names
    key = json_run(("keys",), "--index", "3", "--shards", "2")
    assert key["address"] == derive_account("shardnet", 3).public_key.hex()
    store = str(tmp_path / "keystore")
    made = json_run(("keys", "new"), "--name", "a", "--keystore", store)
    assert [row["address"] for row in json_run(("keys", "list"), "--keystore", store)] == [
        made["address"]]
    assert json_run(("keys", "show"), "a", "--keystore", store)["address"] == made["address"]
    raw = json_run(("tx", "transfer"), "--to", "ab" * 32, "--amount", "1", "--nonce", "0",
                   "--chain-id", "offline", "--raw")
    assert raw["chain_id"] == "offline" and raw["nonce"] == 0
    root = tmp_path / "net"
    made_net = json_run(("testnet", "init"), "--testnet", str(root), "--shards", "1",
                        "--base-port", str(free_base_port(8)))
    assert made_net["nodes"] == [f"shard0-node{i}" for i in range(4)]
    # No node answers: the JSON document still, then exit 3 (unreachable) and one line.
    JSON_RUN.add(("testnet", "status"))
    offline = run("testnet", "status", "--testnet", str(root), "--json")
    assert offline.exit_code == exits.UNREACHABLE, offline.output
    status = json.loads(offline.stdout)
    assert [node["status"] for node in status["nodes"]] == [None] * 4
    assert json_run(("testnet", "down"), "--testnet", str(root))["stopped"] == []
    assert json_run(("testnet", "reset"), "--testnet", str(root))["cleared"] == []
    out = tmp_path / "state.json"
    rows = json_run(("bench", "state-root"), "--runs", "1", "--accounts", "100", "--writes",
                    "10", "--out", str(out))
    assert rows == json.loads(out.read_text())


@pytest.mark.integration
def test_json_against_a_live_testnet(tmp_path: Path) -> None:
    """init, up, the reporting commands, down: a 1 x 4 testnet through the CLI."""
    root = tmp_path / "net"
    net = ("--testnet", str(root))
    assert run("testnet", "init", *net, "--shards", "1",
               "--base-port", str(free_base_port(8))).exit_code == 0
    try:
        up = json_run(("testnet", "up"), *net)
        assert len(up["nodes"]) == 4
        status = json_run(("testnet", "status"), *net)
        assert all(node["status"]["chain_id"] == up["chain_id"] for node in status["nodes"])
        me = derive_account("shardnet", 1).public_key.hex()
        sent = json_run(("tx", "transfer"), *net, "--index", "0", "--to", me, "--amount", "7")
        assert sent["status"] == "finalized"
        assert json_run(("tx", "get"), sent["hash"], *net)["hash"] == sent["hash"]
        assert json_run(("account",), me, *net)["address"] == me
        assert json_run(("block",), *net)["height"] >= 1
        assert len(json_run(("events",), *net, "--count", "1")) >= 1
        report = json_run(("load",), *net, "--duration", "1s", "--rate", "20", "--quiet",
                          "--no-audit", "--report", str(tmp_path / "a"))
        assert report["sent"] == report["finalized"] == 20
        saved = str(tmp_path / "a" / "report.json")
        assert json_run(("load", "compare"), saved, saved)
        assert json_run(("testnet", "load"), *net, "--txs", "10", "--rate", "20",
                        "--quiet")["audit"]["ok"]
        assert json_run(("audit",), *net)["ok"]
        assert json_run(("dashboard",), *net, "--once")["num_shards"] == 1
        assert json_run(("logs",), *net, "--limit", "3")
        assert json_run(("testnet", "pause"), "s0n3", *net)["after"] == "paused"
        assert json_run(("testnet", "resume"), "s0n3", *net)["after"] == "running"
        assert json_run(("testnet", "stop"), "s0n3", *net)["after"] == "stopped"
        assert json_run(("testnet", "start"), "s0n3", *net)["after"] == "running"
        # One factory makes every verb (control_cli._command), the same --json path;
        # tests/integration/test_node_control.py runs the others (tests/docker the
        # compose-only connect and disconnect).
        JSON_RUN.update(("testnet", verb) for verb in ("kill", "restart", "connect",
                                                       "disconnect"))
        assert json_run(("collect",), *net, "--out", str(tmp_path / "c.tgz"))["archive"]
        down = json_run(("testnet", "down"), *net)
        assert len(down["stopped"]) == 4
    finally:
        for node in TestnetDir(root).load_manifest().nodes:
            stop_node(TestnetDir(root), node.name, timeout_s=10)


def test_every_json_command_is_run_here_or_excused() -> None:
    """Runs after the --json tests above (file order): a new reporting command gets a
    case in them, or a reason in JSON_ELSEWHERE."""
    if not {("testnet", "up"), ("ledger-demo",)} <= JSON_RUN:
        pytest.skip("the --json tests did not all run (-k, or integration deselected)")
    for path, _ in RUNNABLE:
        if path in NOT_REPORTING or any(path[:len(p)] == p for p in JSON_ELSEWHERE):
            continue
        assert path in JSON_RUN, f"shardnet {cmd_id(path)} --json is not parsed by a test"


def test_an_integer_account_seed_for_load_hints_at_rng_seed() -> None:
    """``load --seed`` is the account seed; an integer there (the old spelling of the
    run's seed) is named as such instead of only "no funded accounts"."""
    from scripts.cli.load.accounts import account_group
    from tests.support.ledger import get_genesis

    with pytest.raises(ValueError, match="random seed is --rng-seed N"):
        account_group(get_genesis(), "5", None)
    with pytest.raises(ValueError) as not_digits:
        account_group(get_genesis(), "nobody", None)
    assert "--rng-seed" not in str(not_digits.value)
