"""Click parameter types and small helpers the subcommands share."""

from __future__ import annotations

import random
import socket
from pathlib import Path
from typing import Any

import click

from scripts.cli.load.rate import RateError, parse_duration


class Duration(click.ParamType):  # type: ignore[type-arg]
    """``500ms``, ``10s``, ``2m`` or a number of seconds; ``positive`` refuses 0."""

    name = "duration"

    def __init__(self, positive: bool = False) -> None:
        self.positive = positive

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None
                ) -> float:
        if isinstance(value, int | float):
            seconds = float(value)
        else:
            try:
                seconds = parse_duration(str(value))
            except RateError as exc:
                self.fail(str(exc), param, ctx)
        if self.positive and seconds <= 0:
            self.fail(f"{value!r} is not a positive duration", param, ctx)
        return seconds


def free_base_port(count: int) -> int:
    """A port P with P..P+count-1 free on 127.0.0.1 right now, below the kernel's
    ephemeral range (outgoing connections take ports from there at any moment)."""
    try:  # Linux; elsewhere the IANA ephemeral range's start
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 49152
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(20_000, max(20_001, low - count))
        sockets: list[socket.socket] = []
        try:
            for port in range(base, base + count):
                sock = socket.socket()
                sockets.append(sock)
                sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise RuntimeError("no free port range on 127.0.0.1")
