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
  file in chunks of ``CHUNK`` products; the second pass reads the chunks back and writes each one in
  SQLAlchemy Core (the stored rows read in a few queries, compared in Python, and only what differs
  written by one ``INSERT ... ON CONFLICT DO UPDATE`` per table). Both passes write in ONE
  transaction: anything failing rolls it all back.
"""

from __future__ import annotations

import dataclasses
import json
import operator
import pickle
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import JSON, any_, bindparam, delete, select, text, update
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session, selectinload

from hub import cursors, labels
from hub import records as canonical
from hub.channel import Role
from hub.connections import open_channel
from hub.db import chunked
from hub.errors import ConfigurationError, ContractError, NotFound, ValidationError
from hub.events import emit
from hub.jobs import FlowContext, register_flow
from hub.models import (
    ChannelAccount,
    DuplicateSku,
    Product,
    StockLevel,
    Variant,
    utcnow,
)
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
    ctx.recorder.items(result.items)


# A spilled product is plain tuples (pickling dataclasses was a sixth of the import's CPU):
# (parent SKU, PRODUCT_FIELDS values, [(SKU, VARIANT_FIELDS values, [(location, available,
# available_from_stock, on_hand), ...]), ...]).
_SpooledVariant = tuple[str, tuple[Any, ...], list[tuple[str, int, int | None, int | None]]]
_Spooled = tuple[str, tuple[Any, ...], list[_SpooledVariant]]
_product_values = operator.attrgetter(*PRODUCT_FIELDS)
_variant_values = operator.attrgetter(*VARIANT_FIELDS)


def _spooled(product: canonical.Product) -> _Spooled:
    return (product.parent_sku, _product_values(product),
            [(v.sku, _variant_values(v),
              [(level.location, level.available, level.available_from_stock, level.on_hand) for level in v.stock])
             for v in product.variants])


class _Spool:
    """Valid product records spilled to an anonymous temporary file as tuples, ``CHUNK`` at a time."""

    def __init__(self) -> None:
        self.file = tempfile.TemporaryFile()
        self.pending: list[_Spooled] = []
        self.count = 0

    def __enter__(self) -> _Spool:
        return self

    def __exit__(self, *_: object) -> None:
        self.file.close()

    def add(self, product: canonical.Product) -> None:
        self.pending.append(_spooled(product))
        self.count += 1
        if len(self.pending) >= CHUNK:
            self._spill()

    def _spill(self) -> None:
        if self.pending:
            pickle.dump(self.pending, self.file, protocol=pickle.HIGHEST_PROTOCOL)
            self.pending = []

    def chunks(self) -> Iterator[list[_Spooled]]:
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
    # from its first write, so there the count moves only after the commit.
    live = session.get_bind().dialect.name != "sqlite"
    account = session.get(ChannelAccount, account_id)
    assert account is not None
    organisation_id = account.organisation_id
    done = 0
    for records in spool.chunks():
        _ChunkWriter(session, organisation_id, account_id, occurrences, parents, full, result).write(records)
        done += len(records)
        if live and done < spool.count:
            ctx.progress(done)


@dataclass(slots=True)
class _Known:
    """A variant as stored (or as this chunk is about to create it: ``id`` None)."""

    id: int | None
    parent: str  # the parent SKU of its product: (organisation, parent SKU) is unique
    product_source: int | None
    product_active: bool
    duplicate: bool
    values: tuple[Any, ...]  # VARIANT_FIELDS as stored, in that order


# Rows staged for _upsert_rows, as lists in these column orders (not dicts: fewer objects to build).
_PRODUCT_COLUMNS = ("parent_sku", *PRODUCT_FIELDS)
_VARIANT_COLUMNS = ("sku", "product_id", *VARIANT_FIELDS, "duplicate")  # product_id: the parent SKU until flushed
_STOCK_COLUMNS = ("variant_id", "location", "available", "available_from_stock", "on_hand")  # variant_id: the SKU


class _ChunkWriter:
    """One chunk in Core: read what is stored in a few queries, compare in Python, write only what
    differs with one ``INSERT ... ON CONFLICT DO UPDATE`` per table (ORM flushes were most of the CPU)."""

    def __init__(self, session: Session, organisation_id: int, account_id: int, occurrences: Counter[str],
                 parents: set[str], full: bool, result: ImportResult) -> None:
        self.session, self.organisation_id, self.account_id = session, organisation_id, account_id
        self.occurrences, self.parents, self.full, self.result = occurrences, parents, full, result
        self.now = utcnow()
        self.postgresql = session.get_bind().dialect.name == "postgresql"
        self.variants: dict[str, _Known] = {}
        self.stock: dict[int, dict[str, Any]] = {}  # variant id -> location -> stored row
        self.product_rows: dict[str, tuple[Any, ...]] = {}  # parent SKU -> _PRODUCT_COLUMNS row to upsert
        self.variant_rows: dict[str, list[Any]] = {}  # SKU -> _VARIANT_COLUMNS row to upsert
        self.stock_rows: list[list[Any]] = []  # _STOCK_COLUMNS rows to upsert
        self.stock_gone: list[int] = []
        self.flag_duplicate: list[int] = []
        self.present: dict[str, set[str]] = {}  # parent SKU -> the SKUs its record holds
        self.touched: set[str] = set()

    def write(self, records: list[_Spooled]) -> None:
        products = self._stored_products({record[0] for record in records})
        self._load_variants({variant[0] for record in records for variant in record[2]})
        for record in records:
            self._product(record, products.get(record[0]))
        self._flush(products)

    # -- reading ------------------------------------------------------------------------------------

    def _rows(self, query: Any, column: Any, keys: Iterable[Any]) -> Iterator[Any]:
        keys = sorted(keys)
        if not keys:
            return
        if self.postgresql:  # one array parameter: a long IN list is a long query string to parse
            yield from self.session.execute(query.where(column == any_(bindparam("keys", keys, type_=ARRAY(column.type)))))
            return
        for chunk in chunked(keys):
            yield from self.session.execute(query.where(column.in_(chunk)))

    def _stored_products(self, parent_skus: set[str]) -> dict[str, Any]:
        # Columns 3.. are PRODUCT_FIELDS, in order: _product compares them as one tuple.
        query = select(_P.c.id, _P.c.parent_sku, _P.c.source_account_id, *(_P.c[n] for n in PRODUCT_FIELDS)).where(
            _P.c.organisation_id == self.organisation_id)
        return {row.parent_sku: row for row in self._rows(query, _P.c.parent_sku, parent_skus)}

    def _load_variants(self, skus: set[str]) -> None:
        query = (select(_V.c.id, _V.c.sku, _V.c.duplicate, *(_V.c[n] for n in VARIANT_FIELDS),
                        _P.c.parent_sku, _P.c.source_account_id, _P.c.active.label("product_active"))
                 .join(_P, _P.c.id == _V.c.product_id).where(_V.c.organisation_id == self.organisation_id))
        end = 3 + len(VARIANT_FIELDS)
        for row in self._rows(query, _V.c.sku, skus):
            self.variants[row.sku] = _Known(row.id, row.parent_sku, row.source_account_id, row.product_active,
                                            row.duplicate, tuple(row[3:end]))
        ids = [known.id for known in self.variants.values()]
        stock = select(_S.c.id, _S.c.variant_id, _S.c.location, _S.c.available, _S.c.available_from_stock, _S.c.on_hand)
        for row in self._rows(stock, _S.c.variant_id, ids):
            self.stock.setdefault(row.variant_id, {})[row.location] = row

    # -- comparing ----------------------------------------------------------------------------------

    def _product(self, record: _Spooled, stored: Any) -> None:
        result = self.result
        parent, values, variants = record
        if stored is not None and stored.source_account_id not in (None, self.account_id):
            result.item(parent, "rejected", f"parent SKU {parent} already comes from another "
                        "source account; a product has one source", "parent_sku")
            return
        # Only what changed is written, so an unchanged product keeps its updated_at.
        if stored is None or stored.source_account_id != self.account_id or tuple(stored[3:]) != values:
            self.product_rows[parent] = (parent, *values)
        result.products += 1
        for variant in variants:
            self._variant(parent, variant)
        self.present[parent] = {variant[0] for variant in variants}

    def _variant(self, parent: str, record: _SpooledVariant) -> None:
        result = self.result
        sku, values, levels = record
        self.touched.add(sku)
        known = self.variants.get(sku)
        holders = _duplicate_holders(self.account_id, parent, known, sku, self.occurrences, self.parents, self.full)
        if holders > 1:
            if known is None:  # first sight of it: keep the first record, flagged
                known = self._create(parent, record, duplicate=True)
            if sku not in result.duplicates:
                result.item(sku, "rejected", f"SKU {sku} appears {holders} times in the source: kept out of "
                            "every sync until it is unique there", "sku")
            if not known.duplicate:
                known.duplicate = True
                if known.id is None:
                    self.variant_rows[sku][-1] = True  # the row's "duplicate"
                else:
                    self.flag_duplicate.append(known.id)
            result.duplicates[sku] = holders
            return
        result.variants += 1
        if known is None:
            self._create(parent, record, duplicate=False)
            result.created += 1
            result.item(sku, "ok", "new")
            return
        moved = known.parent != parent  # moved between products in the source (the old one no longer has it)
        changed = moved or known.values != values
        restocked = self._restock(sku, known.id, levels)
        if changed:
            self.variant_rows[sku] = [sku, parent, *values, known.duplicate]
            known.parent, known.values = parent, values
        # Only what changed is an item: an hourly import of an unchanged catalogue must not write a row per SKU.
        if changed or restocked:
            result.updated += 1
            result.item(sku, "ok", "moved to product " + parent if moved else "updated")

    def _create(self, parent: str, record: _SpooledVariant, *, duplicate: bool) -> _Known:
        sku, values, levels = record
        self.variant_rows[sku] = [sku, parent, *values, duplicate]
        self._restock(sku, None, levels)
        known = self.variants[sku] = _Known(None, parent, self.account_id, True, duplicate, values)
        return known

    def _restock(self, sku: str, variant_id: int | None, levels: list[tuple[str, int, int | None, int | None]]) -> bool:
        """Stage the variant's stock as the source reports it (an absent location has none); True if
        anything changed. A source that does not tell ``available_from_stock`` or ``on_hand`` apart from
        ``available`` gets ``available`` for them, so every inventory basis has a number."""
        stored = self.stock.get(variant_id, {}) if variant_id is not None else {}
        changed = False
        reported = set()
        for location, available, from_stock, on_hand in levels:
            reported.add(location)
            if from_stock is None:
                from_stock = available
            if on_hand is None:
                on_hand = available
            row = stored.get(location)
            if row is None or (row.available, row.available_from_stock, row.on_hand) != (available, from_stock, on_hand):
                self.stock_rows.append([sku, location, available, from_stock, on_hand])
                changed = True
        for location, row in stored.items():
            if location not in reported:
                self.stock_gone.append(row.id)
                changed = True
        return changed

    # -- writing ------------------------------------------------------------------------------------

    def _flush(self, products: dict[str, Any]) -> None:
        # No RETURNING (see _upsert_rows): the new ids are read back with one query.
        session, now = self.session, self.now
        product_ids = {parent: row.id for parent, row in products.items()}
        if self.product_rows:
            _upsert_rows(session, _P, ("organisation_id", "parent_sku"), ("source_account_id", *PRODUCT_FIELDS, "updated_at"),
                         _PRODUCT_COLUMNS, list(self.product_rows.values()),
                         {"organisation_id": self.organisation_id, "source_account_id": self.account_id, "updated_at": now})
            new = [parent for parent in self.product_rows if parent not in product_ids]
            query = select(_P.c.parent_sku, _P.c.id).where(_P.c.organisation_id == self.organisation_id)
            product_ids.update((parent, id_) for parent, id_ in self._rows(query, _P.c.parent_sku, new))
        variant_ids = {sku: known.id for sku, known in self.variants.items() if known.id is not None}
        if self.variant_rows:
            rows = list(self.variant_rows.values())
            for row in rows:
                row[1] = product_ids[row[1]]
            # ``duplicate`` is only ever set by a flag (or on a new row): an update leaves it alone.
            _upsert_rows(session, _V, ("organisation_id", "sku"), (*VARIANT_FIELDS, "product_id", "updated_at"),
                         _VARIANT_COLUMNS, rows, {"organisation_id": self.organisation_id, "updated_at": now})
            new = [sku for sku in self.variant_rows if sku not in variant_ids]
            query = select(_V.c.sku, _V.c.id).where(_V.c.organisation_id == self.organisation_id)
            variant_ids.update((sku, id_) for sku, id_ in self._rows(query, _V.c.sku, new))
        if self.stock_rows:
            for row in self.stock_rows:
                row[0] = variant_ids[row[0]]
            _upsert_rows(session, _S, ("variant_id", "location"),
                         ("available", "available_from_stock", "on_hand", "updated_at"), _STOCK_COLUMNS,
                         self.stock_rows, {"updated_at": now})
        for chunk in chunked(self.stock_gone):
            session.execute(delete(_S).where(_S.c.id.in_(chunk)))
        for chunk in chunked(self.flag_duplicate):
            session.execute(update(_V).where(_V.c.id.in_(chunk)).values(duplicate=True, updated_at=now))
        # A product record is complete: a stored variant of it that the record no longer holds is gone
        # (unless this chunk moved it to another product or flagged it).
        by_id = {row.id: parent for parent, row in products.items() if parent in self.present}
        siblings = select(_V.c.id, _V.c.sku, _V.c.product_id).where(_V.c.active.is_(True), _V.c.duplicate.is_(False))
        gone = [row.id for row in self._rows(siblings, _V.c.product_id, by_id)
                if row.sku not in self.present[by_id[row.product_id]] and row.sku not in self.touched]
        for chunk in chunked(gone):
            session.execute(update(_V).where(_V.c.id.in_(chunk)).values(active=False, updated_at=now))
        self.result.deactivated_variants += len(gone)


_P, _V, _S = Product.__table__, Variant.__table__, StockLevel.__table__


def _upsert_rows(session: Session, table: Any, keys: tuple[str, ...], columns: tuple[str, ...],
                 names: tuple[str, ...], rows: list[Any], constants: dict[str, Any]) -> None:
    """``INSERT ... ON CONFLICT (keys) DO UPDATE SET columns = excluded.columns`` for every row.

    ``rows`` are sequences of the ``names`` columns; ``constants`` are the columns every row has the
    same value in (the organisation, the time), sent once. PostgreSQL gets the rows as one JSON
    document: psycopg's per-row executemany, a multi-row VALUES (parsed again every time) or text
    arrays each cost the hub 10-20 µs a row in the driver; ``json.dumps`` is C. SQLite's executemany
    is native and cheap.
    """
    dialect = session.get_bind().dialect
    if dialect.name != "postgresql":
        stmt = sqlite_insert(table)
        session.execute(stmt.on_conflict_do_update(index_elements=list(keys),
                                                   set_={c: stmt.excluded[c] for c in columns}),
                        [{**constants, **dict(zip(names, row))} for row in rows])
        return
    # Each row a JSON array (no keys to encode), each element cast to its column's type; each
    # constant one text parameter, cast the same way (as ``r->>i`` would give it).
    picks = [f"(r->{i})" if isinstance(table.c[n].type, JSON) else f"CAST(r->>{i} AS {table.c[n].type.compile(dialect)})"
             for i, n in enumerate(names)]
    picks += [f"CAST(:k_{n} AS {table.c[n].type.compile(dialect)})" for n in constants]
    document = json.dumps(rows, default=_json_scalar)
    source = text(f"SELECT {', '.join(picks)} FROM json_array_elements(CAST(:rows AS json)) AS r")
    source = source.bindparams(rows=document, **{f"k_{n}": _as_text(value) for n, value in constants.items()})
    every = [*names, *constants]
    source = source.columns(*(table.c[n] for n in every))
    stmt = postgresql.insert(table).from_select(every, source)
    session.execute(stmt.on_conflict_do_update(index_elements=list(keys), set_={c: stmt.excluded[c] for c in columns}))


def _json_scalar(value: Any) -> str:
    """Decimals and datetimes as the text PostgreSQL reads back into numeric and timestamptz."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _as_text(value: Any) -> str | None:
    """A constant column's value as the text ``r->>i`` gives for it in the JSON document."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return json.dumps(value)
    return _json_scalar(value)


def _duplicate_holders(
    account_id: int,
    parent: str,
    variant: _Known | None,
    sku: str,
    occurrences: Counter[str],
    imported_parents: set[str],
    full: bool,
) -> int:
    """How many records of the source(s) hold ``sku``, as far as this import can tell."""
    if occurrences[sku] > 1:
        return occurrences[sku]
    if variant is None or variant.parent == parent:
        return 1
    if variant.product_source not in (None, account_id):
        return 2  # another source account holds it too: two masters of one SKU
    # The SKU arrives under a new product. An incremental import does not return unchanged products,
    # so if the old one is not in it and still active, the source still holds the SKU there as well.
    if not full and variant.parent not in imported_parents and variant.product_active:
        return 2
    return 1


def _deactivate_missing(session: Session, account: ChannelAccount, imported: set[str], result: ImportResult) -> None:
    """Full imports only: products of this source that it no longer returns are gone from it."""
    query = select(Product.id, Product.parent_sku).where(Product.source_account_id == account.id,
                                                         Product.active.is_(True))
    gone = [row.id for row in session.execute(query) if row.parent_sku not in imported]
    for chunk in chunked(gone):
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


def _variants_by_sku(session: Session, organisation_id: int, skus: set[str]) -> dict[str, Variant]:
    found: dict[str, Variant] = {}
    for chunk in chunked(sorted(skus)):
        query = (
            select(Variant)
            .where(Variant.organisation_id == organisation_id, Variant.sku.in_(chunk))
            .options(selectinload(Variant.product), selectinload(Variant.stock_levels))
        )
        found.update((variant.sku, variant) for variant in session.scalars(query))
    return found


register_flow("catalog", run, applies=is_source)
