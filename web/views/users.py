"""Users of the organisation (admins only): invite, change role, deactivate."""

from __future__ import annotations

from flask import Blueprint, flash, g, redirect, render_template, request, url_for
from sqlalchemy import select

from hub.errors import ValidationError
from hub.events import emit
from hub.models import Organisation, Role, User
from hub.users import create_user
from web.access import actor, allow, db, org_id, owned

bp = Blueprint("users", __name__, url_prefix="/users")


@bp.route("")
@allow("admin")
def index():  # type: ignore[no-untyped-def]
    users = db().scalars(select(User).where(User.organisation_id == org_id()).order_by(User.email)).all()
    return render_template("users.html", users=users, roles=[r.value for r in Role], errors={}, form={})


@bp.route("", methods=["POST"])
@allow("admin")
def create():  # type: ignore[no-untyped-def]
    organisation = db().get(Organisation, org_id())
    form = request.form
    try:
        create_user(db(), organisation, form.get("email", ""), form.get("password", ""),
                    role=form.get("role", "viewer") if form.get("role") in {r.value for r in Role} else "viewer",
                    name=form.get("name", ""), actor=actor())
    except ValidationError as error:
        db().rollback()
        users = db().scalars(select(User).where(User.organisation_id == org_id()).order_by(User.email)).all()
        kept = {k: v for k, v in form.items() if k != "password"}
        return render_template("users.html", users=users, roles=[r.value for r in Role], errors=error.messages, form=kept), 400
    db().commit()
    flash(f"User {form.get('email')} created.", "ok")
    return redirect(url_for("users.index"))


@bp.route("/<int:user_id>", methods=["POST"])
@allow("admin")
def update(user_id: int):  # type: ignore[no-untyped-def]
    user = owned(User, user_id)
    role, active = request.form.get("role", user.role.value), request.form.get("active") == "on"
    if user.id == g.user.id and (role != Role.ADMIN.value or not active):
        flash("You cannot demote or deactivate yourself: ask another admin, so the organisation keeps one.", "error")
        return redirect(url_for("users.index"))
    if role not in {r.value for r in Role}:
        flash(f"Unknown role {role!r}.", "error")
        return redirect(url_for("users.index"))
    user.role, user.active = Role(role), active
    emit(db(), organisation_id=user.organisation_id, kind="user.changed", actor=actor(),
         message=f"user {user.email}: role {role}, {'active' if active else 'deactivated'}",
         data={"user_id": user.id, "role": role, "active": active})
    db().commit()
    flash(f"{user.email} saved.", "ok")
    return redirect(url_for("users.index"))
