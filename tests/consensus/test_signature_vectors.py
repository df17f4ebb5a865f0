"""The signature validity rule (docs/PROTOCOL.md section 1, "Signature validity"; issue 16)
held to published vectors, and the threaded path held to the single one.

Vectors in tests/consensus/vectors/ (see its README.md for sources and licences):

- ``speccheck_cases.txt``: the 12 edge cases of "Taming the many EdDSAs" (Chalkias,
  Garillot, Nikolaenko, 2020), novifinancial/ed25519-speccheck ``cases.txt``;
- ``wycheproof_ed25519_test.json``: Wycheproof's Ed25519 verification vectors (151);
- ``rfc8032_ed25519.json``: RFC 8032 section 7.1, TEST 1-3 (with their secret keys).

The rule is OpenSSL's verdict (the ``cryptography`` package) minus the keys
``is_acceptable_public_key`` refuses; these tests pin both halves, so an OpenSSL that
changes its mind, or a key rule that drifts, fails here by case number.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from consensus.kernel.crypto import (
    SMALL_ORDER_Y,
    KeyPair,
    SignatureCheck,
    is_acceptable_public_key,
    verify_signature,
    verify_signatures,
)
from node.verify_pool import VERIFY_PARALLEL_MIN, VerifyPool, chunk_bounds

VECTORS = Path(__file__).parent / "vectors"
L = 2**252 + 27742317777372353535851937790883648493  # the order of the base point
P = 2**255 - 19


def openssl_accepts(key: bytes, message: bytes, signature: bytes) -> bool:
    """OpenSSL alone, without our key rule."""
    try:
        Ed25519PublicKey.from_public_bytes(key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


def speccheck_cases() -> list[SignatureCheck]:
    lines = (VECTORS / "speccheck_cases.txt").read_text().split()
    count = int(lines[0])
    fields = [bytes.fromhex(line.split("=", 1)[1]) for line in lines[1:]]
    cases = [(fields[3 * i + 1], fields[3 * i], fields[3 * i + 2]) for i in range(count)]
    assert len(cases) == 12
    return cases


# The paper's table (and the repository's results.md), row "OpenSSL-3.0" = row "PyCA":
# V V V V X X X X X X X V. What each case is (the paper, section 5):
#  0  S = 0, small-order A and R                       1  0 < S < L, small A, mixed R
#  2  0 < S < L, mixed A, small R                      3  mixed A and R, cofactorless ok
#  4  mixed A and R, only the cofactored equation ok   5  as 4, with k reduced mod L first
#  6  S > L                                            7  S >> L
#  8  non-canonical R (-0 encoding of a small point)   9  as 8, other message
# 10  non-canonical A (y = p - 1 with x = -0)          11  as 10, passes OpenSSL
SPECCHECK_OPENSSL = "VVVVXXXXXXXV"
# Ours: OpenSSL's, minus 0, 1 (small-order A) and 11 (small-order A, non-canonical x).
SPECCHECK_OURS = "XXVVXXXXXXXX"


@pytest.mark.parametrize("case", range(12))
def test_speccheck_case_verdict_is_openssl_minus_unacceptable_keys(case: int) -> None:
    key, message, signature = speccheck_cases()[case]
    assert openssl_accepts(key, message, signature) == (SPECCHECK_OPENSSL[case] == "V")
    assert verify_signature(key, message, signature) == (SPECCHECK_OURS[case] == "V")
    # The one rule: ours is OpenSSL's, except for the keys anyone can sign for.
    assert verify_signature(key, message, signature) == (
        openssl_accepts(key, message, signature) and is_acceptable_public_key(key))


def test_speccheck_small_order_keys_are_the_ones_refused() -> None:
    """Cases 0, 1, 10, 11 carry a small-order A (y in the blacklist): refused whatever
    the signature; the mixed-order keys of 2-9 pass the key rule."""
    verdicts = [is_acceptable_public_key(key) for key, _, _ in speccheck_cases()]
    assert verdicts == [False, False] + [True] * 8 + [False, False]
    y = int.from_bytes(speccheck_cases()[10][0], "little") & ~(1 << 255)
    assert y == P - 1 and y in SMALL_ORDER_Y


def test_speccheck_s_above_l_is_refused_by_openssl() -> None:
    """Cases 6 and 7: S >= L never verifies (RFC 8032 5.1.7's range check)."""
    for case in (6, 7):
        key, message, signature = speccheck_cases()[case]
        assert int.from_bytes(signature[32:], "little") >= L
        assert not verify_signature(key, message, signature)


def wycheproof_tests() -> list[tuple[int, bytes, bytes, bytes, str, list[str]]]:
    data = json.loads((VECTORS / "wycheproof_ed25519_test.json").read_text())
    out = []
    for group in data["testGroups"]:
        key = bytes.fromhex(group["publicKey"]["pk"])
        for test in group["tests"]:
            out.append((test["tcId"], key, bytes.fromhex(test["msg"]),
                        bytes.fromhex(test["sig"]), test["result"], test["flags"]))
    assert len(out) == data["numberOfTests"] == 151
    return out


def test_wycheproof_every_vector_gets_its_published_result() -> None:
    """All 151: valid ones verify, invalid ones (bad encodings, S + kL, modified R bits,
    truncated or padded signatures) do not; no Wycheproof key is small order."""
    wrong = [(tc_id, result) for tc_id, key, message, signature, result, _ in wycheproof_tests()
             if verify_signature(key, message, signature) != (result == "valid")]
    assert wrong == []
    assert all(is_acceptable_public_key(key) for _, key, *_ in wycheproof_tests())


def test_wycheproof_s_plus_multiples_of_l_is_refused() -> None:
    malleable = [t for t in wycheproof_tests() if "SignatureMalleability" in t[5]]
    assert len(malleable) == 8
    for _, key, message, signature, result, _ in malleable:
        assert result == "invalid" and not verify_signature(key, message, signature)


def test_rfc8032_vectors_sign_and_verify() -> None:
    vectors = json.loads((VECTORS / "rfc8032_ed25519.json").read_text())["vectors"]
    assert [v["name"] for v in vectors] == ["TEST 1", "TEST 2", "TEST 3"]
    for vector in vectors:
        key = bytes.fromhex(vector["public_key"])
        message, signature = bytes.fromhex(vector["message"]), bytes.fromhex(vector["signature"])
        pair = KeyPair(bytes.fromhex(vector["secret_key"]))
        assert pair.public_key == key
        assert pair.sign(message) == signature  # Ed25519 signing is deterministic
        assert verify_signature(key, message, signature)
        assert not verify_signature(key, message + b"\x00", signature)


# -- crafted cases: what OpenSSL does with non-canonical S and R, from a test --------

def test_non_canonical_s_is_refused_by_openssl() -> None:
    """S + L encodes the same scalar mod L: OpenSSL checks S < L and refuses it (so a
    signature is not malleable through S)."""
    pair = KeyPair.derive("vectors", 0)
    for index in range(64):
        message = index.to_bytes(2, "big")
        signature = pair.sign(message)
        s = int.from_bytes(signature[32:], "little")
        if s + L < 2**256:
            break
    forged = signature[:32] + (s + L).to_bytes(32, "little")
    assert verify_signature(pair.public_key, message, signature)
    assert not openssl_accepts(pair.public_key, message, forged)
    assert not verify_signature(pair.public_key, message, forged)


def test_non_canonical_r_is_refused_by_openssl() -> None:
    """OpenSSL compares R as encoded with the (canonical) encoding of [S]B - [k]A, so
    another encoding of the same point never verifies. Speccheck cases 8 and 9 are
    crafted so that everything but that holds: R is the point (0, -1) written with the
    sign bit set (x = -0); libraries that decode R and compare points accept them
    (ed25519-java, TweetNaCl, python-ed25519: the paper's table), OpenSSL does not.
    Flipping R's sign bit on an honest signature (the encoding of -R) is refused too."""
    for case in (8, 9):
        key, message, signature = speccheck_cases()[case]
        r_y = int.from_bytes(signature[:32], "little") & ~(1 << 255)
        assert r_y == P - 1 and signature[31] & 0x80  # x = 0 with the sign bit set: -0
        assert is_acceptable_public_key(key)
        assert not openssl_accepts(key, message, signature)
        assert not verify_signature(key, message, signature)
    pair = KeyPair.derive("vectors", 1)
    message = b"R with its sign bit flipped"
    signature = pair.sign(message)
    flipped = signature[:31] + bytes((signature[31] ^ 0x80,)) + signature[32:]
    assert verify_signature(pair.public_key, message, signature)
    assert not verify_signature(pair.public_key, message, flipped)


def test_mixed_order_key_with_valid_signature_verifies_cofactorless() -> None:
    """Case 3: a key with a torsion component is acceptable (it is not small order) and
    a signature satisfying the cofactorless equation verifies; case 4 satisfies only
    the cofactored equation and is refused. A cofactored batch verifier would accept
    case 4, so it cannot stand in for this rule (docs/PROTOCOL.md)."""
    cases = speccheck_cases()
    assert verify_signature(*cases[3])
    assert not verify_signature(*cases[4])


# -- the threaded path equals the single one ----------------------------------------

def mixed_checks(seed: int, count: int) -> tuple[list[SignatureCheck], list[bool]]:
    """Valid, forged, wrong-message, small-order-key, malformed and vector signatures in
    a random order, with the verdict each must get."""
    rng = random.Random(seed)
    pairs = [KeyPair.derive("mix", i) for i in range(8)]
    vectors = [(k, m, s) for _, k, m, s, _, _ in wycheproof_tests()] + speccheck_cases()
    small_key = (1).to_bytes(32, "little")  # the identity: (R = identity, S = 0) signs all
    checks: list[SignatureCheck] = []
    for _ in range(count):
        kind = rng.randrange(6)
        pair = rng.choice(pairs)
        message = rng.randbytes(rng.randrange(0, 80))
        if kind == 0:
            checks.append((pair.public_key, message, pair.sign(message)))
        elif kind == 1:
            signature = bytearray(pair.sign(message))
            signature[rng.randrange(64)] ^= 1 << rng.randrange(8)
            checks.append((pair.public_key, message, bytes(signature)))
        elif kind == 2:
            checks.append((pair.public_key, message + b"!", pair.sign(message)))
        elif kind == 3:
            checks.append((small_key, message, small_key + bytes(32)))
        elif kind == 4:
            checks.append((pair.public_key, message, pair.sign(message)[: rng.randrange(64)]))
        else:
            checks.append(rng.choice(vectors))
    return checks, verify_signatures(checks)


@pytest.mark.parametrize("threads", [2, 3, 8])
def test_threaded_verify_many_equals_single_verify_in_order(threads: int) -> None:
    checks, expected = mixed_checks(seed=threads, count=400)
    assert True in expected and False in expected
    assert expected == [verify_signature(*check) for check in checks]
    pool = VerifyPool(threads)
    try:
        assert pool.verify_many(checks) == expected
        # and for every prefix length around the inline / threaded boundary
        for count in (0, 1, VERIFY_PARALLEL_MIN - 1, VERIFY_PARALLEL_MIN, 97):
            assert pool.verify_many(checks[:count]) == expected[:count]
    finally:
        pool.close()


def test_identity_key_forgery_is_refused_on_every_path() -> None:
    """(A = identity, R = identity, S = 0) is accepted by OpenSSL for every message; the
    key rule refuses it on the single path and on the threaded one."""
    identity = (1).to_bytes(32, "little")
    forged = identity + bytes(32)
    assert openssl_accepts(identity, b"any message", forged)
    checks = [(identity, i.to_bytes(4, "big"), forged) for i in range(2 * VERIFY_PARALLEL_MIN)]
    pool = VerifyPool(2)
    try:
        assert pool.verify_many(checks) == [False] * len(checks)
    finally:
        pool.close()


def test_chunk_bounds_cover_the_batch_in_order() -> None:
    for count in (1, 2, 31, 32, 33, 100, 1000):
        for chunks in (1, 2, 3, 7, 64):
            bounds = chunk_bounds(count, chunks)
            assert [i for start, stop in bounds for i in range(start, stop)] == list(range(count))
            sizes = [stop - start for start, stop in bounds]
            assert max(sizes) - min(sizes) <= 1 and len(bounds) == min(chunks, count)


def test_a_closed_pool_still_verifies_on_the_callers_thread() -> None:
    checks, expected = mixed_checks(seed=99, count=2 * VERIFY_PARALLEL_MIN)
    pool = VerifyPool(2)
    pool.close()
    assert pool.verify_many(checks) == expected


def test_verify_pool_refuses_zero_threads() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        VerifyPool(0)


def test_threaded_path_agrees_with_the_single_one_on_every_vector() -> None:
    """Every published vector (Wycheproof, speccheck, RFC 8032) in one batch on 3 threads:
    the verdicts are the single path's, in order."""
    rfc = json.loads((VECTORS / "rfc8032_ed25519.json").read_text())["vectors"]
    checks = ([(k, m, s) for _, k, m, s, _, _ in wycheproof_tests()] + speccheck_cases()
              + [(bytes.fromhex(v["public_key"]), bytes.fromhex(v["message"]),
                  bytes.fromhex(v["signature"])) for v in rfc])
    assert len(checks) == 151 + 12 + 3
    pool = VerifyPool(3)
    try:
        assert pool.verify_many(checks) == [verify_signature(*check) for check in checks]
    finally:
        pool.close()
