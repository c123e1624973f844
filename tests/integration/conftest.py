"""Every test in this folder starts real services (redis-server, moto's S3 server, the offline STS server, Celery
workers): they are all marked ``integration``, so ``pytest -m "not integration"`` is the fast lane."""

from __future__ import annotations

from pathlib import Path

import pytest

_HERE = Path(__file__).parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.integration)
