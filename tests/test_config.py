"""Configuration from the environment, with *_FILE secrets, and the checks before serving."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from service.config import ConfigurationError, Settings, listening_base_url, load_settings
from service.state import AppState

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
        "ALLOW_INSECURE_PUBLIC_BASE_URL",
        "LOG_LEVEL",
        "WEBHOOK_TIMEOUT",
        "WEBHOOK_POLL_INTERVAL",
        "WEBHOOK_LEASE_GRACE",
        "WEBHOOK_STOP_GRACE",
        "RATE_LIMIT_AUTH_FAILURES",
        "RATE_LIMIT_LINK_FAILURES",
        "RATE_LIMIT_MINTS",
        "TRUSTED_PROXIES",
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
    # The dispatcher's timing, as it was before it could be set.
    assert (settings.webhook_poll_interval, settings.webhook_lease_grace) == (1, 5)
    assert settings.webhook_stop_grace == 2
    assert (settings.log_level, settings.log_format) == ("info", "json")
    assert settings.rate_limit_auth_failures == "100/minute"
    assert settings.rate_limit_link_failures == "600/minute"
    assert settings.rate_limit_mints is None  # off: see the README's "Abuse limits"
    assert settings.trusted_proxies == ()


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


def test_abuse_limits_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RATE_LIMIT_AUTH_FAILURES", "20 per hour")
    monkeypatch.setenv("RATE_LIMIT_LINK_FAILURES", "off")
    monkeypatch.setenv("RATE_LIMIT_MINTS", "100000/minute")
    monkeypatch.setenv("TRUSTED_PROXIES", "10.0.0.0/8, 192.0.2.7")
    settings = Settings()
    assert settings.rate_limit_auth_failures == "20 per hour"
    assert settings.rate_limit_link_failures is None
    assert settings.rate_limit_mints == "100000/minute"
    assert [str(n) for n in settings.trusted_proxies] == ["10.0.0.0/8", "192.0.2.7/32"]
    assert settings.masked()["rate_limit_link_failures"] == "off"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("RATE_LIMIT_AUTH_FAILURES", "lots"),
        ("RATE_LIMIT_MINTS", "0/minute"),
        ("TRUSTED_PROXIES", "10.0.0.0/8, the load balancer"),
    ],
)
def test_a_limit_that_does_not_parse_is_refused(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=name.lower()):
        Settings()


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


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        (
            "LOG_LEVEL",
            "verbose",
            "LOG_LEVEL: must be one of 'critical', 'error', 'warning', 'info' or 'debug' "
            "(got 'verbose')",
        ),
        ("WEBHOOK_TIMEOUT", "soon", "WEBHOOK_TIMEOUT: must be a number (got 'soon')"),
        ("WEBHOOK_TIMEOUT", "600", "WEBHOOK_TIMEOUT: must be at most 60 (got '600')"),
        (
            "WEBHOOK_POLL_INTERVAL",
            "0",
            "WEBHOOK_POLL_INTERVAL: must be at least 0.05 (got '0')",
        ),
        ("WEBHOOK_LEASE_GRACE", "0.5", "WEBHOOK_LEASE_GRACE: must be at least 1 (got '0.5')"),
        ("WEBHOOK_STOP_GRACE", "-1", "WEBHOOK_STOP_GRACE: must be at least 0 (got '-1')"),
        ("WEBHOOK_STOP_GRACE", "61", "WEBHOOK_STOP_GRACE: must be at most 60 (got '61')"),
        ("ACTION_LINKS_DEV", "maybe", "ACTION_LINKS_DEV: must be true or false (got 'maybe')"),
        (
            "PUBLIC_BASE_URL",
            "links.example.com",
            "PUBLIC_BASE_URL: must be an absolute http(s) URL such as https://links.example.com "
            "(got 'links.example.com')",
        ),
    ],
)
def test_a_bad_setting_is_named_by_its_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, message: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigurationError) as refused:
        load_settings()
    assert str(refused.value) == message


def test_a_bad_secret_is_named_but_never_repeated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_POOL_SIZE", "0")
    with pytest.raises(ConfigurationError) as refused:
        load_settings(admin_token=31415926535897932384)
    message = str(refused.value)
    assert "ADMIN_TOKEN: " in message
    assert "31415926" not in message
    assert "DATABASE_POOL_SIZE: must be at least 1 (got '0')" in message


@pytest.mark.parametrize(
    ("host", "port", "url"),
    [
        ("127.0.0.1", 8000, "http://127.0.0.1:8000"),
        ("0.0.0.0", 8123, "http://127.0.0.1:8123"),
        ("localhost", 9000, "http://127.0.0.1:9000"),
        ("::", 8000, "http://127.0.0.1:8000"),
        ("::1", 8000, "http://[::1]:8000"),
        ("192.0.2.7", 8000, "http://192.0.2.7:8000"),
        ("links.internal", 80, "http://links.internal:80"),
    ],
)
def test_serve_links_to_where_it_listens(host: str, port: int, url: str) -> None:
    assert listening_base_url(host, port) == url


@pytest.mark.parametrize(
    "base", ["http://links.example.com", "http://10.0.0.5:8000", "http://[2001:db8::1]/links"]
)
def test_plain_http_across_a_network_is_refused_unless_allowed(base: str) -> None:
    with pytest.raises(ConfigurationError, match="ALLOW_INSECURE_PUBLIC_BASE_URL=true"):
        Settings(secret_keys=STRONG, public_base_url=base).check_serveable()
    allowed = Settings(
        secret_keys=STRONG, public_base_url=base, allow_insecure_public_base_url=True
    )
    allowed.check_serveable()
    assert "unencrypted" in (allowed.public_base_url_warning() or "")
    Settings(secret_keys=STRONG, public_base_url=base, dev=True).check_serveable()


@pytest.mark.parametrize(
    "base", ["http://127.0.0.1:8000", "http://localhost:8000", "http://[::1]", "https://localhost"]
)
def test_this_machine_is_accepted_with_a_warning(base: str) -> None:
    settings = Settings(secret_keys=STRONG, public_base_url=base)
    settings.check_serveable()
    assert "only work on this machine" in (settings.public_base_url_warning() or "")
    assert (
        Settings(secret_keys=STRONG, public_base_url=base, dev=True).public_base_url_warning()
        is None
    )


def test_https_elsewhere_is_said_nothing_about() -> None:
    settings = Settings(secret_keys=STRONG, public_base_url="https://links.example.com/base/")
    settings.check_serveable()
    assert settings.public_base_url == "https://links.example.com/base"
    assert settings.public_base_url_warning() is None


async def test_the_dispatchers_timing_is_what_the_settings_say(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("WEBHOOK_POLL_INTERVAL", "0.25")
    monkeypatch.setenv("WEBHOOK_LEASE_GRACE", "7.5")
    monkeypatch.setenv("WEBHOOK_STOP_GRACE", "0")
    monkeypatch.setenv("WEBHOOK_TIMEOUT", "3")
    settings = load_settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'links.db'}", secret_keys=STRONG
    )
    assert settings.masked()["webhook_lease_grace"] == 7.5
    state = AppState.build(settings)
    try:
        dispatcher = state.dispatcher
        assert (dispatcher.poll_interval, dispatcher.stop_grace) == (0.25, 0)
        now = datetime.now(UTC)
        assert dispatcher.deliverer.lease_until(now) == now + timedelta(seconds=3 + 7.5)
    finally:
        await state.close()
