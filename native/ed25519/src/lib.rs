//! `shardnet_ed25519`: the signature validity rule of docs/PROTOCOL.md section 1
//! ("Signature validity"), compiled; `consensus/kernel/crypto.py` uses it when it imports.
//!
//! A signature `(R, S)` on message `M` under key `A` is valid when:
//! 1. `A` is 32 bytes and the signature 64;
//! 2. `A` is acceptable: its y (sign bit cleared) is canonical (`< p`) and not one of the
//!    small-order points' y (`is_acceptable_public_key` in crypto.py);
//! 3. `A` decodes to a curve point, `S < L`, and `[S]B - [k]A` encodes to exactly the
//!    bytes `R`, with `k = SHA-512(R || A || M) mod L` over the bytes as given:
//!    ed25519-dalek's cofactorless `VerifyingKey::verify` (not `verify_strict`, which
//!    also refuses small-order `R`; not batch verification, whose cofactored equation
//!    accepts what this one refuses). OpenSSL's `ED25519_verify` is the same check.

use std::borrow::Cow;

use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use pyo3::prelude::*;

/// p = 2^255 - 19, little endian.
#[rustfmt::skip]
const FIELD_P: [u8; 32] = [
    0xed, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f,
];

/// The y coordinates (little endian, canonical) of the 8 points of small order:
/// crypto.py's `SMALL_ORDER_Y` (libsodium's blacklist, canonical entries only).
#[rustfmt::skip]
const SMALL_ORDER_Y: [[u8; 32]; 5] = [
    [0; 32], // (+-1, 0), order 4
    [1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], // identity
    [
        0xec, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f,
    ], // (0, -1), order 2
    [
        0x26, 0xe8, 0x95, 0x8f, 0xc2, 0xb2, 0x27, 0xb0, 0x45, 0xc3, 0xf4, 0x89, 0xf2, 0xef, 0x98, 0xf0,
        0xd5, 0xdf, 0xac, 0x05, 0xd3, 0xc6, 0x33, 0x39, 0xb1, 0x38, 0x02, 0x88, 0x6d, 0x53, 0xfc, 0x05,
    ], // order 8
    [
        0xc7, 0x17, 0x6a, 0x70, 0x3d, 0x4d, 0xd8, 0x4f, 0xba, 0x3c, 0x0b, 0x76, 0x0d, 0x10, 0x67, 0x0f,
        0x2a, 0x20, 0x53, 0xfa, 0x2c, 0x39, 0xcc, 0xc6, 0x4e, 0xc7, 0xfd, 0x77, 0x92, 0xac, 0x03, 0x7a,
    ], // order 8
];

/// Step 2: canonical y, not small order. Decodes nothing.
fn is_acceptable(key: &[u8; 32]) -> bool {
    let mut y = *key;
    y[31] &= 0x7f;
    // y < p, comparing little-endian numbers from the most significant byte
    let canonical = y.iter().rev().cmp(FIELD_P.iter().rev()) == std::cmp::Ordering::Less;
    canonical && !SMALL_ORDER_Y.contains(&y)
}

fn check(key: &[u8], message: &[u8], signature: &[u8]) -> bool {
    let (Ok(key), Ok(signature)) = (<&[u8; 32]>::try_from(key), <&[u8; 64]>::try_from(signature))
    else {
        return false;
    };
    if !is_acceptable(key) {
        return false;
    }
    // from_bytes decompresses A (fails off the curve) and keeps the bytes for k
    let Ok(verifying_key) = VerifyingKey::from_bytes(key) else {
        return false;
    };
    // verify refuses S >= L (no "legacy_compatibility") and compares R as encoded
    verifying_key
        .verify(message, &Signature::from_bytes(signature))
        .is_ok()
}

/// True when `signature` is valid for `message` under `public_key`; false for any
/// wrong length. Verifies with the GIL released (the bytes are borrowed from immutable
/// `bytes` objects the caller holds, or copied from a `bytearray`).
#[pyfunction]
fn verify(py: Python<'_>, public_key: Cow<[u8]>, message: Cow<[u8]>, signature: Cow<[u8]>) -> bool {
    py.allow_threads(|| check(&public_key, &message, &signature))
}

/// `verify` on each `(public_key, message, signature)` of an iterable, in order. The
/// bytes are copied under the GIL, then all are verified with it released.
#[pyfunction]
fn verify_many(py: Python<'_>, checks: &Bound<'_, PyAny>) -> PyResult<Vec<bool>> {
    let mut owned: Vec<(Vec<u8>, Vec<u8>, Vec<u8>)> = Vec::new();
    for item in checks.try_iter()? {
        let (key, message, signature): (Bound<'_, PyAny>, Bound<'_, PyAny>, Bound<'_, PyAny>) =
            item?.extract()?;
        owned.push((
            key.extract::<Cow<[u8]>>()?.into_owned(),
            message.extract::<Cow<[u8]>>()?.into_owned(),
            signature.extract::<Cow<[u8]>>()?.into_owned(),
        ));
    }
    Ok(py.allow_threads(|| owned.iter().map(|(k, m, s)| check(k, m, s)).collect()))
}

/// Whether step 2 accepts `public_key` (for the tests: crypto.py's rule, compiled).
#[pyfunction]
fn is_acceptable_public_key(public_key: Cow<[u8]>) -> bool {
    <&[u8; 32]>::try_from(&*public_key).is_ok_and(is_acceptable)
}

#[pymodule]
fn shardnet_ed25519(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(verify, m)?)?;
    m.add_function(wrap_pyfunction!(verify_many, m)?)?;
    m.add_function(wrap_pyfunction!(is_acceptable_public_key, m)?)?;
    Ok(())
}
