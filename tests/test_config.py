"""Configuration from the environment, with *_FILE secrets, and the checks before serving."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.config import ConfigurationError, Settings

STRONG = "k" * 10 + "0123456789abcdefghijklmnopqrstuvwxyz"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "DATABASE_URL",
        "SECRET_KEYS",
        "ADMIN_TOKEN",
        "METRICS_TOKEN",
        "PUBLIC_BASE_URL",
        "ACTION_LINKS_DEV",
        "PAGES_DIR",
    ):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(f"{name}_FILE", raising=False)


def test_defaults_are_the_embedded_ones() -> None:
    settings = Settings()
    assert settings.database_url == "sqlite+aiosqlite:///./action-links.db"
    assert settings.secret_keys == []
    assert settings.public_base_url == "http://127.0.0.1:8000"
    assert settings.admin_token is None
    assert settings.redemption_retention_days == 90
    assert settings.webhook_timeout == 5
    assert settings.webhook_retry_schedule[:3] == [5, 300, 1800]
    assert (settings.log_level, settings.log_format) == ("info", "json")


def test_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:p@db:5432/links")
    monkeypatch.setenv("SECRET_KEYS", f"old{STRONG}, new{STRONG}")
    monkeypatch.setenv("PUBLIC_BASE_URL", "https://links.example.com/")
    monkeypatch.setenv("WEBHOOK_RETRY_SCHEDULE", "1,2,3")
    monkeypatch.setenv("LOG_FORMAT", "console")
    settings = Settings()
    assert settings.database_url == "postgresql+asyncpg://u:p@db:5432/links"
    assert settings.signing_keys() == [f"old{STRONG}".encode(), f"new{STRONG}".encode()]
    assert settings.public_base_url == "https://links.example.com"
    assert settings.webhook_retry_schedule == [1, 2, 3]
    assert settings.log_format == "console"
    assert "u:p" not in str(settings.masked())


def test_file_variants(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "keys").write_text(f"{STRONG}\n")
    (tmp_path / "admin").write_text("admin-token-from-a-file\n")
    (tmp_path / "db").write_text("postgres://x@y/z\n")
    monkeypatch.setenv("SECRET_KEYS_FILE", str(tmp_path / "keys"))
    monkeypatch.setenv("ADMIN_TOKEN_FILE", str(tmp_path / "admin"))
    monkeypatch.setenv("DATABASE_URL_FILE", str(tmp_path / "db"))
    settings = Settings()
    assert settings.signing_keys() == [STRONG.encode()]
    assert settings.admin_token is not None
    assert settings.admin_token.get_secret_value() == "admin-token-from-a-file"
    assert settings.database_url == "postgresql+asyncpg://x@y/z"


def test_unreadable_file_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SECRET_KEYS_FILE", "/nonexistent/keys")
    with pytest.raises(ConfigurationError, match="SECRET_KEYS_FILE"):
        Settings()


def test_serving_needs_keys_unless_dev() -> None:
    with pytest.raises(ConfigurationError, match="SECRET_KEYS is not set"):
        Settings().check_serveable()


@pytest.mark.parametrize("weak", ["changeme", "short-key", "a" * 40])
def test_weak_keys_are_refused_outside_dev(weak: str) -> None:
    with pytest.raises(ConfigurationError):
        Settings(secret_keys=weak).check_serveable()
    Settings(secret_keys=weak, dev=True).check_serveable()


def test_strong_keys_serve() -> None:
    Settings(secret_keys=STRONG).check_serveable()
