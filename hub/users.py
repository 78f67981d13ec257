"""Organisations and the people who sign in to them.

Passwords are stored as salted scrypt hashes (werkzeug's, which Flask already brings), never as text.
"""

from __future__ import annotations

import re

from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash, generate_password_hash

from hub.errors import NotFound, ValidationError
from hub.events import emit
from hub.models import Organisation, Role, User

MIN_PASSWORD_LENGTH = 10
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{0,99}$")


def create_organisation(session: Session, name: str, slug: str, *, actor: str = "system") -> Organisation:
    if not name.strip():
        raise ValidationError({"name": ["must not be blank"]}, field="name")
    if not _SLUG.match(slug):
        raise ValidationError({"slug": ["use lower-case letters, digits and dashes"]}, field="slug")
    if session.scalar(select(Organisation).where(Organisation.slug == slug)):
        raise ValidationError({"slug": [f"an organisation called {slug!r} already exists"]}, field="slug")
    organisation = Organisation(name=name.strip(), slug=slug)
    session.add(organisation)
    session.flush()
    emit(session, organisation_id=organisation.id, kind="organisation.created", actor=actor,
         message=f"organisation {name} created")
    return organisation


def get_organisation(session: Session, slug: str) -> Organisation:
    organisation = session.scalar(select(Organisation).where(Organisation.slug == slug))
    if organisation is None:
        raise NotFound(f"no organisation called {slug!r}")
    return organisation


def create_user(
    session: Session, organisation: Organisation, email: str, password: str, *,
    role: Role | str = Role.VIEWER, name: str = "", actor: str = "system",
) -> User:
    email = email.strip().lower()
    _check_new_user(session, email, password)
    user = User(organisation_id=organisation.id, email=email, name=name, role=Role(role),
                password_hash=generate_password_hash(password))
    session.add(user)
    session.flush()
    emit(session, organisation_id=organisation.id, kind="user.created", actor=actor,
         message=f"user {email} created with role {user.role.value}")
    return user


# Checked against when no such user exists, so a sign-in takes as long for an unknown e-mail as
# for a known one and its timing does not reveal who has an account.
_DUMMY_HASH = generate_password_hash("channelhub-no-such-user")


def authenticate(session: Session, email: str, password: str) -> User | None:
    """The active user with this e-mail and password, or None (never saying which part was wrong)."""
    user = session.scalar(select(User).where(User.email == email.strip().lower()))
    matches = check_password_hash(user.password_hash if user else _DUMMY_HASH, password)
    if user is None or not user.active or not matches:
        return None
    return user


def set_password(session: Session, user: User, password: str) -> None:
    _check_password(password)
    user.password_hash = generate_password_hash(password)


def _check_new_user(session: Session, email: str, password: str) -> None:
    if not _EMAIL.match(email):
        raise ValidationError({"email": ["is not an e-mail address"]}, field="email")
    if session.scalar(select(User).where(User.email == email)):
        raise ValidationError({"email": ["a user with this e-mail already exists"]}, field="email")
    _check_password(password)


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValidationError({"password": [f"must be at least {MIN_PASSWORD_LENGTH} characters"]}, field="password")
