"""Credentials at rest: encryption, the key's origin and file mode, rotation, masking, and proof that
the plaintext never reaches the database files (SQLite) or the stored rows (PostgreSQL)."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import threading
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import text
from sqlalchemy.engine import make_url

from hub import accounts, migrate
from hub.config import Config
from hub.db import Database
from hub.errors import ConfigurationError
from hub.models import Base, Organisation
from hub.secrets import CredentialBox, load_or_create_key, mask, mask_all
from tests.storage_fixtures import POSTGRES_URL, postgres_schema_url

SECRET = "sk_live_4f9a1c77e2b84d0c9e51-PLAINTEXT"
MARKER = "settings-marker-3b1f9c"  # stored in clear on purpose: proves the byte search can find things


def _config(instance: Path, secret_key: str | None = None) -> Config:
    return Config(instance_dir=instance, database_url="sqlite://", secret_key=secret_key)


# -- encryption --------------------------------------------------------------------------------


def test_round_trip() -> None:
    box = CredentialBox(Fernet.generate_key())
    credentials = {"client_id": "abc", "client_secret": SECRET, "nested": {"n": 1}}

    token = box.encrypt(credentials)

    assert SECRET.encode() not in token
    assert box.decrypt(token) == credentials
    assert box.encrypt(credentials) != token  # a fresh IV every time: equal secrets look different


def test_wrong_key_is_a_clear_configuration_error() -> None:
    token = CredentialBox(Fernet.generate_key()).encrypt({"password": SECRET})

    with pytest.raises(ConfigurationError, match="secret key has changed"):
        CredentialBox(Fernet.generate_key()).decrypt(token)


def test_rotation_with_comma_separated_keys() -> None:
    old, new = Fernet.generate_key(), Fernet.generate_key()
    token = CredentialBox(old).encrypt({"password": SECRET})
    both = CredentialBox(new + b"," + old)

    assert both.decrypt(token) == {"password": SECRET}  # the old key still reads
    rotated = both.rotate(token)
    assert CredentialBox(new).decrypt(rotated) == {"password": SECRET}
    with pytest.raises(ConfigurationError):
        CredentialBox(old).decrypt(both.encrypt({"password": SECRET}))  # the first key writes


def test_box_repr_hides_the_key() -> None:
    key = Fernet.generate_key()
    assert key.decode() not in repr(CredentialBox(key))


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (None, ""),
        ("", ""),
        ("hunter2", "••••"),
        ("fifteen-chars-!", "••••"),
        ("sixteen-chars-ab", "••••s-ab"),
        (SECRET, "••••TEXT"),
        (123456789012345678, "••••5678"),
    ],
)
def test_mask(value: object, shown: str) -> None:
    assert mask(value) == shown


def test_mask_all_never_contains_a_secret() -> None:
    masked = mask_all({"api_key": SECRET, "pin": "1234"})
    assert masked == {"api_key": "••••TEXT", "pin": "••••"}
    assert SECRET not in str(masked)


# -- the key -----------------------------------------------------------------------------------


def test_generated_key_file_is_private_and_reused(tmp_path: Path) -> None:
    instance = tmp_path / "instance"
    previous_umask = os.umask(0)  # even a permissive umask must not widen the file's mode
    try:
        key = load_or_create_key(_config(instance))
    finally:
        os.umask(previous_umask)

    key_file = instance / "secret.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert load_or_create_key(_config(instance)) == key
    Fernet(key)  # a valid key


def test_environment_key_wins_and_no_file_is_written(tmp_path: Path) -> None:
    env_key = Fernet.generate_key().decode()
    load_or_create_key(_config(tmp_path))  # a key file exists already

    assert load_or_create_key(_config(tmp_path, env_key)) == env_key.encode()


def test_environment_key_may_list_old_keys_for_rotation(tmp_path: Path) -> None:
    new, old = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    material = load_or_create_key(_config(tmp_path, f"{new}, {old}"))
    token = CredentialBox(old).encrypt({"a": "b"})
    assert CredentialBox(material).decrypt(token) == {"a": "b"}
    assert not (tmp_path / "secret.key").exists()


def test_invalid_environment_key_is_refused_without_echoing_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="not a Fernet key") as refused:
        load_or_create_key(_config(tmp_path, "not-a-real-key-value"))
    assert "not-a-real-key-value" not in str(refused.value)


def test_key_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    load_or_create_key(_config(tmp_path))
    (tmp_path / "secret.key").chmod(0o644)

    with pytest.raises(ConfigurationError, match="chmod 600"):
        load_or_create_key(_config(tmp_path))


def test_processes_starting_together_agree_on_one_key(tmp_path: Path) -> None:
    keys: list[bytes] = []
    start = threading.Barrier(8)

    def load() -> None:
        start.wait()
        keys.append(load_or_create_key(_config(tmp_path)))

    threads = [threading.Thread(target=load) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(keys) == 8 and len(set(keys)) == 1


# -- nothing in clear at rest ------------------------------------------------------------------


def _save_account_with_secret(database: Database, box: CredentialBox) -> int:
    with database.session() as session:
        organisation = Organisation(name="Brand", slug="brand")
        session.add(organisation)
        session.flush()
        account = accounts.create_account(
            session, organisation.id, "The Iconic", "iconic", "sandbox",
            {"user_id": "seller@example.com", "api_key": SECRET}, {"note": MARKER}, box, "admin@example.com",
        )
        accounts.update_credentials(session, account, {"api_key": SECRET + "-v2"}, box, "admin@example.com")
        accounts.activate(session, account, "admin@example.com")
        return account.id


def test_plaintext_never_reaches_the_sqlite_files(tmp_path: Path) -> None:
    database = Database(f"sqlite:///{tmp_path / 'channelhub.db'}")
    migrate.upgrade(database.engine)
    box = CredentialBox(Fernet.generate_key())
    account_id = _save_account_with_secret(database, box)

    files = [tmp_path / "channelhub.db", tmp_path / "channelhub.db-wal"]
    before_checkpoint = b"".join(path.read_bytes() for path in files if path.exists())
    with database.engine.connect() as connection:
        connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    after_checkpoint = b"".join(path.read_bytes() for path in files if path.exists())
    with database.session() as session:
        stored = accounts.account_credentials(session.get(accounts.ChannelAccount, account_id), box)
    database.dispose()

    for content in (before_checkpoint, after_checkpoint):
        assert MARKER.encode() in content  # the search does find what is stored in clear
        assert SECRET.encode() not in content
    assert stored["api_key"] == SECRET + "-v2"


def test_plaintext_never_reaches_postgresql_rows() -> None:
    with postgres_schema_url() as url:
        database = Database(url)
        migrate.upgrade(database.engine)
        box = CredentialBox(Fernet.generate_key())
        _save_account_with_secret(database, box)
        with database.engine.connect() as connection:
            # Every row of every table, cast to text: what a dump would show.
            dump = "\n".join(
                row[0]
                for table in Base.metadata.sorted_tables
                for row in connection.execute(text(f'SELECT CAST(t AS text) FROM "{table.name}" t'))
            )
            schema = connection.execute(text("SELECT current_schema()")).scalar_one()
        database.dispose()
        dump += _pg_dump(schema)

    assert MARKER in dump
    assert SECRET not in dump


def _pg_dump(schema: str) -> str:
    """The schema as pg_dump writes it, when the client is installed (the SELECT above suffices)."""
    if shutil.which("pg_dump") is None:
        return ""
    dsn = make_url(POSTGRES_URL).set(drivername="postgresql").render_as_string(hide_password=False)
    result = subprocess.run(
        ["pg_dump", "--data-only", f"--schema={schema}", f"--dbname={dsn}"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    if result.returncode != 0:  # e.g. a client older than the server: the SELECT still covers the rows
        return ""
    assert MARKER in result.stdout
    return result.stdout
