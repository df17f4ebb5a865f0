"""Pre-signed transfers for the calibration's testnets: from funded accounts of one shard
to another's (or the same), the nonces running on across windows, local and cross-shard
ones mixed where the calibration asks (``shardnet project calibrate``)."""

from __future__ import annotations

from collections.abc import Callable

from consensus.kernel.codec import encode
from consensus.kernel.crypto import KeyPair
from sharding.tx import Transfer, TxBody, sign_tx


def sign_transfers(count: int, senders: int, to_shard: int, num_shards: int,
                   from_shard: int = 0, route: Callable[[int], int] | None = None,
                   ) -> tuple[list[bytes], list[str]]:
    """``count`` pre-signed transfers from ``senders`` funded accounts of ``from_shard``
    to funded accounts of ``to_shard`` (the same: local transactions; another: each with
    a receipt for it); ``route``: transaction i goes to shard ``route(i)`` instead (a
    mix of local and cross-shard transfers; the senders and nonces are the same)."""
    from sharding.accounts import derive_account, shard_of
    from sharding.tx import tx_hash

    destination = route or (lambda _: to_shard)
    needed = {from_shard, *(destination(i) for i in range(count))}
    by_shard: dict[int, list[KeyPair]] = {shard: [] for shard in needed}
    index = 0
    while any(len(by_shard[shard]) < senders for shard in needed):
        key = derive_account("shardnet", index)
        by_shard.setdefault(shard_of(key.public_key, num_shards), []).append(key)
        index += 1
    keys = by_shard[from_shard][:senders]
    raws, hashes = [], []
    for i in range(count):
        sender = keys[i % senders]
        recipient = by_shard[destination(i)][(i + 1) % senders]
        tx = sign_tx(sender, TxBody("shardnet-local", sender.public_key, i // senders,
                                    Transfer(recipient.public_key, 0, 1)))
        raws.append(encode(tx))
        hashes.append(tx_hash(tx).hex())
    return raws, hashes


def mixed_route(shard: int, shards: int, warm: int, local: int, mixed: int, every: int,
                ) -> Callable[[int], int]:
    """Where transaction i of ``shard``'s paced sequence goes: ``warm`` local transfers,
    then reps of ``local`` local ones and a mixed window of ``mixed``, in which every
    ``every``-th (its first included) goes to the next shard."""
    def to(i: int) -> int:
        at = (i - warm) % (local + mixed) - local if i >= warm else -1
        return (shard + 1) % shards if at >= 0 and at % every == 0 else shard
    return to


def sign_sequence(segments: list[tuple[int, int]], senders: int, num_shards: int,
                  ) -> list[tuple[list[bytes], list[str]]]:
    """Per segment (count, to_shard), pre-signed transfers from the same ``senders``
    accounts of shard 0, the nonces running on across the segments (so local and
    cross-shard windows can alternate)."""
    total = sum(count for count, _ in segments)
    targets = sorted({to for _, to in segments})
    signed = {to: sign_transfers(total, senders, to, num_shards) for to in targets}
    out, at = [], 0
    for count, to in segments:  # transaction i has nonce i // senders in every list
        raws, hashes = signed[to]
        out.append((raws[at:at + count], hashes[at:at + count]))
        at += count
    return out
