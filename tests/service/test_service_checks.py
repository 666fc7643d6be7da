"""The rule for missing services: skip locally, fail under CI=true."""

from __future__ import annotations

import pytest

from service.conftest import service_unavailable


def test_missing_service_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="Redis is unreachable"):
        service_unavailable("Redis", ConnectionError("refused"))


def test_missing_service_skips_outside_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="PostgreSQL is unreachable"):
        service_unavailable("PostgreSQL", ConnectionError("refused"))
