"""Flow "catalog": a SOURCE account's products -> the organisation's catalogue.

Top to bottom: decide full or incremental -> enumerate the source (``list_products(since)``) ->
validate each record -> count SKUs -> upsert products, variants and stock levels -> on a full import,
deactivate what the source no longer has -> record (and on a full import, resolve) duplicate SKUs ->
apply label rules -> move the cursors -> report.

Decisions (docs/flows-catalogue-listings-stock.md):

- **Incremental vs full.** ``since`` is the last import's start minus ``OVERLAP``, so a write racing
  the previous read is read again. A product the source does not return was simply unchanged: an
  incremental import never deactivates anything for being absent. A *full* import (the first one,
  ``params={"full": True}``, or once ``FULL_EVERY`` has passed) sees everything, so a product it does
  not return is gone from the source and is deactivated. A product record is always complete, so a
  variant missing from a returned product is deactivated by either kind.
- **Duplicate SKUs** make stock flip-flop between two records, so a SKU the source holds twice is
  flagged (``Variant.duplicate``, a ``DuplicateSku`` row, a ``catalog.duplicate_sku`` event for new
  ones) and kept out of every sync. Only a full import can prove a duplicate gone (an incremental one
  does not see the unchanged copy), so only a full import clears the flag.
- The enumeration is read to the end before anything is written: duplicates can only be counted over
  the whole of it, and a channel that fails mid-way raises, leaving the catalogue as it was. It is
  not *held* to the end, though: the first pass validates each product as it arrives, counts SKUs
  (a Counter of strings) and parent SKUs, and spills the valid records to an anonymous temporary
  file in chunks of ``CHUNK`` products; the second pass reads the chunks back and writes each one
  (one query per chunk for the products and one for the variants already there, a flush, then the
  ORM objects are let go). Both passes write in ONE transaction: anything failing rolls it all back.
"""

from __future__ import annotations

import dataclasses
import pickle
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, selectinload

from hub import cursors, labels
from hub import records as canonical
from hub.channel import Role
from hub.connections import open_channel
from hub.errors import ConfigurationError, ContractError, NotFound, ValidationError
from hub.events import emit
from hub.jobs import FlowContext, register_flow
from hub.models import ChannelAccount, DuplicateSku, Product, StockLevel, Variant, utcnow
from hub.plugins import get_plugin_manager
from hub.scheduling import aware

STREAM = "products"  # the cursor of the last import's start
FULL_STREAM = "products_full"  # the cursor of the last full import's start
OVERLAP = timedelta(minutes=10)
FULL_EVERY = timedelta(days=1)  # account.schedules["catalog_full"] (seconds) overrides
CHUNK = 1000  # products per spilled chunk and per write (about 4,000 variants in fashion)

PRODUCT_FIELDS = ("title", "description", "brand", "category", "gender", "season", "tags", "images", "attributes",
                  "active", "external_id")
VARIANT_FIELDS = ("barcode", "size", "colour", "price_msrp", "price_wholesale", "price_retail", "price_sale",
                  "active", "external_id", "attributes")


def is_source(account: ChannelAccount) -> bool:
    """Scheduling filter: the catalogue is imported only from accounts whose channel is a SOURCE."""
    try:
        return get_plugin_manager().channel_class(account.plugin).has_role(Role.SOURCE)
    except ConfigurationError:
        return False


@dataclass
class ImportResult:
    items: list[tuple[str, str, str, str | None]] = field(default_factory=list)  # key, outcome, message, field
    products: int = 0
    variants: int = 0
    created: int = 0
    updated: int = 0
    deactivated_products: int = 0
    deactivated_variants: int = 0
    duplicates: dict[str, int] = field(default_factory=dict)  # sku -> occurrences seen
    new_duplicates: dict[str, int] = field(default_factory=dict)
    resolved_duplicates: list[str] = field(default_factory=list)
    rules: labels.RuleOutcome = field(default_factory=labels.RuleOutcome)

    def item(self, key: str, outcome: str, message: str = "", item_field: str | None = None) -> None:
        self.items.append((key, outcome, message, item_field))


def run(ctx: FlowContext) -> None:
    with ctx.db.session() as session:
        account = _source_account(session, ctx)
        full = _wants_full(session, account, ctx.params)
        since = None if full else cursors.read_time(session, account.id, STREAM, overlap=OVERLAP)
    started = utcnow()  # taken before the read: whatever changes during it is read again next time

    channel = open_channel(account)
    result = ImportResult()
    with _Spool() as spool:
        # Pass 1: the whole enumeration, validated and counted, spilled to disk (or the channel's error).
        occurrences, parents = _read(channel.list_products(since), result, spool)
        ctx.add_api_calls(1)

        with ctx.db.session() as session:
            account_id = account.id
            _upsert(ctx, session, account_id, spool, occurrences, parents, full, result)
            account = session.get(ChannelAccount, account_id)
            assert account is not None
            if full:
                _deactivate_missing(session, account, parents, result)
            _record_duplicates(session, account, full, result)
            result.rules = labels.apply_rules(session, account.organisation_id)
            cursors.write_time(session, account.id, STREAM, started)
            if full:
                cursors.write_time(session, account.id, FULL_STREAM, started)
            _report(session, ctx, account, full, result)
        total = spool.count

    ctx.progress(total, total)
    # Items go out after the commit, so the run never claims an import that was rolled back.
    for key, outcome, message, item_field in result.items:
        ctx.item(key, outcome, message, item_field)


class _Spool:
    """Valid product records spilled to an anonymous temporary file, ``CHUNK`` at a time."""

    def __init__(self) -> None:
        self.file = tempfile.TemporaryFile()
        self.pending: list[canonical.Product] = []
        self.count = 0

    def __enter__(self) -> _Spool:
        return self

    def __exit__(self, *_: object) -> None:
        self.file.close()

    def add(self, product: canonical.Product) -> None:
        self.pending.append(product)
        self.count += 1
        if len(self.pending) >= CHUNK:
            self._spill()

    def _spill(self) -> None:
        if self.pending:
            pickle.dump(self.pending, self.file, protocol=pickle.HIGHEST_PROTOCOL)
            self.pending = []

    def chunks(self) -> Iterator[list[canonical.Product]]:
        self._spill()
        self.file.seek(0)
        while True:
            try:
                yield pickle.load(self.file)
            except EOFError:
                return


# -- reading the source ----------------------------------------------------------------------------


def _source_account(session: Session, ctx: FlowContext) -> ChannelAccount:
    account = session.get(ChannelAccount, ctx.account_id) if ctx.account_id is not None else None
    if account is None:
        raise NotFound(f"the catalogue flow needs a channel account (got {ctx.account_id})")
    if not is_source(account):
        raise ConfigurationError(f"{account.name} ({account.plugin}) is not a catalogue source: nothing to import")
    return account


def _wants_full(session: Session, account: ChannelAccount, params: dict[str, Any]) -> bool:
    if params.get("full"):
        return True
    last_full = cursors.read_time(session, account.id, FULL_STREAM)
    if cursors.read(session, account.id, STREAM) is None or last_full is None:
        return True
    every = (account.schedules or {}).get("catalog_full")
    period = timedelta(seconds=float(every)) if every else FULL_EVERY
    return aware(last_full) + period <= utcnow()


def _read(products: Iterable[Any], result: ImportResult, spool: _Spool) -> tuple[Counter[str], set[str]]:
    """Pass 1: validate each product as it arrives, count SKUs and parents, spill the valid ones."""
    occurrences: Counter[str] = Counter()
    parents: set[str] = set()
    for product in products:
        if not isinstance(product, canonical.Product):
            raise ContractError(f"list_products yielded {type(product).__name__}, not hub.records.Product")
        valid = _valid_product(product, result)
        if valid is None:
            continue
        parents.add(valid.parent_sku)
        occurrences.update(variant.sku for variant in valid.variants)
        spool.add(valid)
    return occurrences, parents


def _valid_products(received: Iterable[canonical.Product], result: ImportResult) -> list[canonical.Product]:
    """Products that pass the canonical schema, each keeping only its valid variants."""
    return [valid for product in received if (valid := _valid_product(product, result)) is not None]


def _valid_product(product: canonical.Product, result: ImportResult) -> canonical.Product | None:
    """The product if it passes the canonical schema, keeping only its valid variants; None if it fails.

    A bad variant (a SKU with stray spaces, a negative price) is rejected alone; a bad product (no
    title) takes its variants with it, since they cannot be listed without it.
    """
    try:
        # The common case in one round trip through the schemas (product and variants together):
        # a per-variant round trip builds a schema pair per variant and was half the import's CPU.
        canonical.validate_record(product)
    except ValidationError:
        pass  # find out which part is bad, below
    else:
        return product
    try:
        canonical.validate_record(dataclasses.replace(product, variants=[]))
    except ValidationError as error:
        result.item(product.parent_sku or product.title or "?", "rejected", f"product not imported: {error}", error.field)
        return None
    variants = []
    for variant in product.variants:
        try:
            canonical.validate_record(variant)
        except ValidationError as error:
            result.item(variant.sku or product.parent_sku, "rejected", f"variant not imported: {error}", error.field)
            continue
        variants.append(variant)
    return dataclasses.replace(product, variants=variants)


# -- writing the catalogue -------------------------------------------------------------------------


def _upsert(
    ctx: FlowContext,
    session: Session,
    account_id: int,
    spool: _Spool,
    occurrences: Counter[str],
    parents: set[str],
    full: bool,
    result: ImportResult,
) -> None:
    """Pass 2: write the spilled records a chunk at a time, inside the caller's transaction."""
    ctx.progress(0, spool.count)
    # Progress is written by its own connection: SQLite has one writer, which this transaction holds
    # from its first flush, so there the count moves only after the commit.
    live = session.get_bind().dialect.name != "sqlite"
    done = 0
    for records in spool.chunks():
        account = session.get(ChannelAccount, account_id)
        assert account is not None
        organisation_id = account.organisation_id
        products = _products_by_parent(session, organisation_id, {record.parent_sku for record in records})
        variants = _variants_by_sku(session, organisation_id, {v.sku for record in records for v in record.variants})
        for record in records:
            done += 1
            product = products.get(record.parent_sku)
            if product is not None and product.source_account_id not in (None, account.id):
                result.item(record.parent_sku, "rejected", f"parent SKU {record.parent_sku} already comes from another "
                            "source account; a product has one source", "parent_sku")
                continue
            if product is None:
                product = Product(organisation_id=organisation_id, parent_sku=record.parent_sku)
                session.add(product)
                products[record.parent_sku] = product
            _assign(product, {name: getattr(record, name) for name in PRODUCT_FIELDS})
            product.source_account_id = account.id
            result.products += 1
            for variant_record in record.variants:
                _upsert_variant(session, account, product, variant_record, variants, occurrences, parents, full, result)
            _deactivate_dropped_variants(product, {v.sku for v in record.variants}, result)
        session.flush()
        # Written (still uncommitted): let the chunk's ORM objects go, so memory does not grow with it.
        del products, variants, records
        session.expunge_all()
        if live and done < spool.count:
            ctx.progress(done)


def _upsert_variant(
    session: Session,
    account: ChannelAccount,
    product: Product,
    record: canonical.Variant,
    variants: dict[str, Variant],
    occurrences: Counter[str],
    imported_parents: set[str],
    full: bool,
    result: ImportResult,
) -> None:
    variant = variants.get(record.sku)
    holders = _duplicate_holders(account, product, variant, record.sku, occurrences, imported_parents, full)
    if holders > 1:
        if variant is None:  # first sight of it: keep the first record, flagged
            variant = _new_variant(session, product, record, variants)
            _set_stock(variant, record.stock)
        if record.sku not in result.duplicates:
            result.item(record.sku, "rejected", f"SKU {record.sku} appears {holders} times in the source: kept out of "
                        "every sync until it is unique there", "sku")
        variant.duplicate = True
        result.duplicates[record.sku] = holders
        return
    result.variants += 1
    if variant is None:
        variant = _new_variant(session, product, record, variants)
        _set_stock(variant, record.stock)
        result.created += 1
        result.item(record.sku, "ok", "new")
        return
    moved = variant.product is not product
    if moved:
        variant.product = product  # moved between products in the source (the old one no longer has it)
    changed = _assign(variant, {name: getattr(record, name) for name in VARIANT_FIELDS})
    restocked = _set_stock(variant, record.stock)
    # Only what changed is an item: an hourly import of an unchanged catalogue must not write a row per SKU.
    if moved or changed or restocked:
        result.updated += 1
        result.item(record.sku, "ok", "moved to product " + product.parent_sku if moved else "updated")


def _duplicate_holders(
    account: ChannelAccount,
    product: Product,
    variant: Variant | None,
    sku: str,
    occurrences: Counter[str],
    imported_parents: set[str],
    full: bool,
) -> int:
    """How many records of the source(s) hold ``sku``, as far as this import can tell."""
    if occurrences[sku] > 1:
        return occurrences[sku]
    if variant is None or variant.product is product:
        return 1
    other = variant.product
    if other.source_account_id not in (None, account.id):
        return 2  # another source account holds it too: two masters of one SKU
    # The SKU arrives under a new product. An incremental import does not return unchanged products,
    # so if the old one is not in it and still active, the source still holds the SKU there as well.
    if not full and other.parent_sku not in imported_parents and other.active:
        return 2
    return 1


def _new_variant(session: Session, product: Product, record: canonical.Variant, variants: dict[str, Variant]) -> Variant:
    variant = Variant(organisation_id=product.organisation_id, sku=record.sku, product=product)
    _assign(variant, {name: getattr(record, name) for name in VARIANT_FIELDS})
    session.add(variant)
    variants[record.sku] = variant
    return variant


def _set_stock(variant: Variant, levels: list[canonical.StockLevel]) -> bool:
    """Replace the variant's stock with what the source reports (an absent location has none);
    True when anything changed.

    A source that does not tell ``available_from_stock`` or ``on_hand`` apart from ``available`` gets
    ``available`` for them, so every inventory basis has a number.
    """
    by_location = {level.location: level for level in variant.stock_levels}
    reported = set()
    changed = False
    for level in levels:
        reported.add(level.location)
        row = by_location.get(level.location)
        if row is None:
            row = StockLevel(location=level.location)
            variant.stock_levels.append(row)
        changed |= _assign(row, {
            "available": level.available,
            "available_from_stock": level.available if level.available_from_stock is None else level.available_from_stock,
            "on_hand": level.available if level.on_hand is None else level.on_hand,
        })
    for location, row in by_location.items():
        if location not in reported:
            variant.stock_levels.remove(row)
            changed = True
    return changed


def _deactivate_dropped_variants(product: Product, present: set[str], result: ImportResult) -> None:
    for variant in product.variants:
        if variant.sku not in present and variant.active and not variant.duplicate:
            variant.active = False
            result.deactivated_variants += 1


def _deactivate_missing(session: Session, account: ChannelAccount, imported: set[str], result: ImportResult) -> None:
    """Full imports only: products of this source that it no longer returns are gone from it."""
    query = select(Product.id, Product.parent_sku).where(Product.source_account_id == account.id,
                                                         Product.active.is_(True))
    gone = [row.id for row in session.execute(query) if row.parent_sku not in imported]
    for chunk in labels.chunked(gone):
        session.execute(update(Product).where(Product.id.in_(chunk)).values(active=False, updated_at=utcnow())
                        .execution_options(synchronize_session=False))
    result.deactivated_products += len(gone)


def _record_duplicates(session: Session, account: ChannelAccount, full: bool, result: ImportResult) -> None:
    known = {row.sku: row for row in session.scalars(select(DuplicateSku).where(DuplicateSku.source_account_id == account.id))}
    for sku, holders in result.duplicates.items():
        row = known.get(sku)
        if row is None:
            session.add(DuplicateSku(organisation_id=account.organisation_id, source_account_id=account.id,
                                     sku=sku, occurrences=holders, detected_at=utcnow()))
            result.new_duplicates[sku] = holders
        else:
            row.occurrences = holders
    if not full:
        return
    gone = [row for sku, row in known.items() if sku not in result.duplicates]
    variants = _variants_by_sku(session, account.organisation_id, {row.sku for row in gone})
    for row in gone:
        session.delete(row)
        variant = variants.get(row.sku)
        if variant is not None:
            variant.duplicate = False
        result.resolved_duplicates.append(row.sku)
    session.flush()


def _report(session: Session, ctx: FlowContext, account: ChannelAccount, full: bool, result: ImportResult) -> None:
    organisation_id = account.organisation_id
    if result.new_duplicates:
        shown = ", ".join(f"{sku} ×{n}" for sku, n in sorted(result.new_duplicates.items())[:20])
        emit(session, organisation_id=organisation_id, account_id=account.id, run_id=ctx.run_id,
             kind="catalog.duplicate_sku", level="warning",
             message=f"{account.name}: {len(result.new_duplicates)} SKU(s) appear more than once in the source ({shown}). "
                     "They are kept out of listings and stock until each is unique there; then run a full catalogue import.",
             data={"skus": dict(sorted(result.new_duplicates.items()))})
    if result.resolved_duplicates:
        emit(session, organisation_id=organisation_id, account_id=account.id, run_id=ctx.run_id,
             kind="catalog.duplicate_resolved",
             message=f"{account.name}: {len(result.resolved_duplicates)} SKU(s) are unique again and sync again: "
                     + ", ".join(sorted(result.resolved_duplicates)[:20]),
             data={"skus": sorted(result.resolved_duplicates)})
    rejected = sum(1 for item in result.items if item[1] == "rejected")
    emit(session, organisation_id=organisation_id, account_id=account.id, run_id=ctx.run_id,
         kind="catalog.imported", level="warning" if rejected else "info",
         message=(f"{account.name}: {'full' if full else 'incremental'} import of {result.products} product(s), "
                  f"{result.variants} variant(s) ({result.created} new, {result.updated} changed); "
                  f"deactivated {result.deactivated_products} "
                  f"product(s) and {result.deactivated_variants} variant(s); {len(result.duplicates)} duplicate SKU(s); "
                  f"{rejected} record(s) refused; label rules +{result.rules.added} -{result.rules.removed}"),
         data={"full": full, "products": result.products, "variants": result.variants, "created": result.created,
               "updated": result.updated,
               "deactivated_products": result.deactivated_products, "deactivated_variants": result.deactivated_variants,
               "duplicates": len(result.duplicates), "rejected": rejected,
               "rules_added": result.rules.added, "rules_removed": result.rules.removed})


# -- helpers ---------------------------------------------------------------------------------------------


def _products_by_parent(session: Session, organisation_id: int, parents: set[str]) -> dict[str, Product]:
    found: dict[str, Product] = {}
    for chunk in labels.chunked(sorted(parents)):
        query = (
            select(Product)
            .where(Product.organisation_id == organisation_id, Product.parent_sku.in_(chunk))
            .options(selectinload(Product.variants).selectinload(Variant.stock_levels))
        )
        found.update((product.parent_sku, product) for product in session.scalars(query))
    return found


def _variants_by_sku(session: Session, organisation_id: int, skus: set[str]) -> dict[str, Variant]:
    found: dict[str, Variant] = {}
    for chunk in labels.chunked(sorted(skus)):
        query = (
            select(Variant)
            .where(Variant.organisation_id == organisation_id, Variant.sku.in_(chunk))
            .options(selectinload(Variant.product), selectinload(Variant.stock_levels))
        )
        found.update((variant.sku, variant) for variant in session.scalars(query))
    return found


def _assign(row: Any, values: dict[str, Any]) -> bool:
    """Set only what changed, so an unchanged record leaves ``updated_at`` alone; True if any did."""
    changed = False
    for name, value in values.items():
        if isinstance(value, (list, dict)):
            value = type(value)(value)  # a copy: JSON columns must not share the record's list
        if getattr(row, name) != value:
            setattr(row, name, value)
            changed = True
    return changed


register_flow("catalog", run, applies=is_source)
