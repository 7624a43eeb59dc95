"""``simulator.float_text`` writes exactly what ``repr(round(x, n))`` writes, for every kind of float."""
from __future__ import annotations

import math
import random
import struct

import pytest

from simulator.float_text import money_repr, rounded_repr

PLACES = range(1, 15)


def _random_floats(count: int, seed: int) -> list[float]:
    """Floats of every magnitude a chain shows and beyond, as decimals and as raw bit patterns."""
    rng = random.Random(seed)
    values: list[float] = []
    for _ in range(count):
        values.append(rng.choice((-1.0, 1.0)) * 10.0 ** rng.uniform(-12, 18))
        # Values on a decimal grid near a rounding tie (x.xxx5), where rounding modes part.
        grid = rng.choice((1e-1, 1e-3, 1e-6, 1e-8, 1e-10))
        values.append((rng.randrange(-10**7, 10**7) + 0.5) * grid)
        bits = rng.getrandbits(64)
        raw = struct.unpack("<d", struct.pack("<Q", bits))[0]
        if math.isfinite(raw):
            values.append(raw)
    return values


EDGES = [0.0, -0.0, 1e-4, -1e-4, 9.99999e-5, 0.000099999999999, 0.00009999999, 0.00005, 0.5, 1.0, -1.0,
         2.5, 0.125, 1e7 - 1e-9, 1e7, 9999999.999999995, 1e15, 1e16, 123456.78901234567, 5e-324, 1.7976931348623157e308,
         0.1 + 0.2, 1 / 3, -2 / 3, 100000.000000005, 0.000123456789, 99999.99999999999]


@pytest.mark.parametrize("places", PLACES)
def test_rounded_repr_matches_the_builtin_pair_on_edges(places: int) -> None:
    for value in EDGES:
        assert rounded_repr(value, places) == repr(round(value, places)), (value, places)


@pytest.mark.parametrize("places", PLACES)
def test_rounded_repr_matches_the_builtin_pair_on_random_floats(places: int) -> None:
    for value in _random_floats(3000, seed=places):
        assert rounded_repr(value, places) == repr(round(value, places)), (value, places)


def test_non_finite_values_are_written_as_the_builtin_writes_them() -> None:
    for value in (math.inf, -math.inf):
        assert rounded_repr(value, 6) == repr(round(value, 6))
    assert rounded_repr(math.nan, 6) == "nan"


def test_money_repr_is_the_text_of_round_plus_zero() -> None:
    values = EDGES + [-1e-9, -4e-9, -5e-9, -6e-9] + _random_floats(3000, seed=99)
    for value in values:
        assert money_repr(value) == repr(round(value, 8) + 0.0), value
    assert money_repr(-1e-10) == "0.0"
