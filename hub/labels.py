"""Labels: which products a marketplace account lists.

An account lists exactly the variants that carry its label (ChannelAdvisor's model: a label is a
flexible tag, a variant may carry several). A label reaches a variant three ways, each recorded as
the assignment's ``source``:

- **manual**: an admin picks variants (or whole products) in the UI — :func:`assign`, :func:`unassign`;
- **csv**: an admin uploads ``sku,label[,action]`` rows — :func:`import_csv`; bad rows are reported
  by line number and every good row is kept;
- **rule**: "every product whose brand / season / tag / category is X" — :func:`add_rule`,
  :func:`apply_rules`, which the catalogue flow runs after every import.

Rules own only the assignments they made: :func:`apply_rules` adds and removes ``rule`` assignments
to match the rules, and never touches a manual or CSV one. An explicit assignment of a variant that a
rule also labels becomes manual/CSV, so it survives the rule being deleted.

:func:`select_variants` turns an account's label, its brand and season filters and the catalogue's
state (active, duplicate SKUs) into the list of variants the listings and stock flows work on.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, contains_eager, selectinload

from hub.db import chunked
from hub.errors import NotFound, ValidationError
from hub.events import emit
from hub.models import ChannelAccount, Label, LabelAssignment, LabelRule, Product, Variant

MANUAL, CSV, RULE = "manual", "csv", "rule"
RULE_FIELDS = ("brand", "season", "tag", "category")
CSV_ACTIONS = ("add", "remove")
CATEGORY_SEPARATOR = ">"  # "Women > Tops > Tees": a rule on "Women > Tops" matches it


# -- labels and assignments by hand ------------------------------------------------------------


def get_label(session: Session, organisation_id: int, name: str) -> Label | None:
    return session.scalar(select(Label).where(Label.organisation_id == organisation_id, Label.name == name.strip()))


LABEL_NAME_MAX = 100  # the column's length: refused here with a message, not by the database


def create_label(session: Session, organisation_id: int, name: str, *, actor: str = "system") -> Label:
    """A new label, or the existing one of that name."""
    name = (name or "").strip()
    if not name:
        raise ValidationError({"name": ["a label needs a name"]}, field="name")
    if len(name) > LABEL_NAME_MAX:
        raise ValidationError({"name": [f"at most {LABEL_NAME_MAX} characters"]}, field="name")
    label = get_label(session, organisation_id, name)
    if label is None:
        label = Label(organisation_id=organisation_id, name=name)
        session.add(label)
        session.flush()
        emit(session, organisation_id=organisation_id, kind="labels.created", actor=actor,
             message=f"label {name!r} created", data={"label_id": label.id})
    return label


def variants_for_keys(session: Session, organisation_id: int, keys: Iterable[str]) -> dict[str, list[Variant]]:
    """Each key resolved to variants: a variant SKU gives that variant, a parent SKU all its variants.

    Keys are matched exactly (SKUs are matched character for character everywhere in the hub);
    a key that matches nothing is absent from the result.
    """
    wanted = sorted({key for key in keys if key})
    found: dict[str, list[Variant]] = {}
    for chunk in chunked(wanted):
        for variant in session.scalars(
            select(Variant).where(Variant.organisation_id == organisation_id, Variant.sku.in_(chunk))
        ):
            found[variant.sku] = [variant]
        parents = [key for key in chunk if key not in found]
        if parents:
            query = (
                select(Product)
                .where(Product.organisation_id == organisation_id, Product.parent_sku.in_(parents))
                .options(selectinload(Product.variants))
            )
            for product in session.scalars(query):
                if product.variants:
                    found[product.parent_sku] = sorted(product.variants, key=lambda v: v.sku)
    return found


def assign(
    session: Session, label: Label, variants: Iterable[Variant], *, source: str = MANUAL, actor: str = "system"
) -> int:
    """Give ``label`` to ``variants``; returns how many did not have it yet."""
    variants = list(variants)
    existing = _assignments(session, label.id, [variant.id for variant in variants])
    added = 0
    for variant in variants:
        current = existing.get(variant.id)
        if current is None:
            assignment = LabelAssignment(label_id=label.id, variant_id=variant.id, source=source)
            session.add(assignment)
            existing[variant.id] = assignment
            added += 1
        elif current.source == RULE and source != RULE:
            current.source = source  # an explicit choice outlives the rule that happened to agree
    session.flush()
    if added and source != RULE:
        emit(session, organisation_id=label.organisation_id, kind="labels.assigned", actor=actor,
             message=f"label {label.name!r} given to {added} variant(s) ({source})",
             data={"label_id": label.id, "added": added, "source": source})
    return added


def unassign(session: Session, label: Label, variants: Iterable[Variant], *, actor: str = "system") -> int:
    """Take ``label`` off ``variants`` (whatever gave it); returns how many had it.

    A variant a rule still matches gets the label back on the next catalogue import: change the
    rule to keep it off.
    """
    ids = [variant.id for variant in variants]
    removed = 0
    for chunk in chunked(ids):
        result = session.execute(
            delete(LabelAssignment).where(LabelAssignment.label_id == label.id, LabelAssignment.variant_id.in_(chunk))
        )
        removed += result.rowcount or 0
    if removed:
        emit(session, organisation_id=label.organisation_id, kind="labels.unassigned", actor=actor,
             message=f"label {label.name!r} taken off {removed} variant(s)",
             data={"label_id": label.id, "removed": removed})
    return removed


@dataclass
class AssignResult:
    added: int = 0
    unknown: list[str] = field(default_factory=list)


def assign_skus(
    session: Session, label: Label, keys: Iterable[str], *, source: str = MANUAL, actor: str = "system"
) -> AssignResult:
    """Give ``label`` to the variants named by SKU or parent SKU; unknown keys are returned, not guessed."""
    keys = list(keys)
    resolved = variants_for_keys(session, label.organisation_id, keys)
    variants = [variant for key in keys for variant in resolved.get(key, [])]
    added = assign(session, label, _unique(variants), source=source, actor=actor)
    return AssignResult(added=added, unknown=[key for key in keys if key not in resolved])


# -- CSV import --------------------------------------------------------------------------------


@dataclass(frozen=True)
class CsvRowError:
    line: int  # the row's first line in the file; the header is line 1
    key: str
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


@dataclass
class CsvImport:
    added: int = 0
    removed: int = 0
    unchanged: int = 0
    errors: list[CsvRowError] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


@dataclass
class _Row:
    line: int
    key: str
    label: str
    action: str


def import_csv(session: Session, organisation_id: int, data: str | bytes | IO[str], *, actor: str = "system") -> CsvImport:
    """Apply a CSV of ``sku,label[,action]`` rows; bad rows are reported by line, good ones kept.

    - ``sku``: a variant SKU, or a parent SKU meaning every variant of that product;
    - ``label``: the name of an existing label (a typo must not create a new label);
    - ``action``: ``add`` (default) or ``remove``.

    Column names are case-insensitive and may come in any order; blank lines are ignored. A header
    without ``sku`` and ``label`` columns is itself an error (line 1) and nothing is applied.
    """
    result = CsvImport()
    rows, header_error = _read_rows(data)
    if header_error is not None:
        result.errors.append(header_error)
        return result
    labels = {label.name: label for label in session.scalars(select(Label).where(Label.organisation_id == organisation_id))}
    resolved = variants_for_keys(session, organisation_id, (row.key for row in rows))
    for row in rows:
        problem = _row_problem(row, labels, resolved)
        if problem:
            result.errors.append(CsvRowError(row.line, row.key, problem))
            continue
        problem = _apply_row(session, row, labels[row.label], resolved[row.key], result)
        if problem:
            result.errors.append(CsvRowError(row.line, row.key, problem))
    session.flush()
    _report_csv(session, organisation_id, actor, result)
    return result


def _read_rows(data: str | bytes | IO[str]) -> tuple[list[_Row], CsvRowError | None]:
    text = data.decode("utf-8-sig") if isinstance(data, bytes) else data if isinstance(data, str) else data.read()
    reader = csv.reader(io.StringIO(text.lstrip("\ufeff"), newline=""))
    header: dict[str, int] | None = None
    rows: list[_Row] = []
    while True:
        line = reader.line_num + 1  # where the next record starts (a quoted field may span lines)
        try:
            record = next(reader)
        except StopIteration:
            break
        except csv.Error as error:
            return rows, CsvRowError(line, "", f"the file is not valid CSV: {error}")
        if not any(cell.strip() for cell in record):
            continue
        if header is None:
            header = {name.strip().lower(): index for index, name in enumerate(record)}
            missing = [name for name in ("sku", "label") if name not in header]
            if missing:
                found = ", ".join(cell.strip() for cell in record)
                return [], CsvRowError(line, "", f"the header needs columns sku and label (missing {', '.join(missing)}; found {found})")
            continue
        rows.append(
            _Row(
                line=line,
                key=_cell(record, header, "sku"),
                label=_cell(record, header, "label"),
                action=(_cell(record, header, "action") or "add").lower(),
            )
        )
    if header is None:
        return [], CsvRowError(1, "", "the file is empty: expected a header row with columns sku and label")
    return rows, None


def _cell(record: Sequence[str], header: dict[str, int], name: str) -> str:
    index = header.get(name)
    return record[index].strip() if index is not None and index < len(record) else ""


def _row_problem(row: _Row, labels: dict[str, Label], resolved: dict[str, list[Variant]]) -> str | None:
    if not row.key:
        return "the sku column is empty"
    if not row.label:
        return f"{row.key}: the label column is empty"
    if row.action not in CSV_ACTIONS:
        return f"{row.key}: action must be add or remove, not {row.action!r}"
    if row.label not in labels:
        return f"{row.key}: there is no label named {row.label!r} (labels are created on the Labels page, not by import)"
    if row.key not in resolved:
        return f"no variant or product with SKU {row.key!r} in the catalogue (SKUs must match exactly)"
    return None


def _apply_row(session: Session, row: _Row, label: Label, variants: list[Variant], result: CsvImport) -> str | None:
    existing = _assignments(session, label.id, [variant.id for variant in variants])
    if row.action == "remove":
        by_rule = [variant.sku for variant in variants if variant.id in existing and existing[variant.id].source == RULE]
        if by_rule:
            return f"{row.key}: label {label.name!r} was given by a label rule; change the rule to take it off"
        for variant in variants:
            if variant.id in existing:
                session.delete(existing[variant.id])
                result.removed += 1
            else:
                result.unchanged += 1
        session.flush()
        return None
    for variant in variants:
        current = existing.get(variant.id)
        if current is None:
            session.add(LabelAssignment(label_id=label.id, variant_id=variant.id, source=CSV))
            result.added += 1
        else:
            if current.source == RULE:
                current.source = CSV
            result.unchanged += 1
    session.flush()  # a later row of the same file must see this one's assignments
    return None


def _report_csv(session: Session, organisation_id: int, actor: str, result: CsvImport) -> None:
    summary = f"label CSV import: {result.added} added, {result.removed} removed, {result.unchanged} unchanged"
    if result.errors:
        summary += f", {len(result.errors)} row(s) refused (first: {result.errors[0]})"
    emit(session, organisation_id=organisation_id, kind="labels.csv_import", actor=actor,
         level="warning" if result.errors else "info", message=summary,
         data={"added": result.added, "removed": result.removed, "unchanged": result.unchanged,
               "errors": [{"line": error.line, "key": error.key, "message": error.message} for error in result.errors[:500]]})


# -- rules ---------------------------------------------------------------------------------------


def add_rule(session: Session, label: Label, rule_field: str, value: str, *, actor: str = "system") -> LabelRule:
    """"Every product whose ``rule_field`` is ``value`` carries ``label``"; applied on every import."""
    rule_field = (rule_field or "").strip().lower()
    value = (value or "").strip()
    if rule_field not in RULE_FIELDS:
        raise ValidationError({"field": [f"must be one of {', '.join(RULE_FIELDS)}, not {rule_field!r}"]}, field="field")
    if not value:
        raise ValidationError({"value": ["a rule needs a value to match"]}, field="value")
    existing = session.scalar(
        select(LabelRule).where(LabelRule.label_id == label.id, LabelRule.field == rule_field, LabelRule.value == value)
    )
    if existing is not None:
        return existing
    rule = LabelRule(label_id=label.id, field=rule_field, value=value)
    session.add(rule)
    session.flush()
    emit(session, organisation_id=label.organisation_id, kind="labels.rule_added", actor=actor,
         message=f"label {label.name!r}: rule {rule_field} = {value!r} added (applied on the next catalogue import)",
         data={"label_id": label.id, "rule_id": rule.id, "field": rule_field, "value": value})
    return rule


def remove_rule(session: Session, rule: LabelRule, *, actor: str = "system") -> None:
    label = rule.label
    session.delete(rule)
    session.flush()
    emit(session, organisation_id=label.organisation_id, kind="labels.rule_removed", actor=actor,
         message=f"label {label.name!r}: rule {rule.field} = {rule.value!r} removed (its labels go on the next import)",
         data={"label_id": label.id, "field": rule.field, "value": rule.value})


def rule_matches(rule_field: str, value: str, product: Any) -> bool:
    """Case- and space-insensitive; a tag matches any of the product's tags; a category matches
    itself and every category below it ("Women > Tops" matches "Women > Tops > Tees")."""
    wanted = _norm(value)
    if rule_field == "tag":
        return any(_norm(tag) == wanted for tag in (product.tags or []))
    actual = _norm(getattr(product, rule_field, "") or "")
    if rule_field == "category":
        path = [_norm(part) for part in actual.split(CATEGORY_SEPARATOR)]
        prefix = [_norm(part) for part in wanted.split(CATEGORY_SEPARATOR)]
        return path[: len(prefix)] == prefix
    return actual == wanted


@dataclass
class RuleOutcome:
    added: int = 0
    removed: int = 0


def apply_rules(session: Session, organisation_id: int) -> RuleOutcome:
    """Make the ``rule`` assignments of the organisation match its rules exactly."""
    rules = session.execute(
        select(LabelRule.label_id, LabelRule.field, LabelRule.value)
        .join(Label, Label.id == LabelRule.label_id)
        .where(Label.organisation_id == organisation_id)
    ).all()
    existing = session.execute(
        select(LabelAssignment.id, LabelAssignment.label_id, LabelAssignment.variant_id, LabelAssignment.source)
        .join(Label, Label.id == LabelAssignment.label_id)
        .where(Label.organisation_id == organisation_id)
    ).all()
    if not rules and not any(row.source == RULE for row in existing):
        return RuleOutcome()
    wanted = _rule_pairs(session, organisation_id, rules)
    present = {(row.label_id, row.variant_id) for row in existing}
    stale = [row.id for row in existing if row.source == RULE and (row.label_id, row.variant_id) not in wanted]
    fresh = sorted(wanted - present)
    session.add_all(LabelAssignment(label_id=label_id, variant_id=variant_id, source=RULE) for label_id, variant_id in fresh)
    for chunk in chunked(stale):
        session.execute(delete(LabelAssignment).where(LabelAssignment.id.in_(chunk)))
    session.flush()
    return RuleOutcome(added=len(fresh), removed=len(stale))


def _rule_pairs(session: Session, organisation_id: int, rules: Sequence[Any]) -> set[tuple[int, int]]:
    if not rules:
        return set()
    rows = session.execute(
        select(Variant.id, Product.brand, Product.season, Product.category, Product.tags)
        .join(Product, Product.id == Variant.product_id)
        .where(Variant.organisation_id == organisation_id)
    ).all()
    return {
        (rule.label_id, row.id)
        for row in rows
        for rule in rules
        if rule_matches(rule.field, rule.value, row)
    }


# -- selection: what an account lists -----------------------------------------------------------


@dataclass(frozen=True)
class Exclusion:
    variant: Variant
    reason: str
    problem: bool  # True: something to fix (reported per run); False: a deliberate choice


@dataclass
class Selection:
    variants: list[Variant] = field(default_factory=list)
    excluded: list[Exclusion] = field(default_factory=list)

    @property
    def problems(self) -> list[Exclusion]:
        return [exclusion for exclusion in self.excluded if exclusion.problem]


def select_variants(session: Session, account: ChannelAccount, *, skus: Iterable[str] | None = None) -> Selection:
    """The variants ``account`` lists: labelled with its label, from its source account (the whole
    organisation's catalogue when it has none), active, not a duplicate SKU, inside its brand and
    season filters. Each variant comes with its product and stock levels loaded.

    ``skus`` narrows the result to those SKUs (a targeted stock push). Labelled variants left out
    come back in ``excluded`` with the reason.
    """
    if account.label_id is None:
        return Selection()
    query = (
        select(Variant)
        .join(LabelAssignment, LabelAssignment.variant_id == Variant.id)
        .join(Product, Product.id == Variant.product_id)
        .where(LabelAssignment.label_id == account.label_id, Variant.organisation_id == account.organisation_id)
        .options(contains_eager(Variant.product), selectinload(Variant.stock_levels))
        .order_by(Variant.sku)
    )
    if account.source_account_id is not None:
        query = query.where(Product.source_account_id == account.source_account_id)
    wanted = None if skus is None else sorted(set(skus))
    variants = (
        list(session.scalars(query).unique())
        if wanted is None
        else [v for chunk in chunked(wanted) for v in session.scalars(query.where(Variant.sku.in_(chunk))).unique()]
    )
    selection = Selection()
    for variant in variants:
        exclusion = exclusion_for(variant, account, labelled=True)
        if exclusion is None:
            selection.variants.append(variant)
        else:
            selection.excluded.append(exclusion)
    return selection


def exclusion_for(variant: Variant, account: ChannelAccount, *, labelled: bool) -> Exclusion | None:
    """Why ``variant`` is not listed on ``account``, or None when it is."""
    product = variant.product
    found = exclusion_reason(account, sku=variant.sku, duplicate=variant.duplicate, labelled=labelled,
                             source_account_id=product.source_account_id, product_active=product.active,
                             variant_active=variant.active, brand=product.brand, season=product.season)
    return None if found is None else Exclusion(variant, *found)


def exclusion_reason(
    account: ChannelAccount,
    *,
    sku: str,
    duplicate: bool,
    labelled: bool,
    source_account_id: int | None,
    product_active: bool,
    variant_active: bool,
    brand: str | None,
    season: str | None,
) -> tuple[str, bool] | None:
    """:func:`exclusion_for` on plain column values: (reason, problem), or None when it is listed.

    The stock flow plans from columns (no ORM objects for unchanged SKUs) and uses this directly.
    """
    if duplicate:
        reason = (f"SKU {sku} appears more than once in the source catalogue: kept out of "
                  "every sync until it is unique there (then run a full catalogue import)")
        return reason, True
    if not labelled:
        return "it no longer carries the account's label", False
    if account.source_account_id is not None and source_account_id != account.source_account_id:
        return "it does not come from the account's source", False
    if not product_active:
        return "its product is deactivated in the source", False
    if not variant_active:
        return "it is deactivated in the source", False
    if account.brand_filter and _norm(brand) not in {_norm(b) for b in account.brand_filter}:
        return f"brand {brand!r} is outside the account's brand filter", False
    if account.season_filter and _norm(season) not in {_norm(s) for s in account.season_filter}:
        return f"season {season!r} is outside the account's season filter", False
    return None


def labelled_variant_ids(session: Session, label_id: int | None, variant_ids: Iterable[int]) -> set[int]:
    if label_id is None:
        return set()
    ids = sorted(set(variant_ids))
    found: set[int] = set()
    for chunk in chunked(ids):
        found.update(session.scalars(
            select(LabelAssignment.variant_id).where(LabelAssignment.label_id == label_id, LabelAssignment.variant_id.in_(chunk))
        ))
    return found


def label_by_id(session: Session, organisation_id: int, label_id: int) -> Label:
    label = session.get(Label, label_id)
    if label is None or label.organisation_id != organisation_id:
        raise NotFound(f"no label {label_id}")
    return label


# -- helpers --------------------------------------------------------------------------------------


def _assignments(session: Session, label_id: int, variant_ids: list[int]) -> dict[int, LabelAssignment]:
    found: dict[int, LabelAssignment] = {}
    for chunk in chunked(sorted(set(variant_ids))):
        for assignment in session.scalars(
            select(LabelAssignment).where(LabelAssignment.label_id == label_id, LabelAssignment.variant_id.in_(chunk))
        ):
            found[assignment.variant_id] = assignment
    return found


def _norm(value: str) -> str:
    return " ".join((value or "").split()).casefold()


def _unique(variants: Iterable[Variant]) -> list[Variant]:
    seen: dict[int, Variant] = {}
    for variant in variants:
        seen.setdefault(variant.id, variant)
    return list(seen.values())
