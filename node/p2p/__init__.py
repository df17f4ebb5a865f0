"""The node's p2p layer: py-libp2p behind an asyncio facade (``host.P2PHost``), its
in-memory twin (``memory``), and the pieces they share (``api``, ``config``, ``framing``).

Nothing outside this package imports trio or libp2p. This module imports nothing, so
``node.p2p.memory`` and ``node.p2p.framing`` load without py-libp2p.
"""
