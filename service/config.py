"""Settings, read from the environment exactly as API.md lists them.

Every secret may instead come from a file named by the same variable with
``_FILE`` appended (``SECRET_KEYS_FILE``, ``ADMIN_TOKEN_FILE``,
``METRICS_TOKEN_FILE``, ``DATABASE_URL_FILE``), which is how container
secrets are mounted.

``ADMIN_TOKEN`` and ``METRICS_TOKEN`` each hold one token or several,
separated by commas or line breaks, all accepted: a token is rotated by
adding the new one, moving its users over, then removing the old one.

``load_settings()`` is how commands read them: a value that does not validate
is a ``ConfigurationError`` whose one line names the environment variable
(``LOG_LEVEL: must be one of …``), never pydantic's list of field names.

Abuse limits (``RATE_LIMIT_*``) are written as the ``limits`` library parses
them (``20/minute``, ``100 per hour``, ``5/second``), or ``off``.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import limits
from pydantic import BeforeValidator, Field, SecretStr, ValidationError, field_validator
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./action-links.db"
DEFAULT_RETRY_SCHEDULE = (5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400)
MIN_SECRET_KEY_LENGTH = 32
PLACEHOLDER_SECRETS = frozenset({"changeme", "change-me", "secret", "dev", "test", "example"})

FILE_BACKED = ("SECRET_KEYS", "ADMIN_TOKEN", "METRICS_TOKEN", "DATABASE_URL")
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain"})
# Hosts `serve --host` may name that mean "this machine" to a browser on it.
EVERY_INTERFACE = frozenset({"", "0.0.0.0", "::"})
MIN_OPERATOR_TOKEN_LENGTH = 16
_TOKEN_SEPARATORS = re.compile(r"[,\s]+")
RATE_LIMIT_OFF = frozenset({"", "off", "none", "0"})


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


def _rate_limit(value: Any) -> Any:
    """``off`` (or empty) is None; anything else must parse as a rate limit of at least 1."""
    if value is None or not isinstance(value, str):
        return value
    text = value.strip()
    if text.lower() in RATE_LIMIT_OFF:
        return None
    try:
        item = limits.parse(text)
    except ValueError:
        raise ValueError("must be a rate limit such as 20/minute or 100 per hour, or off") from None
    if item.amount < 1:
        raise ValueError("allows nothing; write off to turn the limit off")
    return text


def _network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ValueError(f"{text!r} is not an IP address or network (CIDR)") from None


RateLimit = Annotated[str | None, BeforeValidator(_rate_limit)]
Networks = Annotated[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...], NoDecode]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore", populate_by_name=True)

    database_url: str = DEFAULT_DATABASE_URL
    secret_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    # `serve` sets it to the address it listens on when unset (listening_base_url).
    public_base_url: str = "http://127.0.0.1:8000"
    # Outside --dev, a plain-http PUBLIC_BASE_URL on a host that is not loopback needs this.
    allow_insecure_public_base_url: bool = False
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
    # Seconds between a dispatcher's looks at an outbox with nothing due (each wait is
    # jittered to between half and all of it); a retry is late by up to this much.
    webhook_poll_interval: float = Field(default=1.0, ge=0.05, le=60)
    # How long a delivery lease outlives WEBHOOK_TIMEOUT: the outcome is recorded within
    # it, and clock skew between machines is tolerated. A dead process's jobs wait this long.
    webhook_lease_grace: float = Field(default=5.0, ge=1, le=300)
    # Seconds a dispatcher's attempts in flight get to finish at shutdown; then its
    # leases are handed back.
    webhook_stop_grace: float = Field(default=2.0, ge=0, le=60)
    # PostgreSQL connections per process: a fixed pool; requests wait for a free one (5 s at most).
    database_pool_size: int = Field(default=10, ge=1, le=100)
    # How long a process may cache clients, keys and actions (API.md: at most 30 s).
    cache_ttl: float = Field(default=10.0, ge=0, le=30)
    # Seconds a client may take to send a request head before its connection is closed
    # (service/http_limits.py): slowloris' bound.
    http_head_timeout: float = Field(default=15.0, gt=0, le=300)
    # A directory of templates and style that replace the built-in people-facing pages'.
    pages_dir: Path | None = None
    # Abuse limits (README, "Abuse limits"): failures counted in the database, per client
    # address, across every process; mints per API key, in each process.
    rate_limit_auth_failures: RateLimit = "100/minute"
    rate_limit_link_failures: RateLimit = "600/minute"
    rate_limit_mints: RateLimit = None
    # Proxies whose X-Forwarded-For names the client (IPs or CIDRs, comma-separated).
    trusted_proxies: Networks = ()
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

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _split_networks(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(_network(part.strip()) for part in value.split(",") if part.strip())
        return value

    @field_validator("public_base_url")
    @classmethod
    def _origin(cls, value: str) -> str:
        """An absolute http(s) URL with a host; a path is allowed (a proxy's prefix)."""
        value = value.strip().rstrip("/")
        try:
            parts = urlsplit(value)
            _ = parts.port  # raises on a port that is not a number
        except ValueError:
            parts = urlsplit("")
        if (
            parts.scheme not in ("http", "https")
            or not parts.hostname
            or parts.username is not None
            or parts.query
            or parts.fragment
        ):
            raise ValueError("must be an absolute http(s) URL such as https://links.example.com")
        return value

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
        """Refuse to serve with missing or weak signing keys outside ``--dev``, with a
        ``PAGES_DIR`` that is not there (every page would quietly be the built-in one),
        or (outside ``--dev``) links that would travel in plain http across a network."""
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
        if self._plain_http_over_a_network() and not self.allow_insecure_public_base_url:
            raise ConfigurationError(
                f"PUBLIC_BASE_URL: {self.public_base_url} is plain http on a host that is not "
                "this machine, so every link would cross the network unencrypted: use https://, "
                "or set ALLOW_INSECURE_PUBLIC_BASE_URL=true"
            )

    def public_base_url_warning(self) -> str | None:
        """What ``serve`` says once about a base URL it accepts but should not keep."""
        if self.dev:
            return None
        if _is_loopback(urlsplit(self.public_base_url).hostname or ""):
            return (
                f"PUBLIC_BASE_URL is {self.public_base_url}: minted links only work on this "
                "machine; set PUBLIC_BASE_URL to the https:// address people reach"
            )
        if self._plain_http_over_a_network():
            return (
                f"PUBLIC_BASE_URL is plain http ({self.public_base_url}), allowed by "
                "ALLOW_INSECURE_PUBLIC_BASE_URL: links travel unencrypted"
            )
        return None

    def _plain_http_over_a_network(self) -> bool:
        parts = urlsplit(self.public_base_url)
        return parts.scheme == "http" and not _is_loopback(parts.hostname or "")

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
            "allow_insecure_public_base_url": self.allow_insecure_public_base_url,
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
            "webhook_poll_interval": self.webhook_poll_interval,
            "webhook_lease_grace": self.webhook_lease_grace,
            "webhook_stop_grace": self.webhook_stop_grace,
            "database_pool_size": self.database_pool_size,
            "cache_ttl": self.cache_ttl,
            "pages_dir": str(self.pages_dir) if self.pages_dir else None,
            "rate_limit_auth_failures": self.rate_limit_auth_failures or "off",
            "rate_limit_link_failures": self.rate_limit_link_failures or "off",
            "rate_limit_mints": self.rate_limit_mints or "off",
            "trusted_proxies": [str(network) for network in self.trusted_proxies],
            "dev": self.dev,
        }


def _is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def listening_base_url(host: str, port: int) -> str:
    """The URL of ``serve --host H --port P`` as a browser on this machine reaches it:
    ``http://127.0.0.1:P`` when it listens on every interface or on loopback."""
    if host in EVERY_INTERFACE or _is_loopback(host):
        host = "::1" if host == "::1" else "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def environment_name(field: str) -> str:
    """The environment variable a field of ``Settings`` is read from."""
    info = Settings.model_fields.get(field)
    alias = info.validation_alias if info is not None else None
    return alias if isinstance(alias, str) else field.upper()


def load_settings(**overrides: Any) -> Settings:
    """``Settings()`` from the environment; a bad value is a ``ConfigurationError``
    naming its variable."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigurationError(
            describe_errors(exc.errors(include_url=False), _variable, show_input=_not_secret)
        ) from None
    except SettingsError as exc:  # a value pydantic-settings could not even parse
        raise ConfigurationError(str(exc)) from None


def _variable(loc: Sequence[int | str]) -> str:
    return environment_name(str(loc[0])) if loc else "settings"


def _not_secret(loc: Sequence[int | str]) -> bool:
    return bool(loc) and environment_name(str(loc[0])) not in FILE_BACKED


def _n(bound: Any) -> str:
    return f"{bound:g}" if isinstance(bound, float) else str(bound)


_PHRASES: dict[str, Callable[[dict[str, Any]], str]] = {
    "literal_error": lambda ctx: f"must be one of {ctx['expected']}",
    "enum": lambda ctx: f"must be one of {ctx['expected']}",
    "less_than_equal": lambda ctx: f"must be at most {_n(ctx['le'])}",
    "less_than": lambda ctx: f"must be less than {_n(ctx['lt'])}",
    "greater_than_equal": lambda ctx: f"must be at least {_n(ctx['ge'])}",
    "greater_than": lambda ctx: f"must be more than {_n(ctx['gt'])}",
    "int_parsing": lambda ctx: "must be a whole number",
    "int_from_float": lambda ctx: "must be a whole number",
    "float_parsing": lambda ctx: "must be a number",
    "bool_parsing": lambda ctx: "must be true or false",
    "string_too_long": lambda ctx: f"must be at most {ctx['max_length']} characters",
    "string_too_short": lambda ctx: f"must be at least {ctx['min_length']} characters",
    "too_long": lambda ctx: f"must have at most {ctx['max_length']} entries",
    "string_pattern_mismatch": lambda ctx: f"must match {ctx['pattern']}",
    "missing": lambda ctx: "is required",
}


def describe_errors(
    errors: Sequence[ErrorDetails],
    name: Callable[[Sequence[int | str]], str],
    show_input: Callable[[Sequence[int | str]], bool] = lambda loc: True,
) -> str:
    """Pydantic's errors as one line a person can act on: ``NAME: what is wrong (got …)``.

    ``name`` turns an error's location into what the person typed (a variable,
    a flag); ``show_input`` says where the value may be repeated (never a secret).
    """
    parts = []
    for error in errors:
        loc = error["loc"]
        phrase = _PHRASES.get(error["type"])
        text = phrase(dict(error.get("ctx", {}))) if phrase else error["msg"]
        text = text.removeprefix("Value error, ")
        value = error.get("input")
        if show_input(loc) and isinstance(value, str | int) and len(str(value)) <= 80:
            text += f" (got {value!r})"
        parts.append(f"{name(loc)}: {text}")
    return "; ".join(parts)


def _tokens(secret: SecretStr | None) -> list[str]:
    if secret is None:
        return []
    return [token for token in _TOKEN_SEPARATORS.split(secret.get_secret_value()) if token]
