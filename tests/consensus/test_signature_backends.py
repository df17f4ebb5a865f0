"""The two paths of the signature rule agree (docs/PROTOCOL.md section 1, "Signature
validity"; issue 16, deliverable 3): the compiled extension ``shardnet_ed25519``
(native/ed25519, ed25519-dalek's cofactorless ``verify``) and the pure path
(``verify_signature_cryptography``, OpenSSL) give the same verdict on every published
vector, on crafted edge cases (small-order and mixed-order A and R, non-canonical A and
R, S >= L, S with its high bits set) and on random mutations of valid signatures; and
without the extension ``verify_signature`` falls back to the pure path.

The extension tests are skipped when it is not installed (``make venv`` builds it when
cargo is there); the fallback tests always run.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consensus.kernel import crypto
from consensus.kernel.crypto import (
    KeyPair,
    SignatureCheck,
    is_acceptable_public_key,
    load_native,
    verify_signature,
    verify_signature_cryptography,
    verify_signatures,
)
from tests.consensus.test_signature_vectors import speccheck_cases, wycheproof_tests
from tests.support.edwards25519 import D, L, P, Point, add, mul

REPO = Path(__file__).resolve().parents[2]
VECTORS = Path(__file__).parent / "vectors"

try:
    NATIVE = load_native("native")
except ImportError:
    NATIVE = None
needs_native = pytest.mark.skipif(NATIVE is None, reason="shardnet_ed25519 not installed")


# -- a little edwards25519, enough to craft points and signatures -------------------

def decode(data: bytes) -> Point | None:
    y = int.from_bytes(data, "little") & ~(1 << 255)
    if y >= P:
        return None
    xx = (y * y - 1) * pow(D * y * y + 1, P - 2, P) % P
    x = pow(xx, (P + 3) // 8, P)
    if x * x % P != xx:
        x = x * pow(2, (P - 1) // 4, P) % P
    if x * x % P != xx:
        return None
    if x & 1 != data[31] >> 7:
        x = P - x
    return x, y


def encode(point: Point) -> bytes:
    x, y = point
    return (y | (x & 1) << 255).to_bytes(32, "little")


def decoded(data: bytes) -> Point:
    point = decode(data)
    assert point is not None
    return point


BASE = decoded((4 * pow(5, P - 2, P) % P).to_bytes(32, "little"))
# A point of order 8 (y from crypto.SMALL_ORDER_Y); its multiples are the 8 small points.
T8 = decoded(2707385501144840649318225287225658788936804267575313519463743609750303402022
             .to_bytes(32, "little"))
assert mul(8, T8) == (0, 1) and mul(4, T8) != (0, 1)
TORSION = [mul(i, T8) for i in range(8)]


def challenge(r: bytes, a: bytes, message: bytes) -> int:
    return int.from_bytes(hashlib.sha512(r + a + message).digest(), "little") % L


def mixed_order_signatures(count: int) -> list[tuple[SignatureCheck, bool]]:
    """(check, satisfies the cofactorless equation) with A = aB + T and R = rB + T_R for
    torsion points T, T_R: valid cofactorless exactly when T_R = -[k]T (1 in 8 by
    chance); the others pass only the cofactored equation [8][S]B = [8]R + [8][k]A."""
    out = []
    for i in range(count):
        a, r = 1000003 * i + 7, 7919 * i + 11
        t_a, t_r = TORSION[1 + i % 7], TORSION[(3 * i) % 8]
        key = encode(add(mul(a, BASE), t_a))
        message = b"mixed %d" % i
        r_bytes = encode(add(mul(r, BASE), t_r))
        k = challenge(r_bytes, key, message)
        s = (r + k * a) % L
        holds = add(mul(k, t_a), t_r) == (0, 1)  # [S]B - R - [k]A = -(T_R + [k]T)
        out.append(((key, message, r_bytes + s.to_bytes(32, "little")), holds))
    return out


def crafted_checks() -> list[SignatureCheck]:
    """Edge cases around honest signatures: every small-order A (both x signs) with
    (R = A-ish, S = 0); small-order R; non-canonical A and R (y >= p); S = L, S + L,
    S with bit 255 / 253 set; R = identity; truncated and padded fields."""
    pair = KeyPair.derive("backends", 0)
    message = b"crafted"
    signature = pair.sign(message)
    r, s = signature[:32], int.from_bytes(signature[32:], "little")
    checks: list[SignatureCheck] = [(pair.public_key, message, signature)]
    small = [encode(t) for t in TORSION]
    small += [bytes(e[:31]) + bytes((e[31] ^ 0x80,)) for e in small]  # other x sign (-0 too)
    for key in small:
        for r_small in small[:8]:
            checks.append((key, message, r_small + bytes(32)))
            checks.append((key, message, r_small + (1).to_bytes(32, "little")))
        checks.append((key, message, signature))
    for r_small in small:  # small-order R under an honest key
        checks.append((pair.public_key, message, r_small + signature[32:]))
    for y in (P, P + 1, P + 2, 2**255 - 1):  # non-canonical encodings
        for high in (0, 1 << 255):
            enc = (y | high).to_bytes(32, "little")
            checks.append((enc, message, signature))  # as A
            checks.append((pair.public_key, message, enc + signature[32:]))  # as R
            checks.append((enc, message, enc + bytes(32)))
    for bad_s in (L, s + L, s | 1 << 255, s | 1 << 253, s + 2**252, 2**256 - 1, 0):
        if bad_s < 2**256:
            checks.append((pair.public_key, message, r + bad_s.to_bytes(32, "little")))
    checks.append((pair.public_key, message, encode((0, 1)) + signature[32:]))
    checks += [(pair.public_key[:31], message, signature), (pair.public_key + b"\0", message,
               signature), (pair.public_key, message, signature[:63]),
               (pair.public_key, message, signature + b"\0"), (b"", b"", b"")]
    checks += [check for check, _ in mixed_order_signatures(48)]
    return checks


def published_checks() -> list[SignatureCheck]:
    rfc = json.loads((VECTORS / "rfc8032_ed25519.json").read_text())["vectors"]
    return ([(k, m, s) for _, k, m, s, _, _ in wycheproof_tests()] + speccheck_cases()
            + [(bytes.fromhex(v["public_key"]), bytes.fromhex(v["message"]),
                bytes.fromhex(v["signature"])) for v in rfc])


# -- the extension agrees with the pure path ----------------------------------------

@needs_native
def test_backends_agree_on_every_published_vector() -> None:
    assert NATIVE is not None
    checks = published_checks()
    assert len(checks) == 151 + 12 + 3
    pure = [verify_signature_cryptography(*check) for check in checks]
    assert [NATIVE.verify(*check) for check in checks] == pure
    assert NATIVE.verify_many(checks) == pure
    assert "".join("V" if NATIVE.verify(*c) else "X" for c in speccheck_cases()) == "XXVVXXXXXXXX"


@needs_native
def test_backends_agree_on_crafted_edge_cases() -> None:
    assert NATIVE is not None
    checks = crafted_checks()
    pure = [verify_signature_cryptography(*check) for check in checks]
    assert [NATIVE.verify(*check) for check in checks] == pure
    assert NATIVE.verify_many(checks) == pure
    assert pure[0] and pure.count(True) > 1 and pure.count(False) > 100


@needs_native
def test_mixed_order_a_and_r_verify_exactly_when_the_cofactorless_equation_holds() -> None:
    """Both paths accept a torsion component in A and R when [S]B = R + [k]A holds and
    refuse it when only the cofactored equation holds (what a cofactored batch
    verifier would accept)."""
    assert NATIVE is not None
    cases = mixed_order_signatures(64)
    assert {holds for _, holds in cases} == {True, False}
    for check, holds in cases:
        assert is_acceptable_public_key(check[0])
        assert verify_signature_cryptography(*check) == holds
        assert NATIVE.verify(*check) == holds


@needs_native
def test_small_order_keys_are_refused_by_both_key_rules() -> None:
    assert NATIVE is not None
    keys = [encode(t) for t in TORSION] + [(y | h).to_bytes(32, "little")
                                          for y in (P - 1, P, P + 1, 2**255 - 1, 0, 1, 2)
                                          for h in (0, 1 << 255)]
    keys += [KeyPair.derive("backends", i).public_key for i in range(8)]
    for key in keys:
        assert NATIVE.is_acceptable_public_key(key) == is_acceptable_public_key(key)
    assert not any(NATIVE.is_acceptable_public_key(encode(t)) for t in TORSION)


PAIRS = [KeyPair.derive("backends-property", i) for i in range(4)]


@needs_native
@given(index=st.integers(0, len(PAIRS) - 1), message=st.binary(max_size=96),
       mutations=st.lists(st.tuples(st.sampled_from("kms"), st.integers(0, 200),
                                    st.integers(0, 255)), max_size=3),
       resize=st.sampled_from([None, "truncate", "extend"]), key_bytes=st.binary(min_size=32,
                                                                               max_size=32))
def test_backends_agree_on_mutated_signatures(index: int, message: bytes,
                                              mutations: list[tuple[str, int, int]],
                                              resize: str | None, key_bytes: bytes) -> None:
    """Valid signatures with random bytes of the key, message or signature replaced
    (and sometimes a field cut or lengthened, or a random key): equal verdicts."""
    assert NATIVE is not None
    pair = PAIRS[index]
    fields = {"k": bytearray(pair.public_key), "m": bytearray(message),
              "s": bytearray(pair.sign(message))}
    for field, position, value in mutations:
        if fields[field]:
            fields[field][position % len(fields[field])] = value
    if resize == "truncate":
        fields["s"] = fields["s"][:-1]
    elif resize == "extend":
        fields["k"] = fields["k"] + b"\0"
    check = (bytes(fields["k"]), bytes(fields["m"]), bytes(fields["s"]))
    pure = verify_signature_cryptography(*check)
    assert NATIVE.verify(*check) == pure
    assert NATIVE.verify_many([check]) == [pure]
    if not mutations and resize is None:
        assert pure
    other = (key_bytes, check[1], check[2])
    assert NATIVE.verify(*other) == verify_signature_cryptography(*other)


@needs_native
def test_extension_takes_bytes_likes_and_verify_signature_never_raises_on_them() -> None:
    assert NATIVE is not None
    pair = KeyPair.derive("backends", 1)
    signature = pair.sign(b"m")
    assert NATIVE.verify(bytearray(pair.public_key), b"m", bytearray(signature))  # type: ignore[arg-type]
    assert verify_signature(memoryview(pair.public_key), memoryview(b"m"),  # type: ignore[arg-type]
                            memoryview(signature))  # type: ignore[arg-type]
    assert verify_signatures([(memoryview(pair.public_key), b"m", signature)]) == [True]  # type: ignore[list-item]


@needs_native
def test_verify_many_releases_the_gil_while_it_verifies() -> None:
    """While one thread is inside ``verify_many`` the calling thread keeps running
    Python (it could not if the GIL were held for the list)."""
    assert NATIVE is not None
    pair = KeyPair.derive("backends", 2)
    checks = [(pair.public_key, b"gil", pair.sign(b"gil"))] * 3000
    inside = threading.Event()
    done = threading.Event()
    verdicts: list[bool] = []

    def run() -> None:
        inside.set()
        verdicts.extend(NATIVE.verify_many(checks))  # type: ignore[union-attr]
        done.set()
    thread = threading.Thread(target=run)
    thread.start()
    assert inside.wait(10)
    spins = 0
    while not done.is_set():
        spins += 1
    thread.join(10)
    assert verdicts == [True] * len(checks)
    assert spins > 1000


# -- the fallback ------------------------------------------------------------------

def test_backend_is_chosen_once_and_named() -> None:
    """The module's choice is the environment's (``SHARDNET_VERIFY_BACKEND``) choice."""
    chosen = load_native()
    expected = crypto.BACKEND_NATIVE if chosen is not None else crypto.BACKEND_CRYPTOGRAPHY
    assert expected == crypto.VERIFY_BACKEND


def test_without_the_extension_auto_falls_back_and_native_is_an_error(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "shardnet_ed25519", None)  # import fails
    assert load_native("auto") is None
    assert load_native("cryptography") is None
    with pytest.raises(ImportError):
        load_native("native")
    with pytest.raises(ValueError, match="SHARDNET_VERIFY_BACKEND"):
        load_native("openssl")


def test_forced_fallback_verifies_by_the_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    """With the pure path forced, verify_signature and verify_signatures are OpenSSL's
    verdicts minus the unacceptable keys, on every vector and crafted case."""
    monkeypatch.setattr(crypto, "_native", None)
    calls = []
    real = crypto.verify_signature_cryptography

    def counted(key: bytes, message: bytes, signature: bytes) -> bool:
        calls.append(key)
        return real(key, message, signature)
    monkeypatch.setattr(crypto, "verify_signature_cryptography", counted)
    checks = published_checks() + crafted_checks()
    verdicts = [crypto.verify_signature(*check) for check in checks]
    assert crypto.verify_signatures(checks) == verdicts
    assert len(calls) == 2 * len(checks)  # every verdict came from the pure path
    assert "".join("V" if v else "X" for v in verdicts[151:163]) == "XXVVXXXXXXXX"


@pytest.mark.parametrize("forced", ["cryptography", "auto"])
def test_env_var_selects_the_backend_in_a_new_process(forced: str) -> None:
    code = ("from consensus.kernel import crypto; from tests.consensus.test_signature_vectors "
            "import speccheck_cases as c; print(crypto.VERIFY_BACKEND, ''.join("
            "'V' if crypto.verify_signature(*x) else 'X' for x in c()))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                         text=True, check=True, timeout=60,
                         env={"PATH": "/usr/bin:/bin", "SHARDNET_VERIFY_BACKEND": forced})
    expected = ("cryptography" if forced == "cryptography" or NATIVE is None
                else "ed25519-dalek")
    assert out.stdout.split() == [expected, "XXVVXXXXXXXX"]
