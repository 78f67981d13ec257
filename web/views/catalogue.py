"""Catalogue: products and variants with filters, labels (by hand, CSV, rules), listing states,
unmatched and duplicate SKUs, and the product reset. Label logic is ``hub.labels``'s."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from sqlalchemy import String, and_, cast, exists, func, or_, select
from sqlalchemy.orm import selectinload

from hub import labels as labelling
from hub.errors import ValidationError
from hub.matching import NearMissIndex
from hub.models import (
    Binding, ChannelAccount, DuplicateSku, Label, LabelAssignment, LabelRule, Product, SyncRun, SyncRunItem, Variant,
)
from web import services
from web.access import actor, allow, db, org_id, owned

bp = Blueprint("catalogue", __name__, url_prefix="/catalogue")

PAGE = 50
SEARCH_MAX = 200  # longer search text matches nothing useful, and SQLite refuses LIKE patterns over 50,000 bytes
LISTING = "listing"


def _listing_binding(account_id: int) -> Any:
    # The listings flow binds a variant by its id or its SKU; both are accepted here.
    return and_(Binding.account_id == account_id, Binding.kind == LISTING,
                or_(Binding.internal_id == cast(Variant.id, String), Binding.internal_id == Variant.sku))


def product_query(args: Any) -> Any:
    """The organisation's products narrowed by the catalogue filters (shared with the API)."""
    query = select(Product).where(Product.organisation_id == org_id())
    text = (args.get("q") or "").strip()[:SEARCH_MAX]
    if text:
        like = f"%{text}%"
        query = query.where(or_(Product.title.ilike(like), Product.parent_sku.ilike(like),
                                Product.variants.any(Variant.sku.ilike(like))))
    for name in ("brand", "season"):
        if args.get(name):
            query = query.where(getattr(Product, name) == args.get(name))
    label_id = _int(args.get("label_id"))
    if label_id:
        query = query.where(Product.variants.any(Variant.id.in_(
            select(LabelAssignment.variant_id).where(LabelAssignment.label_id == label_id))))
    account_id, state = _int(args.get("account_id")), args.get("state", "")
    if account_id and state:
        bound = exists().where(_listing_binding(account_id))
        condition = {"listed": exists().where(_listing_binding(account_id), Binding.last_error.is_(None)),
                     "rejected": exists().where(_listing_binding(account_id), Binding.last_error.is_not(None)),
                     "unlisted": ~bound}.get(state)
        if condition is not None:
            query = query.where(Product.variants.any(condition))
    return query.order_by(Product.parent_sku)


def _int(value: Any) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _labels() -> list[Label]:
    return list(db().scalars(select(Label).where(Label.organisation_id == org_id())
                             .options(selectinload(Label.rules)).order_by(Label.name)))


def _distinct(column: Any) -> list[str]:
    return [v for v in db().scalars(select(column).where(Product.organisation_id == org_id()).distinct().order_by(column)) if v]


@bp.route("")
@allow("viewer")
def index():  # type: ignore[no-untyped-def]
    page = max(1, request.args.get("page", 1, type=int))
    products = db().scalars(product_query(request.args).options(selectinload(Product.variants))
                            .offset((page - 1) * PAGE).limit(PAGE)).all()
    variant_ids = [v.id for p in products for v in p.variants]
    assigned = _label_names(variant_ids)
    return render_template("catalogue/index.html", products=products, assigned=assigned, labels=_labels(),
                           brands=_distinct(Product.brand), seasons=_distinct(Product.season),
                           accounts=services.accounts_of(db(), org_id()), args=request.args, page=page, page_size=PAGE)


def _label_names(variant_ids: list[int]) -> dict[int, list[str]]:
    found: dict[int, list[str]] = {}
    if not variant_ids:
        return found
    rows = db().execute(select(LabelAssignment.variant_id, Label.name).join(Label)
                        .where(LabelAssignment.variant_id.in_(variant_ids)).order_by(Label.name))
    for variant_id, name in rows:
        found.setdefault(variant_id, []).append(name)
    return found


@bp.route("/products/<int:product_id>")
@allow("viewer")
def product(product_id: int):  # type: ignore[no-untyped-def]
    item = owned(Product, product_id)
    accounts = services.accounts_of(db(), org_id())
    keys = [str(v.id) for v in item.variants] + [v.sku for v in item.variants]
    bindings = db().scalars(select(Binding).where(Binding.kind == LISTING, Binding.internal_id.in_(keys),
                                                  Binding.account_id.in_([a.id for a in accounts]))).all()
    by_variant: dict[tuple[str, int], Binding] = {(b.internal_id, b.account_id): b for b in bindings}
    return render_template("catalogue/product.html", product=item, accounts=accounts, bindings=by_variant,
                           assigned=_label_names([v.id for v in item.variants]))


# -- labels ---------------------------------------------------------------------------------------


@bp.route("/labels")
@allow("viewer")
def labels():  # type: ignore[no-untyped-def]
    return render_template("catalogue/labels.html", labels=_labels(), rule_fields=labelling.RULE_FIELDS, report=None)


@bp.route("/labels", methods=["POST"])
@allow("admin")
def create_label():  # type: ignore[no-untyped-def]
    try:
        label = labelling.create_label(db(), org_id(), request.form.get("name", ""), actor=actor())
    except ValidationError as error:
        db().rollback()
        flash(str(error), "error")
        return redirect(url_for("catalogue.labels"))
    db().commit()
    flash(f"Label {label.name!r} ready.", "ok")
    return redirect(url_for("catalogue.labels"))


@bp.route("/labels/<int:label_id>/rules", methods=["POST"])
@allow("admin")
def add_rule(label_id: int):  # type: ignore[no-untyped-def]
    label = owned(Label, label_id)
    try:
        labelling.add_rule(db(), label, request.form.get("field", ""), request.form.get("value", ""), actor=actor())
    except ValidationError as error:
        db().rollback()
        flash(str(error), "error")
        return redirect(url_for("catalogue.labels"))
    db().commit()
    flash("Rule added; it applies on the next catalogue import.", "ok")
    return redirect(url_for("catalogue.labels"))


@bp.route("/rules/<int:rule_id>/delete", methods=["POST"])
@allow("admin")
def delete_rule(rule_id: int):  # type: ignore[no-untyped-def]
    rule = db().get(LabelRule, rule_id)
    if rule is None or rule.label.organisation_id != org_id():
        abort(404)
    labelling.remove_rule(db(), rule, actor=actor())
    db().commit()
    flash("Rule removed.", "ok")
    return redirect(url_for("catalogue.labels"))


@bp.route("/labels/import", methods=["POST"])
@allow("admin")
def import_csv():  # type: ignore[no-untyped-def]
    upload = request.files.get("file")
    data = upload.read() if upload else (request.form.get("csv") or "").encode()
    if not data.strip():
        flash("Choose a CSV file (columns sku,label[,action]) or paste its rows.", "error")
        return redirect(url_for("catalogue.labels"))
    try:
        report = labelling.import_csv(db(), org_id(), data, actor=actor())
    except UnicodeDecodeError:
        db().rollback()
        flash("The file is not UTF-8 text; export it from the spreadsheet as CSV UTF-8.", "error")
        return redirect(url_for("catalogue.labels"))
    db().commit()
    return render_template("catalogue/labels.html", labels=_labels(), rule_fields=labelling.RULE_FIELDS, report=report)


@bp.route("/labels/assign", methods=["POST"])
@allow("admin")
def assign():  # type: ignore[no-untyped-def]
    label = owned(Label, request.form.get("label_id", type=int) or 0)
    ids = [int(v) for v in request.form.getlist("variant_id") if v.isdigit()]
    skus = [s.strip() for s in (request.form.get("skus") or "").replace(",", "\n").splitlines() if s.strip()]
    variants = list(db().scalars(select(Variant).where(Variant.organisation_id == org_id(), Variant.id.in_(ids)))) if ids else []
    if not variants and not skus:
        flash("Tick some variants (or type SKUs) to label.", "error")
        return redirect(request.referrer or url_for("catalogue.index"))
    if request.form.get("remove"):
        changed, unknown = labelling.unassign(db(), label, variants, actor=actor()), []
    else:
        changed = labelling.assign(db(), label, variants, actor=actor())
        result = labelling.assign_skus(db(), label, skus, actor=actor()) if skus else None
        changed += result.added if result else 0
        unknown = result.unknown if result else []
    db().commit()
    verb = "taken off" if request.form.get("remove") else "given to"
    flash(f"Label {label.name!r} {verb} {changed} variant(s)." + (f" Unknown SKUs: {', '.join(unknown)}." if unknown else ""),
          "error" if unknown else "ok")
    return redirect(request.referrer or url_for("catalogue.index"))


# -- listing states, unmatched and duplicate SKUs, reset --------------------------------------------


@bp.route("/listings")
@allow("viewer")
def listings():  # type: ignore[no-untyped-def]
    accounts = services.accounts_of(db(), org_id())
    account_id = request.args.get("account_id", type=int) or (accounts[0].id if accounts else None)
    account = owned(ChannelAccount, account_id) if account_id else None
    rows: list[Binding] = []
    if account is not None:
        query = select(Binding).where(Binding.account_id == account.id, Binding.kind == LISTING)
        if request.args.get("state") == "rejected":
            query = query.where(Binding.last_error.is_not(None))
        rows = list(db().scalars(query.order_by(Binding.last_error.is_(None), Binding.internal_id).limit(500)))
    return render_template("catalogue/listings.html", accounts=accounts, account=account, rows=rows, args=request.args)


@bp.route("/duplicates")
@allow("viewer")
def duplicates():  # type: ignore[no-untyped-def]
    rows = db().scalars(select(DuplicateSku).where(DuplicateSku.organisation_id == org_id()).order_by(DuplicateSku.sku)).all()
    names = {a.id: a.name for a in services.accounts_of(db(), org_id())}
    return render_template("catalogue/duplicates.html", rows=rows, names=names)


@bp.route("/unmatched")
@allow("viewer")
def unmatched():  # type: ignore[no-untyped-def]
    """The latest product reset of each account: SKUs it could not match, with near-miss suggestions."""
    accounts = services.accounts_of(db(), org_id())
    index = NearMissIndex(db().scalars(select(Variant.sku).where(Variant.organisation_id == org_id())))
    sections = []
    for account in accounts:
        run = services.latest_run(db(), account.id, "reset")
        items = [] if run is None else db().scalars(select(SyncRunItem).where(
            SyncRunItem.run_id == run.id, SyncRunItem.outcome != "ok").order_by(SyncRunItem.key).limit(1000)).all()
        sections.append((account, run, [(item, index.suggest(item.key)) for item in items]))
    return render_template("catalogue/unmatched.html", sections=sections)


@bp.route("/reset", methods=["POST"])
@allow("operator")
def reset():  # type: ignore[no-untyped-def]
    account = owned(ChannelAccount, request.form.get("account_id", type=int) or 0)
    pending = db().scalar(select(func.count()).select_from(SyncRun).where(
        SyncRun.account_id == account.id, SyncRun.flow == "reset", SyncRun.finished_at.is_(None)))
    if pending:
        flash(f"A product reset of {account.name} is already queued or running.", "info")
        return redirect(url_for("catalogue.unmatched"))
    db().commit()
    run_id = services.enqueue(account.id, "reset")
    flash(f"Product reset of {account.name} queued (run {run_id}); its other flows pause while it runs.", "ok")
    return redirect(url_for("catalogue.unmatched"))
