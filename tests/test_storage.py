"""Storage: migrations, uniqueness that guards against duplicates, the append-only log, cascades.

Every test runs on SQLite and on PostgreSQL (see ``tests/storage_fixtures.py``).
"""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import delete, func, inspect, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from hub import bindings, migrate
from hub.db import Database, make_engine
from hub.events import emit
from hub.models import (
    AppendOnlyViolation,
    Binding,
    ChannelAccount,
    Cursor,
    Event,
    Label,
    LabelAssignment,
    Order,
    OrderLine,
    Organisation,
    Product,
    StockLevel,
    SyncRun,
    SyncRunItem,
    Variant,
)
from tests.storage_fixtures import database, empty_database_url, organisation  # noqa: F401  (fixtures)


def _account(session: Session, organisation_id: int, name: str = "iconic") -> ChannelAccount:
    account = ChannelAccount(organisation_id=organisation_id, name=name, plugin="iconic")
    session.add(account)
    session.flush()
    return account


def _variant(session: Session, organisation_id: int, sku: str, parent: str | None = None) -> Variant:
    product = Product(organisation_id=organisation_id, parent_sku=parent or f"P-{uuid.uuid4().hex[:8]}")
    variant = Variant(organisation_id=organisation_id, sku=sku, product=product)
    session.add(variant)
    session.flush()
    return variant


def _other_organisation(session: Session) -> Organisation:
    slug = f"other-{uuid.uuid4().hex[:10]}"
    other = Organisation(name=slug, slug=slug)
    session.add(other)
    session.flush()
    return other


# -- migrations --------------------------------------------------------------------------------


def test_migrations_upgrade_from_empty_to_head_without_drift(empty_database_url: str) -> None:
    assert migrate.current(empty_database_url) is None
    assert not migrate.check(empty_database_url)

    migrate.upgrade(empty_database_url)

    assert migrate.current(empty_database_url) == migrate.heads()[0]
    assert migrate.drift(empty_database_url) == []
    assert migrate.check(empty_database_url)


def test_downgrade_to_base_empties_the_database_and_upgrade_restores_it(empty_database_url: str) -> None:
    migrate.upgrade(empty_database_url)
    migrate.downgrade(empty_database_url, "base")

    engine = make_engine(empty_database_url)
    try:
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    finally:
        engine.dispose()
    assert migrate.current(empty_database_url) is None

    migrate.upgrade(empty_database_url)
    assert migrate.check(empty_database_url)


def test_upgrade_twice_is_harmless(empty_database_url: str) -> None:
    migrate.upgrade(empty_database_url)
    migrate.upgrade(empty_database_url)
    assert migrate.check(empty_database_url)


def test_check_reports_a_schema_that_differs_from_the_models(empty_database_url: str) -> None:
    migrate.upgrade(empty_database_url)
    engine = make_engine(empty_database_url)
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql("CREATE TABLE stray (id INTEGER PRIMARY KEY)")
    finally:
        engine.dispose()

    assert not migrate.check(empty_database_url)
    assert [diff[0] for diff in migrate.drift(empty_database_url)] == ["remove_table"]


def test_shared_database_is_at_head(database: Database) -> None:
    assert migrate.check(database.engine)


# -- uniqueness --------------------------------------------------------------------------------


def test_sku_is_unique_per_organisation(database: Database, organisation: Organisation) -> None:
    with database.session() as session:
        _variant(session, organisation.id, "TEE-RED-M")
        _variant(session, _other_organisation(session).id, "TEE-RED-M")  # another brand may reuse it

    with pytest.raises(IntegrityError), database.session() as session:
        _variant(session, organisation.id, "TEE-RED-M")


def test_bindings_are_unique_both_ways(database: Database, organisation: Organisation) -> None:
    with database.session() as session:
        account_id = _account(session, organisation.id).id
        other_account_id = _account(session, organisation.id, "iconic-2").id
        session.add(Binding(account_id=account_id, kind="listing", external_id="X1", internal_id="7"))
        # The same ids under another kind or another account are other bindings.
        session.add(Binding(account_id=account_id, kind="order_import", external_id="X1", internal_id="7"))
        session.add(Binding(account_id=other_account_id, kind="listing", external_id="X1", internal_id="7"))

    with pytest.raises(IntegrityError), database.session() as session:  # one external id, two internal
        session.add(Binding(account_id=account_id, kind="listing", external_id="X1", internal_id="8"))
    with pytest.raises(IntegrityError), database.session() as session:  # one internal id, two external
        session.add(Binding(account_id=account_id, kind="listing", external_id="X2", internal_id="7"))

    with database.session() as session:
        count = session.scalar(select(func.count()).select_from(Binding).where(Binding.account_id == account_id))
    assert count == 2


def test_new_bindings_go_in_together_and_a_binding_made_first_elsewhere_stands(database: Database,
                                                                              organisation: Organisation) -> None:
    with database.session() as session:
        account_id = _account(session, organisation.id).id
        session.add(Binding(account_id=account_id, kind="destination_order", external_id="THEIRS", internal_id="5"))
    with database.session() as session:
        new = bindings.NewBindings(session, account_id, "destination_order")
        for internal_id in range(1, 251):  # more than one multi-row INSERT
            new.add(internal_id, f"D{internal_id}")
        new.write()
        assert new.rows == []

    with database.session() as session:
        assert len(bindings.by_internals(session, account_id, "destination_order", range(1, 300))) == 250
        assert bindings.by_internal(session, account_id, "destination_order", 5).external_id == "THEIRS"
        assert bindings.by_internal(session, account_id, "destination_order", 250).external_id == "D250"


def test_an_order_is_imported_once_per_account(database: Database, organisation: Organisation) -> None:
    with database.session() as session:
        account_id = _account(session, organisation.id).id
        other_account_id = _account(session, organisation.id, "iconic-2").id
        session.add(Order(organisation_id=organisation.id, account_id=account_id, channel_order_id="100", order_number="100"))
        session.add(Order(organisation_id=organisation.id, account_id=other_account_id, channel_order_id="100", order_number="100"))

    with pytest.raises(IntegrityError), database.session() as session:
        session.add(Order(organisation_id=organisation.id, account_id=account_id, channel_order_id="100", order_number="100-b"))


# -- the audit log is append-only ----------------------------------------------------------------


def _event(database: Database, organisation_id: int, account_id: int | None = None) -> int:
    with database.session() as session:
        event = emit(session, organisation_id=organisation_id, account_id=account_id, kind="test", message="m")
        session.flush()
        return event.id


def test_events_cannot_be_changed_or_deleted_through_the_orm(database: Database, organisation: Organisation) -> None:
    event_id = _event(database, organisation.id)

    with pytest.raises(AppendOnlyViolation), database.session() as session:
        session.get(Event, event_id).message = "rewritten"
    with pytest.raises(AppendOnlyViolation), database.session() as session:
        session.delete(session.get(Event, event_id))

    with database.session() as session:
        assert session.get(Event, event_id).message == "m"


def test_a_batch_of_events_is_written_as_one_statement_and_keeps_its_ids(database: Database,
                                                                       organisation: Organisation) -> None:
    from sqlalchemy import event as sa_event

    sent: list[tuple[str, bool]] = []

    def record(conn, cursor, statement, parameters, context, executemany) -> None:  # type: ignore[no-untyped-def]
        if "events" in statement or "nextval" in statement:
            sent.append((statement, executemany))

    with database.session() as session:
        session.flush()
        sa_event.listen(database.engine, "before_cursor_execute", record)
        try:
            events = [emit(session, organisation_id=organisation.id, kind="test", message=f"m{i}", data={"i": i})
                      for i in range(30)]
            session.flush()
        finally:
            sa_event.remove(database.engine, "before_cursor_execute", record)
        ids = [event.id for event in events]

    assert all(isinstance(i, int) for i in ids) and len(set(ids)) == 30
    with database.session() as session:
        stored = dict(session.execute(select(Event.id, Event.message).where(Event.id.in_(ids))).all())
    assert [stored[i] for i in ids] == [f"m{i}" for i in range(30)]
    if database.engine.dialect.name == "postgresql":
        # numbered first, then one short statement sent pipelined; not a 30-row INSERT ... RETURNING
        assert len(sent) == 2 and "nextval" in sent[0][0], sent
        statement, executemany = sent[1]
        assert statement.startswith("INSERT INTO events") and executemany and "RETURNING" not in statement, sent


@pytest.mark.parametrize(
    "statement",
    [
        pytest.param(lambda event_id: update(Event).where(Event.id == event_id).values(message="x"), id="update-message"),
        pytest.param(lambda event_id: update(Event).where(Event.id == event_id).values(data={"x": 1}), id="update-data"),
        pytest.param(lambda event_id: update(Event).where(Event.id == event_id).values(actor="mallory"), id="update-actor"),
        pytest.param(lambda event_id: delete(Event).where(Event.id == event_id), id="delete"),
    ],
)
def test_events_cannot_be_changed_or_deleted_in_sql(database: Database, organisation: Organisation, statement) -> None:  # type: ignore[no-untyped-def]
    event_id = _event(database, organisation.id)

    with pytest.raises(IntegrityError, match="append-only"), database.session() as session:
        session.execute(statement(event_id))

    with database.session() as session:
        assert session.get(Event, event_id).message == "m"


# -- cascades ------------------------------------------------------------------------------------


def _catalogue_and_orders(session: Session, organisation_id: int) -> dict[str, int]:
    """One of everything that hangs off an organisation; returns the ids."""
    account = _account(session, organisation_id)
    variant = _variant(session, organisation_id, f"SKU-{uuid.uuid4().hex[:6]}")
    variant.stock_levels.append(StockLevel(location="main", available=5))
    variant.product.source_account_id = account.id
    label = Label(organisation_id=organisation_id, name="iconic")
    session.add(label)
    session.flush()
    session.add(LabelAssignment(label_id=label.id, variant_id=variant.id))
    order = Order(organisation_id=organisation_id, account_id=account.id, channel_order_id="1", order_number="1")
    order.lines.append(OrderLine(sku=variant.sku, variant_id=variant.id, quantity=1))
    run = SyncRun(organisation_id=organisation_id, account_id=None, flow="stock")
    run.items.append(SyncRunItem(key=variant.sku, outcome="ok"))
    session.add_all([order, run, Binding(account_id=account.id, kind="listing", external_id="E", internal_id="I")])
    session.add(Cursor(account_id=account.id, stream="orders", value="0"))
    session.flush()
    event = emit(session, organisation_id=organisation_id, account_id=account.id, run_id=run.id, kind="test", message="m")
    session.flush()
    return {"account": account.id, "variant": variant.id, "product": variant.product.id, "order": order.id,
            "run": run.id, "event": event.id, "label": label.id}


def _count(session: Session, model: type, *where) -> int:  # type: ignore[no-untyped-def]
    return session.scalar(select(func.count()).select_from(model).where(*where)) or 0


def test_deleting_an_organisation_removes_everything_it_owns(database: Database, organisation: Organisation) -> None:
    with database.session() as session:
        mine = _catalogue_and_orders(session, organisation.id)
        other = _other_organisation(session)
        theirs = _catalogue_and_orders(session, other.id)

    with database.session() as session:
        session.execute(delete(Organisation).where(Organisation.id == organisation.id))

    with database.session() as session:
        for model in (ChannelAccount, Variant, Product, Order, SyncRun, Label, Event):
            assert _count(session, model, model.organisation_id == organisation.id) == 0, model.__name__
        assert _count(session, StockLevel, StockLevel.variant_id == mine["variant"]) == 0
        assert _count(session, OrderLine, OrderLine.order_id == mine["order"]) == 0
        assert _count(session, Binding, Binding.account_id == mine["account"]) == 0
        assert _count(session, SyncRunItem, SyncRunItem.run_id == mine["run"]) == 0
        # The other brand is untouched.
        assert session.get(Event, theirs["event"]) is not None
        assert _count(session, StockLevel, StockLevel.variant_id == theirs["variant"]) == 1


def test_deleting_an_account_keeps_the_catalogue_and_the_audit_trail(database: Database, organisation: Organisation) -> None:
    with database.session() as session:
        ids = _catalogue_and_orders(session, organisation.id)

    with database.session() as session:
        session.execute(delete(ChannelAccount).where(ChannelAccount.id == ids["account"]))

    with database.session() as session:
        # What belonged to the account goes with it...
        assert _count(session, Order, Order.id == ids["order"]) == 0
        assert _count(session, Binding, Binding.account_id == ids["account"]) == 0
        assert _count(session, Cursor, Cursor.account_id == ids["account"]) == 0
        # ...the catalogue it fed stays, and the audit log forgets only the link.
        assert session.get(Product, ids["product"]).source_account_id is None
        assert session.get(Variant, ids["variant"]) is not None
        event = session.get(Event, ids["event"])
        assert event is not None and event.account_id is None and event.message == "m"


def test_deleting_a_product_removes_its_variants_stock_and_labels(database: Database, organisation: Organisation) -> None:
    with database.session() as session:
        ids = _catalogue_and_orders(session, organisation.id)

    with database.session() as session:
        session.delete(session.get(Product, ids["product"]))

    with database.session() as session:
        assert session.get(Variant, ids["variant"]) is None
        assert _count(session, StockLevel, StockLevel.variant_id == ids["variant"]) == 0
        assert _count(session, LabelAssignment, LabelAssignment.variant_id == ids["variant"]) == 0
        assert session.get(Label, ids["label"]) is not None
        # An order line outlives the variant it sold (the order is history); it keeps the SKU.
        line = session.scalars(select(OrderLine).where(OrderLine.order_id == ids["order"])).one()
        assert line.variant_id is None and line.sku


def test_deleting_a_sync_run_removes_its_items_and_unlinks_events(database: Database, organisation: Organisation) -> None:
    with database.session() as session:
        ids = _catalogue_and_orders(session, organisation.id)

    with database.session() as session:
        session.execute(delete(SyncRun).where(SyncRun.id == ids["run"]))

    with database.session() as session:
        assert _count(session, SyncRunItem, SyncRunItem.run_id == ids["run"]) == 0
        event = session.get(Event, ids["event"])
        assert event is not None and event.run_id is None
