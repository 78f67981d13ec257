"""The domain model (DESIGN.md section 4) as SQLAlchemy 2 tables.

Every row belongs to one organisation, directly or through its account. Uniqueness that protects
against duplicates (SKUs, bindings, imported orders) lives here, in the database, never in Redis.
"""

from __future__ import annotations

import enum
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Enum,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    event,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship
from sqlalchemy.types import TypeDecorator


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator):
    """A timestamp that is always timezone-aware UTC in Python, whatever the database returns.

    SQLite hands back naive datetimes even for ``DateTime(timezone=True)``; comparing those with
    aware ones raises, so every value is normalised on the way in and out.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc) if value is not None else None


# Named constraints keep Alembic migrations identical on SQLite and PostgreSQL.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


def _enum(cls: type[enum.Enum]) -> Enum:
    # Stored as plain strings so adding a member needs no ALTER TYPE on PostgreSQL.
    return Enum(cls, native_enum=False, length=32, values_callable=lambda members: [m.value for m in members])


class Role(str, enum.Enum):
    ADMIN = "admin"
    OPERATOR = "operator"
    VIEWER = "viewer"


class AccountStatus(str, enum.Enum):
    SETUP = "setup"
    TESTING = "testing"
    LIVE = "live"
    PAUSED = "paused"


class Environment(str, enum.Enum):
    SANDBOX = "sandbox"
    STAGING = "staging"
    PRODUCTION = "production"


class OrderStatus(str, enum.Enum):
    IMPORTED = "imported"
    ROUTED = "routed"
    FULFILLED = "fulfilled"
    CONFIRMED = "confirmed"
    CANCELLED = "cancelled"
    RETURNED = "returned"
    THIRD_PARTY_MANAGED = "third_party_managed"
    ERROR = "error"


class RunStatus(str, enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    OK = "ok"
    PARTIAL = "partial"
    FAILED = "failed"
    DEFERRED = "deferred"


class Organisation(Base):
    __tablename__ = "organisations"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    slug: Mapped[str] = mapped_column(String(100), unique=True)
    settings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    organisation_id: Mapped[int] = mapped_column(ForeignKey("organisations.id", ondelete="CASCADE"), index=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[Role] = mapped_column(_enum(Role), default=Role.VIEWER)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    organisation: Mapped[Organisation] = relationship()


class ApiToken(Base):
    """A personal API token: only its SHA-256 is stored; the token itself is shown once, on creation.

    A token acts as its user, with the user's role and organisation (so deactivating the user
    disables the token too).
    """

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    user: Mapped[User] = relationship()


class Label(Base):
    __tablename__ = "labels"
    __table_args__ = (UniqueConstraint("organisation_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    organisation_id: Mapped[int] = mapped_column(ForeignKey("organisations.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    rules: Mapped[list[LabelRule]] = relationship(back_populates="label", cascade="all, delete-orphan")


class LabelRule(Base):
    """Applied on every catalogue import: a variant whose product's ``field`` equals ``value`` gets the label."""

    __tablename__ = "label_rules"
    __table_args__ = (UniqueConstraint("label_id", "field", "value"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    label_id: Mapped[int] = mapped_column(ForeignKey("labels.id", ondelete="CASCADE"))
    field: Mapped[str] = mapped_column(String(32))  # brand | season | tag | category
    value: Mapped[str] = mapped_column(String(200))

    label: Mapped[Label] = relationship(back_populates="rules")


class ChannelAccount(Base):
    __tablename__ = "channel_accounts"
    __table_args__ = (UniqueConstraint("organisation_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    organisation_id: Mapped[int] = mapped_column(ForeignKey("organisations.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    plugin: Mapped[str] = mapped_column(String(64))  # the Channel.name this account uses
    environment: Mapped[Environment] = mapped_column(_enum(Environment), default=Environment.SANDBOX)
    base_url: Mapped[str | None] = mapped_column(String(500))
    credentials_encrypted: Mapped[bytes | None] = mapped_column(LargeBinary)
    settings: Mapped[dict[str, Any]] = mapped_column(default=dict)

    status: Mapped[AccountStatus] = mapped_column(_enum(AccountStatus), default=AccountStatus.SETUP)
    paused_from: Mapped[AccountStatus | None] = mapped_column(_enum(AccountStatus))
    # When the pause began: time spent paused does not count towards the testing period.
    paused_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    testing_started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    testing_days: Mapped[int] = mapped_column(Integer, default=30)
    live_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    listings_enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    reconciler_enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    orders_enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    fulfilments_enabled: Mapped[bool] = mapped_column(Boolean, default=False)

    label_id: Mapped[int | None] = mapped_column(ForeignKey("labels.id", ondelete="SET NULL"), index=True)
    source_account_id: Mapped[int | None] = mapped_column(ForeignKey("channel_accounts.id", ondelete="SET NULL"), index=True)
    destination_account_id: Mapped[int | None] = mapped_column(ForeignKey("channel_accounts.id", ondelete="SET NULL"), index=True)
    fulfilment_account_id: Mapped[int | None] = mapped_column(ForeignKey("channel_accounts.id", ondelete="SET NULL"), index=True)

    schedules: Mapped[dict[str, Any]] = mapped_column(default=dict)  # flow -> interval seconds
    reserve_stock: Mapped[int] = mapped_column(Integer, default=0)
    price_field: Mapped[str] = mapped_column(String(16), default="retail")  # msrp | wholesale | retail | sale
    inventory_basis: Mapped[str] = mapped_column(String(32), default="available")
    warehouses: Mapped[list[Any]] = mapped_column(default=list)
    brand_filter: Mapped[list[Any]] = mapped_column(default=list)
    season_filter: Mapped[list[Any]] = mapped_column(default=list)

    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)

    organisation: Mapped[Organisation] = relationship()
    label: Mapped[Label | None] = relationship()


class Product(Base):
    __tablename__ = "products"
    __table_args__ = (UniqueConstraint("organisation_id", "parent_sku"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    organisation_id: Mapped[int] = mapped_column(ForeignKey("organisations.id", ondelete="CASCADE"), index=True)
    source_account_id: Mapped[int | None] = mapped_column(ForeignKey("channel_accounts.id", ondelete="SET NULL"), index=True)
    external_id: Mapped[str | None] = mapped_column(String(100))
    parent_sku: Mapped[str] = mapped_column(String(100))
    title: Mapped[str] = mapped_column(String(500), default="")
    description: Mapped[str] = mapped_column(Text, default="")
    brand: Mapped[str] = mapped_column(String(200), default="")
    category: Mapped[str] = mapped_column(String(200), default="")
    gender: Mapped[str] = mapped_column(String(32), default="")
    season: Mapped[str] = mapped_column(String(64), default="")
    tags: Mapped[list[Any]] = mapped_column(default=list)
    images: Mapped[list[Any]] = mapped_column(default=list)
    attributes: Mapped[dict[str, Any]] = mapped_column(default=dict)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)

    variants: Mapped[list[Variant]] = relationship(back_populates="product", cascade="all, delete-orphan")


class Variant(Base):
    __tablename__ = "variants"
    __table_args__ = (UniqueConstraint("organisation_id", "sku"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    organisation_id: Mapped[int] = mapped_column(ForeignKey("organisations.id", ondelete="CASCADE"), index=True)
    product_id: Mapped[int] = mapped_column(ForeignKey("products.id", ondelete="CASCADE"), index=True)
    external_id: Mapped[str | None] = mapped_column(String(100))
    sku: Mapped[str] = mapped_column(String(100))
    barcode: Mapped[str] = mapped_column(String(64), default="")
    size: Mapped[str] = mapped_column(String(64), default="")
    colour: Mapped[str] = mapped_column(String(64), default="")
    price_msrp: Mapped[Decimal | None] = mapped_column(Numeric(12, 2))
    price_wholesale: Mapped[Decimal | None] = mapped_column(Numeric(12, 2))
    price_retail: Mapped[Decimal | None] = mapped_column(Numeric(12, 2))
    price_sale: Mapped[Decimal | None] = mapped_column(Numeric(12, 2))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    # Set by the catalogue flow when the source holds this SKU twice; kept out of every sync.
    duplicate: Mapped[bool] = mapped_column(Boolean, default=False)
    attributes: Mapped[dict[str, Any]] = mapped_column(default=dict)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)

    product: Mapped[Product] = relationship(back_populates="variants")
    stock_levels: Mapped[list[StockLevel]] = relationship(back_populates="variant", cascade="all, delete-orphan")


class StockLevel(Base):
    __tablename__ = "stock_levels"
    __table_args__ = (UniqueConstraint("variant_id", "location"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    variant_id: Mapped[int] = mapped_column(ForeignKey("variants.id", ondelete="CASCADE"), index=True)
    location: Mapped[str] = mapped_column(String(100))
    available: Mapped[int] = mapped_column(Integer, default=0)
    available_from_stock: Mapped[int] = mapped_column(Integer, default=0)
    on_hand: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)

    variant: Mapped[Variant] = relationship(back_populates="stock_levels")


class LabelAssignment(Base):
    __tablename__ = "label_assignments"
    __table_args__ = (UniqueConstraint("label_id", "variant_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    label_id: Mapped[int] = mapped_column(ForeignKey("labels.id", ondelete="CASCADE"), index=True)
    variant_id: Mapped[int] = mapped_column(ForeignKey("variants.id", ondelete="CASCADE"), index=True)
    source: Mapped[str] = mapped_column(String(16), default="manual")  # manual | csv | rule
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class DuplicateSku(Base):
    """A SKU the source holds more than once; reported, and kept out of sync until fixed."""

    __tablename__ = "duplicate_skus"
    __table_args__ = (UniqueConstraint("source_account_id", "sku"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    organisation_id: Mapped[int] = mapped_column(ForeignKey("organisations.id", ondelete="CASCADE"), index=True)
    source_account_id: Mapped[int] = mapped_column(ForeignKey("channel_accounts.id", ondelete="CASCADE"))
    sku: Mapped[str] = mapped_column(String(100))
    occurrences: Mapped[int] = mapped_column(Integer, default=2)
    detected_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Binding(Base):
    """The idempotency spine: (account, kind, external id) <-> internal id, unique both ways."""

    __tablename__ = "bindings"
    __table_args__ = (
        UniqueConstraint("account_id", "kind", "external_id"),
        UniqueConstraint("account_id", "kind", "internal_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("channel_accounts.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(32))  # listing | order_import | destination_order | fulfilment ...
    external_id: Mapped[str] = mapped_column(String(200))
    internal_id: Mapped[str] = mapped_column(String(200))
    fingerprint: Mapped[str | None] = mapped_column(String(128))
    last_sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class Order(Base):
    __tablename__ = "orders"
    __table_args__ = (UniqueConstraint("account_id", "channel_order_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    organisation_id: Mapped[int] = mapped_column(ForeignKey("organisations.id", ondelete="CASCADE"), index=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("channel_accounts.id", ondelete="CASCADE"), index=True)
    channel_order_id: Mapped[str] = mapped_column(String(100))
    order_number: Mapped[str] = mapped_column(String(100))
    status: Mapped[OrderStatus] = mapped_column(_enum(OrderStatus), default=OrderStatus.IMPORTED, index=True)
    placed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    currency: Mapped[str] = mapped_column(String(3), default="AUD")
    customer_name: Mapped[str] = mapped_column(String(200), default="")
    customer_email: Mapped[str] = mapped_column(String(320), default="")
    billing_address: Mapped[dict[str, Any]] = mapped_column(default=dict)
    shipping_address: Mapped[dict[str, Any]] = mapped_column(default=dict)
    shipping_method: Mapped[str] = mapped_column(String(100), default="")
    total: Mapped[Decimal | None] = mapped_column(Numeric(12, 2))
    third_party_managed: Mapped[bool] = mapped_column(Boolean, default=False)
    destination_account_id: Mapped[int | None] = mapped_column(ForeignKey("channel_accounts.id", ondelete="SET NULL"), index=True)
    error: Mapped[str | None] = mapped_column(Text)
    raw: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)

    lines: Mapped[list[OrderLine]] = relationship(back_populates="order", cascade="all, delete-orphan")
    fulfilments: Mapped[list[Fulfilment]] = relationship(back_populates="order", cascade="all, delete-orphan")
    returns: Mapped[list[Return]] = relationship(back_populates="order", cascade="all, delete-orphan")


class OrderLine(Base):
    __tablename__ = "order_lines"

    id: Mapped[int] = mapped_column(primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id", ondelete="CASCADE"), index=True)
    sku: Mapped[str] = mapped_column(String(100))
    variant_id: Mapped[int | None] = mapped_column(ForeignKey("variants.id", ondelete="SET NULL"), index=True)
    title: Mapped[str] = mapped_column(String(500), default="")
    quantity: Mapped[int] = mapped_column(Integer)
    unit_price: Mapped[Decimal | None] = mapped_column(Numeric(12, 2))
    # The Iconic has one order item per unit: a line of 3 carries three channel line ids.
    channel_line_ids: Mapped[list[Any]] = mapped_column(default=list)
    status: Mapped[str] = mapped_column(String(32), default="open")

    order: Mapped[Order] = relationship(back_populates="lines")


class Fulfilment(Base):
    __tablename__ = "fulfilments"
    __table_args__ = (UniqueConstraint("order_id", "external_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id", ondelete="CASCADE"), index=True)
    source_account_id: Mapped[int | None] = mapped_column(ForeignKey("channel_accounts.id", ondelete="SET NULL"), index=True)
    external_id: Mapped[str] = mapped_column(String(200))
    carrier: Mapped[str] = mapped_column(String(100), default="")
    service: Mapped[str] = mapped_column(String(100), default="")
    tracking_number: Mapped[str] = mapped_column(String(100), default="")
    tracking_url: Mapped[str] = mapped_column(String(500), default="")
    shipped_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    lines: Mapped[list[Any]] = mapped_column(default=list)  # [{"sku":..., "quantity":...}]
    status: Mapped[str] = mapped_column(String(32), default="pending")  # pending | sent | error
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    order: Mapped[Order] = relationship(back_populates="fulfilments")


class Return(Base):
    __tablename__ = "returns"
    __table_args__ = (UniqueConstraint("order_id", "external_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id", ondelete="CASCADE"), index=True)
    external_id: Mapped[str] = mapped_column(String(200))
    lines: Mapped[list[Any]] = mapped_column(default=list)
    reason: Mapped[str] = mapped_column(String(500), default="")
    status: Mapped[str] = mapped_column(String(32), default="requested")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    order: Mapped[Order] = relationship(back_populates="returns")


class CarrierMap(Base):
    """How a shipment's carrier (as the fulfilment system names it) is named on this marketplace account."""

    __tablename__ = "carrier_maps"
    __table_args__ = (UniqueConstraint("account_id", "source_carrier"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("channel_accounts.id", ondelete="CASCADE"), index=True)
    source_carrier: Mapped[str] = mapped_column(String(100))
    channel_carrier: Mapped[str] = mapped_column(String(100))
    tracking_url_template: Mapped[str] = mapped_column(String(500), default="")


class SyncRun(Base):
    __tablename__ = "sync_runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    organisation_id: Mapped[int] = mapped_column(ForeignKey("organisations.id", ondelete="CASCADE"), index=True)
    account_id: Mapped[int | None] = mapped_column(ForeignKey("channel_accounts.id", ondelete="CASCADE"), index=True)
    flow: Mapped[str] = mapped_column(String(32))
    trigger: Mapped[str] = mapped_column(String(32), default="schedule")  # schedule | manual | webhook | event
    status: Mapped[RunStatus] = mapped_column(_enum(RunStatus), default=RunStatus.QUEUED, index=True)
    job_id: Mapped[str | None] = mapped_column(String(64), index=True)
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    # What the run was asked to do (e.g. {"skus": [...]}); small and never secret, so a retry or a
    # restart of the embedded runtime repeats exactly the same work.
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    counts: Mapped[dict[str, Any]] = mapped_column(default=dict)  # ok / rejected / skipped / failed
    api_calls: Mapped[int] = mapped_column(Integer, default=0)
    progress_done: Mapped[int] = mapped_column(Integer, default=0)
    progress_total: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    queued_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    items: Mapped[list[SyncRunItem]] = relationship(back_populates="run", cascade="all, delete-orphan")


class SyncRunItem(Base):
    __tablename__ = "sync_run_items"

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("sync_runs.id", ondelete="CASCADE"), index=True)
    key: Mapped[str] = mapped_column(String(200))  # a SKU or an order number
    outcome: Mapped[str] = mapped_column(String(16))  # ok | rejected | skipped | failed
    field: Mapped[str | None] = mapped_column(String(100))
    message: Mapped[str] = mapped_column(Text, default="")

    run: Mapped[SyncRun] = relationship(back_populates="items")


class Cursor(Base):
    __tablename__ = "cursors"
    __table_args__ = (UniqueConstraint("account_id", "stream"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("channel_accounts.id", ondelete="CASCADE"))
    stream: Mapped[str] = mapped_column(String(64))
    value: Mapped[str] = mapped_column(String(200))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class Event(Base):
    """The append-only audit log. Rows are written once and never changed or deleted by the hub."""

    __tablename__ = "events"
    __table_args__ = (Index("ix_events_org_created", "organisation_id", "created_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    organisation_id: Mapped[int] = mapped_column(ForeignKey("organisations.id", ondelete="CASCADE"))
    account_id: Mapped[int | None] = mapped_column(ForeignKey("channel_accounts.id", ondelete="SET NULL"), index=True)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("sync_runs.id", ondelete="SET NULL"), index=True)
    kind: Mapped[str] = mapped_column(String(64), index=True)  # e.g. account.transition, stock.pushed
    level: Mapped[str] = mapped_column(String(16), default="info")  # info | warning | error
    actor: Mapped[str] = mapped_column(String(200), default="system")
    message: Mapped[str] = mapped_column(Text, default="")
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class AppendOnlyViolation(RuntimeError):
    """Somebody tried to change or delete an audit event."""


@event.listens_for(Session, "before_flush")
def _refuse_event_changes(session: Session, flush_context: object, instances: object) -> None:
    for obj in list(session.dirty) + list(session.deleted):
        if isinstance(obj, Event) and (obj in session.deleted or session.is_modified(obj)):
            raise AppendOnlyViolation("events are append-only: write a new event instead of changing one")
