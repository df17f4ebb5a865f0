from __future__ import annotations

import io
import json
import logging

import structlog

from node.logs import configure_logging


def test_structlog_and_stdlib_records_are_json_lines() -> None:
    import libp2p  # noqa: F401  (detaches its logger on import: the case to cover)

    out = io.StringIO()
    configure_logging("json", "info", stream=out)
    try:
        structlog.get_logger().bind(node="shard0-node1", shard=0).info("block.committed",
                                                                       height=3)
        logging.getLogger("libp2p.transport").warning("Failed to open TCP stream")
        logging.getLogger("libp2p.transport").info("chatty detail")
        chatty = logging.getLogger("libp2p.network.auto_connector")
        chatty.setLevel(logging.INFO)  # as py-libp2p does for some of its loggers
        chatty.info("AUTO_CONNECTOR_STATE")
        lines = [json.loads(line) for line in out.getvalue().splitlines()]
    finally:
        structlog.reset_defaults()
        logging.getLogger().handlers.clear()
    assert lines[0]["event"] == "block.committed" and lines[0]["node"] == "shard0-node1"
    assert lines[0]["height"] == 3 and lines[0]["level"] == "info" and "ts" in lines[0]
    assert lines[1]["event"] == "Failed to open TCP stream"
    assert lines[1]["logger"] == "libp2p.transport" and lines[1]["level"] == "warning"
    assert len(lines) == 2
