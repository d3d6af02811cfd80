from __future__ import annotations

import os

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """These need a daemon with isolated state and a guest image: run them through
    tests/run-integration.sh (`make sdk-test`), which sets that up."""
    if os.environ.get("BANGER_SDK_INTEGRATION") == "1":
        return
    skip = pytest.mark.skip(reason="needs a real daemon and VMs: run sdk/python/tests/run-integration.sh")
    for item in items:
        item.add_marker(skip)
