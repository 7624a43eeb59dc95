"""Fixtures shared by the unit tests."""
from __future__ import annotations

import pytest
import responses


@pytest.fixture
def rsps():
    """A ``responses`` mock of the HTTP edge: no request leaves the process."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock
