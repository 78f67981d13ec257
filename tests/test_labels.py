"""Labels select products: by hand, by CSV (bad rows by line number, good rows kept), by rules."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from hub import labels
from hub.errors import ValidationError
from hub.models import ChannelAccount, Label, LabelAssignment, Variant
from tests.flows_fixtures_a import flowhub, product, variant  # noqa: F401  (fixture)
from tests.storage_fixtures import box, database, organisation  # noqa: F401  (fixtures)


def _catalogue(flowhub, *products):
    source_id, _ = flowhub.source(products=list(products))
    flowhub.run(source_id, "catalog")
    return source_id


def _labelled(flowhub, label_name: str) -> dict[str, str]:
    """SKU -> source of the assignment, for one label."""
    with flowhub.db.session() as session:
        label = labels.get_label(session, flowhub.organisation_id, label_name)
        rows = session.execute(
            select(LabelAssignment.variant_id, LabelAssignment.source).where(LabelAssignment.label_id == label.id)
        ).all()
        query = select(Variant.id, Variant.sku).where(Variant.id.in_([row.variant_id for row in rows]))
        skus = {variant_id: sku for variant_id, sku in session.execute(query)}
        return {skus[variant_id]: source for variant_id, source in rows}


def test_labels_are_given_by_hand_to_variants_or_whole_products(flowhub):
    _catalogue(flowhub, product("TEE", variant("TEE-S"), variant("TEE-M")), product("CAP", variant("CAP-1")))
    with flowhub.db.session() as session:
        label = labels.create_label(session, flowhub.organisation_id, "Iconic")
        result = labels.assign_skus(session, label, ["TEE", "CAP-1", "NOPE"], actor="ada@example.com")
        assert (result.added, result.unknown) == (3, ["NOPE"])
        again = labels.assign_skus(session, label, ["TEE-S"])
        assert again.added == 0
    assert _labelled(flowhub, "Iconic") == {"TEE-S": "manual", "TEE-M": "manual", "CAP-1": "manual"}

    with flowhub.db.session() as session:
        label = labels.get_label(session, flowhub.organisation_id, "Iconic")
        found = labels.variants_for_keys(session, flowhub.organisation_id, ["CAP-1"])
        assert labels.unassign(session, label, found["CAP-1"], actor="ada@example.com") == 1
    assert set(_labelled(flowhub, "Iconic")) == {"TEE-S", "TEE-M"}
    assigned = flowhub.events("labels.assigned")[-1]
    assert assigned.actor == "ada@example.com" and "3 variant(s)" in assigned.message


CSV_FILE = (
    "SKU,Label,Action\n"         # line 1: header, any case
    "TEE-S,Iconic,\n"            # line 2: good
    "TEE-X,Iconic,add\n"         # line 3: unknown SKU
    "\n"                         # line 4: blank, ignored
    "CAP,Iconic,add\n"           # line 5: good (a parent SKU: every variant)
    "TEE-M,Iconc,add\n"          # line 6: unknown label (a typo must not create one)
    ",Iconic,add\n"              # line 7: no SKU
    "TEE-M,Iconic,delete\n"      # line 8: bad action
    '"TEE-M","Iconic"\n'         # line 9: good, quoted, action missing = add
)


def test_a_csv_import_reports_bad_rows_by_line_number_and_keeps_the_good_ones(flowhub):
    _catalogue(flowhub, product("TEE", variant("TEE-S"), variant("TEE-M")), product("CAP", variant("CAP-1"), variant("CAP-2")))
    flowhub.label("Iconic")

    with flowhub.db.session() as session:
        result = labels.import_csv(session, flowhub.organisation_id, CSV_FILE, actor="ada@example.com")

    assert [(error.line, error.key) for error in result.errors] == [(3, "TEE-X"), (6, "TEE-M"), (7, ""), (8, "TEE-M")]
    messages = [str(error) for error in result.errors]
    assert "line 3: no variant or product with SKU 'TEE-X'" in messages[0]
    assert "no label named 'Iconc'" in messages[1]
    assert "sku column is empty" in messages[2]
    assert "action must be add or remove" in messages[3]
    assert (result.added, result.removed) == (4, 0)
    assert _labelled(flowhub, "Iconic") == {"TEE-S": "csv", "CAP-1": "csv", "CAP-2": "csv", "TEE-M": "csv"}
    [event] = flowhub.events("labels.csv_import")
    assert event.level == "warning" and event.data["errors"][0] == {"line": 3, "key": "TEE-X", "message": result.errors[0].message}
    with flowhub.db.session() as session:  # no label was invented for the typo
        assert labels.get_label(session, flowhub.organisation_id, "Iconc") is None


def test_a_csv_row_spanning_lines_is_reported_at_its_first_line_and_remove_works(flowhub):
    _catalogue(flowhub, product("TEE", variant("TEE-S"), variant("TEE-M")))
    flowhub.give_label("Iconic", "TEE-S", "TEE-M")
    text = 'sku,label,action\n"TEE-\nS",Iconic,remove\nTEE-M,Iconic,remove\nTEE-S,Iconic,remove\n'

    with flowhub.db.session() as session:
        result = labels.import_csv(session, flowhub.organisation_id, text.encode("utf-8-sig"))

    assert [(error.line, error.key) for error in result.errors] == [(2, "TEE-\nS")]
    assert result.removed == 2
    assert _labelled(flowhub, "Iconic") == {}


def test_a_csv_without_the_needed_columns_is_refused_at_line_1(flowhub):
    flowhub.label("Iconic")
    with flowhub.db.session() as session:
        result = labels.import_csv(session, flowhub.organisation_id, "code,channel\nTEE-S,Iconic\n")
        empty = labels.import_csv(session, flowhub.organisation_id, "")
    assert [(e.line, "missing sku, label" in e.message) for e in result.errors] == [(1, True)]
    assert empty.errors[0].line == 1 and "empty" in empty.errors[0].message


def test_rules_label_products_on_every_import_and_leave_explicit_labels_alone(flowhub):
    with flowhub.db.session() as session:
        label = labels.create_label(session, flowhub.organisation_id, "Iconic")
        labels.add_rule(session, label, "brand", " acme ")
        labels.add_rule(session, label, "category", "Men > Tops")
        labels.add_rule(session, label, "tag", "Iconic-ready")
        labels.add_rule(session, label, "season", "AW25")
        with pytest.raises(ValidationError, match="must be one of brand, season, tag, category"):
            labels.add_rule(session, label, "colour", "red")
    source_id, shop = flowhub.source(products=[
        product("A", variant("A-1"), brand="ACME"),                                     # brand, any case
        product("B", variant("B-1"), brand="Other", category="Men > Tops > Shirts"),    # category and below
        product("C", variant("C-1"), brand="Other", category="Menswear", tags=["iconic-ready"]),  # tag
        product("D", variant("D-1"), brand="Other", category="Men > Topsy", season="SS25"),  # nothing
        product("E", variant("E-1"), brand="Other", season="AW25"),                     # season
    ])

    flowhub.run(source_id, "catalog")

    assert _labelled(flowhub, "Iconic") == {"A-1": "rule", "B-1": "rule", "C-1": "rule", "E-1": "rule"}
    assert flowhub.events("catalog.imported")[-1].data["rules_added"] == 4

    flowhub.give_label("Iconic", "A-1")  # an admin picks A-1 explicitly as well
    shop.products[0].brand = "Sold"  # A no longer matches any rule...
    shop.products[3].season = "AW25"  # ...D now does
    shop.products[1].category = "Women"  # B no longer does and nobody picked it by hand
    flowhub.run(source_id, "catalog")

    assert _labelled(flowhub, "Iconic") == {"A-1": "manual", "C-1": "rule", "D-1": "rule", "E-1": "rule"}

    with flowhub.db.session() as session:
        label = labels.get_label(session, flowhub.organisation_id, "Iconic")
        for rule in list(label.rules):
            labels.remove_rule(session, rule)
    flowhub.run(source_id, "catalog")
    assert _labelled(flowhub, "Iconic") == {"A-1": "manual"}


def test_a_csv_cannot_remove_a_label_a_rule_gives(flowhub):
    with flowhub.db.session() as session:
        labels.add_rule(session, labels.create_label(session, flowhub.organisation_id, "Iconic"), "brand", "Acme")
    _catalogue(flowhub, product("A", variant("A-1")))
    with flowhub.db.session() as session:
        result = labels.import_csv(session, flowhub.organisation_id, "sku,label,action\nA-1,Iconic,remove\n")
    assert [(e.line, "change the rule" in e.message) for e in result.errors] == [(2, True)]
    assert _labelled(flowhub, "Iconic") == {"A-1": "rule"}


def test_the_selection_takes_labelled_active_unique_variants_inside_the_filters(flowhub):
    source_id = _catalogue(
        flowhub,
        product("A", variant("A-1"), variant("A-2", active=False), brand="Acme", season="SS25"),
        product("B", variant("B-1"), brand="Other", season="SS25"),
        product("C", variant("C-1"), brand="Acme", season="AW24"),
        product("D", variant("D-1"), brand="Acme", season="SS25", active=False),
        product("E", variant("DUP"), brand="Acme", season="SS25"),
        product("F", variant("DUP"), variant("F-1"), brand="Acme", season="SS25"),
        product("G", variant("G-1"), brand="Acme", season="SS25"),  # not labelled
    )
    flowhub.give_label("Iconic", "A", "B", "C", "D", "DUP", "F-1")
    other_source, _ = flowhub.source("other-shop", products=[product("Z", variant("Z-1"))])
    flowhub.run(other_source, "catalog")
    flowhub.give_label("Iconic", "Z-1")
    market_id, _ = flowhub.marketplace(source_id=source_id, brand_filter=["acme"], season_filter=["SS25"])

    with flowhub.db.session() as session:
        account = session.get(ChannelAccount, market_id)
        selection = labels.select_variants(session, account)
        excluded = {e.variant.sku: (e.problem, e.reason) for e in selection.excluded}
        only = labels.select_variants(session, account, skus=["A-1", "B-1"])

    assert [v.sku for v in selection.variants] == ["A-1", "F-1"]
    assert excluded["DUP"][0] is True and "more than once" in excluded["DUP"][1]
    assert excluded["A-2"] == (False, "it is deactivated in the source")
    assert excluded["D-1"] == (False, "its product is deactivated in the source")
    assert excluded["B-1"][1] == "brand 'Other' is outside the account's brand filter"
    assert excluded["C-1"][1] == "season 'AW24' is outside the account's season filter"
    assert "Z-1" not in excluded and "G-1" not in excluded  # other source; not labelled
    assert [v.sku for v in only.variants] == ["A-1"]


def test_label_names_are_unique_per_organisation(flowhub):
    first = flowhub.label("Iconic")
    assert flowhub.label(" Iconic ") == first
    with flowhub.db.session() as session:
        assert len(session.scalars(select(Label).where(Label.organisation_id == flowhub.organisation_id)).all()) == 1
        with pytest.raises(ValidationError):
            labels.create_label(session, flowhub.organisation_id, "  ")


def test_a_label_name_must_fit_and_not_be_blank(flowhub):
    with flowhub.db.session() as session:
        for bad, message in (("   ", "needs a name"), ("x" * 101, "at most 100 characters")):
            with pytest.raises(ValidationError, match=message) as caught:
                labels.create_label(session, flowhub.organisation_id, bad)
            assert caught.value.field == "name"
        assert labels.create_label(session, flowhub.organisation_id, "x" * 100).name == "x" * 100
