"""The service rule itself: skip outside CI, fail under CI=true."""

from __future__ import annotations

import pytest

from tests.services import service_missing, unavailable


def test_a_missing_service_skips_with_the_reason_outside_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="Redis is not reachable: refused"):
        unavailable("Redis", ConnectionError("refused"))


def test_a_missing_service_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="Chromium not found.*must run, not skip"):
        service_missing("Chromium not found at /usr/bin/chromium")
