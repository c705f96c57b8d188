"""PostgreSQL store URLs: recognised, split and shown without their password.

Both the settings (which check and display ``store_url``) and the PostgreSQL store
(which connects to it) use these; they import nothing of whyrec.serve, so neither has to
import the other.
"""

from __future__ import annotations

from whyrec.errors import ConfigError
from whyrec.safety import REDACTED, redact_secrets

SCHEMES = ("postgresql://", "postgres://")


def is_postgres_url(value: object) -> bool:
    """``value`` is a ``postgresql://`` (or ``postgres://``) URL."""
    return isinstance(value, str) and value.strip().lower().startswith(SCHEMES)


def url_parts(url: str) -> dict[str, str]:
    from psycopg.conninfo import conninfo_to_dict

    try:
        return {k: str(v) for k, v in conninfo_to_dict(url).items() if v is not None}
    except Exception as exc:
        # the parser's message may repeat the URL: keep the password out of it
        raise ConfigError(
            f"store_url: not a PostgreSQL URL ({redact_secrets(str(exc), password_of(url))}); "
            "expected postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE"
        ) from None


def password_of(url: str) -> list[str]:
    """The URL's password (for redaction), found without a full parse."""
    head = url.split("://", 1)[-1].split("/", 1)[0]
    if "@" in head:
        userinfo = head.rsplit("@", 1)[0]
        if ":" in userinfo:
            return [userinfo.split(":", 1)[1]]
    return []


def display_url(url: str) -> str:
    """The URL without its password (``[redacted]`` in its place) or other parameters."""
    p = url_parts(url)
    user = p.get("user", "")
    if "password" in p:
        user += ":" + REDACTED
    host = p.get("host", "")
    port = f":{p['port']}" if "port" in p else ""
    return f"postgresql://{user + '@' if user else ''}{host}{port}/{p.get('dbname', '')}"
