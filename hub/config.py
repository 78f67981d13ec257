"""Where the hub keeps its state and which services it talks to, read from the environment.

``CHANNELHUB_INSTANCE``      folder for the SQLite file and the generated secret key (default ./instance)
``CHANNELHUB_DATABASE_URL``  SQLAlchemy URL; default ``sqlite:///<instance>/channelhub.db``
``CHANNELHUB_REDIS_URL``     Redis for the RQ fleet; unset means the embedded runtime
``CHANNELHUB_SECRET_KEY``    Fernet key for channel credentials; unset means one generated into the instance folder
``CHANNELHUB_PLUGINS``       comma-separated plugin names to load; unset means all installed
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from hub import defaults


@dataclass(frozen=True)
class Config:
    instance_dir: Path
    database_url: str
    redis_url: str | None = None
    secret_key: str | None = None
    plugins: tuple[str, ...] | None = None
    extra: dict = field(default_factory=dict)

    @property
    def fleet(self) -> bool:
        """True when jobs go to RQ on Redis rather than the in-process pool."""
        return bool(self.redis_url)


def load_config(environ: dict[str, str] | None = None) -> Config:
    env = os.environ if environ is None else environ
    instance_dir = Path(env.get("CHANNELHUB_INSTANCE") or defaults.INSTANCE_DIR).resolve()
    database_url = env.get("CHANNELHUB_DATABASE_URL") or f"sqlite:///{instance_dir / defaults.SQLITE_FILENAME}"
    return Config(
        instance_dir=instance_dir,
        database_url=_normalise_database_url(database_url),
        redis_url=env.get("CHANNELHUB_REDIS_URL") or None,
        secret_key=env.get("CHANNELHUB_SECRET_KEY") or None,
        plugins=parse_plugin_list(env.get("CHANNELHUB_PLUGINS")),
    )


def parse_plugin_list(value: str | None) -> tuple[str, ...] | None:
    if value is None or not value.strip():
        return None
    return tuple(name.strip() for name in value.split(",") if name.strip())


def _normalise_database_url(url: str) -> str:
    # Operators paste Heroku-style URLs; SQLAlchemy needs the driver named to pick psycopg 3.
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url
