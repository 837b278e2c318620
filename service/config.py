"""Settings, read from the environment exactly as API.md lists them.

Every secret may instead come from a file named by the same variable with
``_FILE`` appended (``SECRET_KEYS_FILE``, ``ADMIN_TOKEN_FILE``,
``METRICS_TOKEN_FILE``, ``DATABASE_URL_FILE``), which is how container
secrets are mounted.

``ADMIN_TOKEN`` and ``METRICS_TOKEN`` each hold one token or several,
separated by commas or line breaks, all accepted: a token is rotated by
adding the new one, moving its users over, then removing the old one.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./action-links.db"
DEFAULT_RETRY_SCHEDULE = (5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400)
MIN_SECRET_KEY_LENGTH = 32
PLACEHOLDER_SECRETS = frozenset({"changeme", "change-me", "secret", "dev", "test", "example"})

FILE_BACKED = ("SECRET_KEYS", "ADMIN_TOKEN", "METRICS_TOKEN", "DATABASE_URL")
MIN_OPERATOR_TOKEN_LENGTH = 16
_TOKEN_SEPARATORS = re.compile(r"[,\s]+")


class ConfigurationError(Exception):
    """The environment cannot run the service; the message is one line for the operator."""


class FileSecretsSource(PydanticBaseSettingsSource):
    """Reads ``NAME_FILE`` for the secrets in FILE_BACKED; the plain variable wins if both."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for name in FILE_BACKED:
            path = os.environ.get(f"{name}_FILE")
            if path and name not in os.environ:
                try:
                    values[name.lower()] = Path(path).read_text(encoding="utf-8").strip()
                except OSError as exc:
                    raise ConfigurationError(f"cannot read {name}_FILE={path}: {exc}") from exc
        return values


class Settings(BaseSettings):
    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore", populate_by_name=True)

    database_url: str = DEFAULT_DATABASE_URL
    secret_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    public_base_url: str = "http://127.0.0.1:8000"
    admin_token: SecretStr | None = None
    metrics_token: SecretStr | None = None
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"
    log_format: Literal["json", "console"] = "json"
    redemption_retention_days: int = Field(default=90, ge=1)
    # Seconds between background purges in each process (0: off; `action-links purge` still works).
    purge_interval: float = Field(default=300.0, ge=0)
    webhook_timeout: float = Field(default=5.0, gt=0, le=60)
    webhook_retry_schedule: Annotated[list[float], NoDecode] = Field(
        default_factory=lambda: [float(s) for s in DEFAULT_RETRY_SCHEDULE]
    )
    # Run the webhook dispatcher inside each service process (off when it runs separately).
    webhook_dispatcher: bool = True
    # PostgreSQL connections per process: a fixed pool; requests wait for a free one (5 s at most).
    database_pool_size: int = Field(default=10, ge=1, le=100)
    # How long a process may cache clients, keys and actions (API.md: at most 30 s).
    cache_ttl: float = Field(default=10.0, ge=0, le=30)
    # A directory of templates and style that replace the built-in people-facing pages'.
    pages_dir: Path | None = None
    # Set by `serve --dev`; relaxes the secret checks and enables the demo pages.
    dev: bool = Field(default=False, validation_alias="ACTION_LINKS_DEV")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        assert isinstance(env_settings, EnvSettingsSource)
        return (init_settings, env_settings, FileSecretsSource(settings_cls))

    @field_validator("database_url")
    @classmethod
    def _async_driver(cls, value: str) -> str:
        """A plain ``postgresql://`` URL means asyncpg (API.md)."""
        value = value.strip()
        for prefix in ("postgresql://", "postgres://"):
            if value.startswith(prefix):
                return "postgresql+asyncpg://" + value[len(prefix) :]
        return value

    @field_validator("secret_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("webhook_retry_schedule", mode="before")
    @classmethod
    def _split_schedule(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [float(part) for part in value.split(",") if part.strip()]
        return value

    @field_validator("webhook_retry_schedule")
    @classmethod
    def _non_negative(cls, value: list[float]) -> list[float]:
        if any(delay < 0 for delay in value):
            raise ValueError("retry delays must be >= 0")
        return value

    @field_validator("public_base_url")
    @classmethod
    def _no_trailing_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @field_validator("pages_dir", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    def signing_keys(self) -> list[bytes]:
        return [key.get_secret_value().encode() for key in self.secret_keys]

    def admin_tokens(self) -> list[str]:
        """Every accepted admin token; none: the admin API is off."""
        return _tokens(self.admin_token)

    def metrics_tokens(self) -> list[str]:
        """Every token ``/metrics`` accepts; none: ``/metrics`` is open."""
        return _tokens(self.metrics_token)

    def check_serveable(self) -> None:
        """Refuse to serve with missing or weak signing keys outside ``--dev``, or with
        a ``PAGES_DIR`` that is not there (every page would quietly be the built-in one)."""
        if self.pages_dir is not None and not self.pages_dir.is_dir():
            raise ConfigurationError(f"PAGES_DIR={self.pages_dir} is not a directory")
        if not self.secret_keys:
            raise ConfigurationError(
                "SECRET_KEYS is not set: generate one with `action-links keygen`, "
                "or run `action-links serve --dev` for a local trial"
            )
        if self.dev:
            return
        for key in self.secret_keys:
            raw = key.get_secret_value()
            if raw.lower() in PLACEHOLDER_SECRETS or len(set(raw)) < 8:
                raise ConfigurationError("SECRET_KEYS holds a placeholder value; use keygen")
            if len(raw.encode()) < MIN_SECRET_KEY_LENGTH:
                raise ConfigurationError(
                    f"every key in SECRET_KEYS needs at least {MIN_SECRET_KEY_LENGTH} bytes"
                )
        for name, tokens in (
            ("ADMIN_TOKEN", self.admin_tokens()),
            ("METRICS_TOKEN", self.metrics_tokens()),
        ):
            for token in tokens:
                if token.lower() in PLACEHOLDER_SECRETS or len(token) < MIN_OPERATOR_TOKEN_LENGTH:
                    raise ConfigurationError(
                        f"{name} holds a token that is too short or a placeholder "
                        f"(>= {MIN_OPERATOR_TOKEN_LENGTH} chars)"
                    )

    def masked(self) -> dict[str, Any]:
        """The effective configuration, safe to log."""
        url = self.database_url
        if "@" in url:
            scheme, rest = url.split("://", 1)
            url = f"{scheme}://***@{rest.rsplit('@', 1)[1]}"
        return {
            "database_url": url,
            "secret_keys": f"{len(self.secret_keys)} key(s)",
            "public_base_url": self.public_base_url,
            "admin_api": "on" if self.admin_tokens() else "off",
            "admin_tokens": len(self.admin_tokens()),
            "metrics": "token" if self.metrics_tokens() else "open",
            "log_level": self.log_level,
            "log_format": self.log_format,
            "redemption_retention_days": self.redemption_retention_days,
            "purge_interval": self.purge_interval,
            "webhook_timeout": self.webhook_timeout,
            "webhook_retry_schedule": self.webhook_retry_schedule,
            "webhook_dispatcher": self.webhook_dispatcher,
            "database_pool_size": self.database_pool_size,
            "cache_ttl": self.cache_ttl,
            "pages_dir": str(self.pages_dir) if self.pages_dir else None,
            "dev": self.dev,
        }


def _tokens(secret: SecretStr | None) -> list[str]:
    if secret is None:
        return []
    return [token for token in _TOKEN_SEPARATORS.split(secret.get_secret_value()) if token]
