"""Which store a service opens: the one factory above both store implementations.

:mod:`whyrec.serve.store` (the interface and SQLite) and :mod:`whyrec.serve.store_pg`
(PostgreSQL, built on the first) never import this module, so the three form no loop.
"""

from __future__ import annotations

from whyrec.serve.settings import ServeSettings
from whyrec.serve.store import ServeStore, Store
from whyrec.serve.store_pg import PostgresStore  # psycopg is imported only when one opens


def open_store(settings: ServeSettings) -> Store:
    """The store ``settings`` name: PostgreSQL for a ``store_url``, else the SQLite file."""
    if settings.store_url is not None:
        return PostgresStore(
            settings.store_url.get_secret_value(),
            max_size=settings.store_pool_size,
            timeout=settings.store_timeout_s,
            retry_s=settings.store_check_s,
        )
    return ServeStore(settings.store_path(), synchronous=settings.sqlite_synchronous)
