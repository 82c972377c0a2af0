"""One embedded broker per test session (started only if a test asks for it)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tokentrail.runtime.broker import EmbeddedBroker


@pytest.fixture(scope="session")
def broker() -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker() as b:
        yield b
