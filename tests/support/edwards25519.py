"""A little pure-Python edwards25519 for tests that craft points and signatures (the
small-order key rule, the agreement of the two signature paths): slow, affine, exact."""

from __future__ import annotations

P = 2**255 - 19
L = 2**252 + 27742317777372353535851937790883648493  # the prime subgroup's order
D = -121665 * pow(121666, P - 2, P) % P
IDENTITY = (0, 1)
Point = tuple[int, int]  # affine (x, y)


def add(a: Point, b: Point) -> Point:
    """Twisted Edwards addition on -x^2 + y^2 = 1 + d x^2 y^2 (complete for edwards25519)."""
    (x1, y1), (x2, y2) = a, b
    t = D * x1 * x2 * y1 * y2 % P
    x3 = (x1 * y2 + y1 * x2) * pow(1 + t, P - 2, P) % P
    y3 = (y1 * y2 + x1 * x2) * pow(1 - t, P - 2, P) % P
    return x3, y3


def mul(k: int, point: Point) -> Point:
    """k * point, double and add."""
    out: Point = IDENTITY
    while k:
        if k & 1:
            out = add(out, point)
        point = add(point, point)
        k >>= 1
    return out
