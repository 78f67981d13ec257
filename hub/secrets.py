"""Channel credentials encrypted at rest (Fernet), and masked whenever they are shown.

Where the key comes from:

- ``CHANNELHUB_SECRET_KEY`` (``Config.secret_key``) when set: one Fernet key, or several separated
  by commas for rotation. The first key encrypts; every key is tried for decryption.
- otherwise ``<instance>/secret.key``, generated on first use with mode 0600. A key file that the
  group or others can read is refused (like ssh refuses such a private key): whoever can read it
  can read every channel's credentials. The file may also hold several keys, one per line.

Losing the key loses the credentials (the admins re-enter them); changing it without listing the old
key second makes decryption fail with a ConfigurationError that says so.
"""

from __future__ import annotations

import json
import os
import stat
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from hub import defaults
from hub.config import Config
from hub.errors import ConfigurationError

MASK = "••••"
# Below this length even the last four characters would give away too large a share of the secret.
MIN_LENGTH_TO_SHOW_TAIL = 16
SHOWN_TAIL = 4

_GENERATE_HINT = "generate one with: python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'"


def load_or_create_key(config: Config) -> bytes:
    """The key material: ``CHANNELHUB_SECRET_KEY`` if set, else the instance key file (made once).

    The result may hold several comma-separated keys (rotation); pass it to :class:`CredentialBox`.
    """
    if config.secret_key:
        keys = parse_keys(config.secret_key, origin="CHANNELHUB_SECRET_KEY")
    else:
        keys = parse_keys(_read_or_create_key_file(key_path(config)), origin=str(key_path(config)))
    return b",".join(keys)


def key_path(config: Config) -> Path:
    return config.instance_dir / defaults.SECRET_KEY_FILENAME


def parse_keys(material: str | bytes, *, origin: str = "the secret key") -> list[bytes]:
    """Split key material on commas and whitespace and check each part is a Fernet key."""
    text = material.decode("ascii", "replace") if isinstance(material, bytes) else material
    keys = [part.encode("ascii") for part in text.replace(",", " ").split()]
    if not keys:
        raise ConfigurationError(f"{origin} holds no key; {_GENERATE_HINT}")
    for position, key in enumerate(keys, start=1):
        try:
            Fernet(key)
        except (ValueError, TypeError):
            # Never echo the value: it is (or is meant to be) a secret.
            raise ConfigurationError(
                f"{origin}: key {position} of {len(keys)} is not a Fernet key "
                f"(32 url-safe base64-encoded bytes); {_GENERATE_HINT}"
            ) from None
    return keys


def generate_key() -> bytes:
    return Fernet.generate_key()


def _read_or_create_key_file(path: Path) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        # O_EXCL: of two processes starting at once exactly one creates the key, the other reads it.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read_key_file(path)
    key = generate_key()
    with os.fdopen(fd, "wb") as handle:
        handle.write(key + b"\n")
        handle.flush()
        os.fsync(handle.fileno())
    return key


def _read_key_file(path: Path) -> bytes:
    _refuse_loose_permissions(path)
    # The creator may be between open and write; give it a moment rather than fail the start-up.
    for _ in range(50):
        content = path.read_bytes().strip()
        if content:
            return content
        time.sleep(0.02)
    raise ConfigurationError(f"the key file {path} is empty; delete it to generate a new key (stored credentials are then lost)")


def _refuse_loose_permissions(path: Path) -> None:
    if os.name != "posix":  # Windows has no mode bits to check; ACLs are the operator's job there
        return
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigurationError(
            f"the key file {path} is accessible to other users (mode {mode:04o}); "
            f"anyone who can read it can read every channel's credentials. Fix it with: chmod 600 {path}"
        )


class CredentialBox:
    """Encrypts a credentials dict to bytes for the database, and back.

    ``key`` is one Fernet key or several (a comma-separated bytes/str, or a list): the first
    encrypts, all decrypt, so an old key can stay listed second while credentials are re-encrypted.
    """

    def __init__(self, key: bytes | str | Iterable[bytes | str]) -> None:
        if isinstance(key, (bytes, str)):
            keys = parse_keys(key)
        else:
            keys = [k for part in key for k in parse_keys(part)]
        self._fernet = MultiFernet([Fernet(k) for k in keys])

    def __repr__(self) -> str:  # the default repr is harmless today; make sure it stays so
        return "CredentialBox(<keys hidden>)"

    def encrypt(self, credentials: Mapping[str, Any]) -> bytes:
        return self._fernet.encrypt(_to_json(credentials))

    def decrypt(self, token: bytes) -> dict[str, Any]:
        try:
            plaintext = self._fernet.decrypt(bytes(token))
        except InvalidToken:
            raise _key_changed() from None
        value = json.loads(plaintext)
        if not isinstance(value, dict):
            raise ConfigurationError("stored channel credentials are not a JSON object; re-enter them")
        return value

    def rotate(self, token: bytes) -> bytes:
        """Re-encrypt ``token`` with the first key (it may have been written with an older one)."""
        try:
            return self._fernet.rotate(bytes(token))
        except InvalidToken:
            raise _key_changed() from None


def _to_json(credentials: Mapping[str, Any]) -> bytes:
    if not isinstance(credentials, Mapping):
        raise TypeError(f"credentials must be a mapping, not {type(credentials).__name__}")
    return json.dumps(dict(credentials), sort_keys=True, separators=(",", ":")).encode("utf-8")


def _key_changed() -> ConfigurationError:
    return ConfigurationError(
        "cannot decrypt stored channel credentials: the secret key has changed since they were saved. "
        "Restore the previous key, or list it after the new one in CHANNELHUB_SECRET_KEY "
        "(new,old) to rotate, or re-enter the account's credentials."
    )


def mask(value: object) -> str:
    """A secret as the UI may show it: ``••••abcd`` for long secrets, ``••••`` for short ones.

    The mask has a fixed width so that it does not reveal the secret's length either.
    """
    if value is None:
        return ""
    text = str(value)
    if not text:
        return ""
    if len(text) < MIN_LENGTH_TO_SHOW_TAIL:
        return MASK
    return MASK + text[-SHOWN_TAIL:]


def mask_all(credentials: Mapping[str, Any]) -> dict[str, str]:
    """Every value masked: what a form or an API response shows for stored credentials."""
    return {name: mask(value) for name, value in credentials.items()}
