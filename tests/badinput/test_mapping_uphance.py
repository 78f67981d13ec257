"""Every public mapping of the Uphance plugin under malformed remote payloads (see ``mutations``),
and batches: one bad SKU or line among good ones is reported by name while the rest still map."""

from __future__ import annotations

import copy
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from hub.records import Address, FulfilmentLine, Order, OrderLine, Product, Return
from plugins.uphance import mapping

from .mutations import FUZZ, SKU_SPACES, Mutated, check_mapping, mutated, wrong_values

SKU = {"id": 300100, "sku_number": "HL1001-NAV-XS", "color": "Navy", "size": "XS", "ean": "930000100326",
       "in_stock": 18, "available_to_sell_from_stock": 17, "available_to_sell": 17}
PRODUCT = {
    "id": 1001, "product_identifier": "HL1001", "name": "Boxy Tee", "description": "A tee.", "image_url": "https://cdn.example.com/a.jpg",
    "not_for_sale": False, "brand": "Kestrel", "category": "Tops", "sub_category": "Tees", "sizing_system": "XS, S",
    "season_id": [2], "custom_fields": [{"name": "Gender", "field_type": "dropdown", "value": "Women"}],
    "updated_at": "2026-01-05T09:01:00.000Z",
    "variations": [{"id": 20010, "color": "Navy", "prices": [
        {"name": "Wholesale AUD", "currency": "AUD", "msrp_money": "99.95", "wsp_money": "45.43"},
        {"name": "The Iconic", "currency": "AUD", "msrp_money": "109.94", "wsp_money": "49.98"}],
        "skus": [SKU, {**SKU, "id": 300101, "sku_number": "HL1001-NAV-S", "size": "S", "ean": "930000101396"}]}],
}
CHANNEL = {"channel_ID": 12, "channel_name": "The Iconic", "currency": "AUD"}
SEASONS = {2: "SS22", 1: "AW22"}
TICKET = {"id": 9001, "status": "shipped", "tracking_number": "ST123", "carrier": "australia_post", "service": "Express",
          "order_number": "ICO-1", "updated_at": "2026-02-01T00:00:00.000Z", "stock_adjusted_at": "2026-02-01T00:00:00Z",
          "line_items": [{"product_id": 1001, "variation_id": 20010, "line_quantities": [
              {"sku_id": 300100, "sku_number": "HL1001-NAV-XS", "quantity": 1}, {"sku_id": 300101, "quantity": 2}]}]}
SALES_ORDER = {"channel": CHANNEL, "refs": {"HL1001-NAV-XS": {"sku_id": 300100, "variation_id": 20010, "product_id": 1001,
                                                               "msrp": "109.94", "wholesale": "49.98"}}}


def order(currency: str = "AUD") -> Order:
    return Order(channel_order_id="id-ICO-1", order_number="ICO-1", currency=currency, note="from The Iconic",
                 lines=[OrderLine(sku="HL1001-NAV-XS", quantity=2, unit_price=Decimal("99.00"))],
                 shipping_address=Address(name="Ada", line1="1 George St", city="Sydney", postcode="2000", country="AU"),
                 billing_address=Address(name="THE ICONIC", line1="363 George St", city="Sydney", postcode="2000", country="AU"))


@FUZZ
@given(mutated(PRODUCT), st.sampled_from(sorted(mapping.INVENTORY_FIELDS)))
def test_product_from_uphance(case: Mutated, inventory: str) -> None:
    check_mapping(lambda raw: mapping.product_from_uphance(raw, seasons=SEASONS, channel=CHANNEL, location="Sydney DC",
                                                           inventory=inventory), case)


@FUZZ
@given(mutated({"products": [PRODUCT, {**PRODUCT, "id": 1002, "product_identifier": "HL1002"}], "channel": CHANNEL}))
def test_sku_refs(case: Mutated) -> None:
    def call(payload: Any) -> Any:
        products, channel = (payload.get("products"), payload.get("channel")) if isinstance(payload, dict) else (payload, payload)
        return mapping.sku_refs(products, channel)

    check_mapping(call, case, arguments=1)


@FUZZ
@given(mutated({"raw": PRODUCT, "channel": CHANNEL}))
def test_channel_price_custom_field_season_ids_and_filters(case: Mutated) -> None:
    def call(payload: Any) -> Any:
        raw, channel = (payload.get("raw"), payload.get("channel")) if isinstance(payload, dict) else (payload, payload)
        raw = raw if isinstance(raw, dict) else {}
        variation = next(iter(raw.get("variations") or [{}]), {}) if isinstance(raw.get("variations"), list) else {}
        product = Product(parent_sku="HL1001", title="Tee", brand="Kestrel")
        return (mapping.channel_price(variation if isinstance(variation, dict) else {}, channel if isinstance(channel, dict) else {}, "v"),
                mapping.custom_field(raw, "gender"), mapping.season_ids(raw.get("season_id")),
                mapping.passes_filters(product, raw, brands=["kestrel"], seasons=["SS22"], season_names=SEASONS),
                mapping.changed_since(raw, datetime(2026, 1, 1, tzinfo=timezone.utc)))

    check_mapping(call, case, arguments=1)


@FUZZ
@given(wrong_values)
def test_parse_time_and_season_ids_take_anything(value: Any) -> None:
    check_mapping(mapping.parse_time, Mutated(value))
    assert all(isinstance(i, int) for i in mapping.season_ids(value))


@FUZZ
@given(mutated(SALES_ORDER), st.sampled_from(["msrp", "wholesale", "marketplace"]), st.sampled_from(["AUD", "NZD"]))
def test_sales_order_from_order(case: Mutated, basis: str, currency: str) -> None:
    def call(payload: Any) -> Any:
        channel, raw_refs = (payload.get("channel"), payload.get("refs")) if isinstance(payload, dict) else (payload, payload)
        refs = {}
        for sku, ref in (raw_refs.items() if isinstance(raw_refs, dict) else []):
            if isinstance(ref, dict) and all(isinstance(ref.get(k), int) for k in ("sku_id", "variation_id", "product_id")):
                # SkuRefs are built by sku_refs, which has checked the ids; prices went through _decimal
                refs[sku] = mapping.SkuRef(ref["sku_id"], ref["variation_id"], ref["product_id"],
                                           mapping._decimal(ref.get("msrp"), "msrp"), mapping._decimal(ref.get("wholesale"), "wholesale"))
        options = mapping.OrderOptions(customer_id=501, channel=channel, warehouse="Sydney DC", price_basis=basis)
        return mapping.sales_order_from_order(order(currency), refs, options)

    check_mapping(call, case, arguments=1)


@FUZZ
@given(mutated(TICKET), st.sampled_from([{}, {300101: "HL1001-NAV-S"}]))
def test_fulfilment_from_pick_ticket(case: Mutated, sku_numbers: dict[int, str]) -> None:
    check_mapping(lambda ticket: mapping.fulfilment_from_pick_ticket(ticket, sku_numbers), case)


@FUZZ
@given(mutated({"id": 1, "updated_at": "2026-01-01T00:00:00Z"}), st.sampled_from(["pick_ticket", "product"]))
def test_webhook_delivery_id(case: Mutated, resource: str) -> None:
    check_mapping(lambda record: mapping.webhook_delivery_id(resource, record if isinstance(record, dict) else {}), case)


@FUZZ
@given(mutated({"id": 77}))
def test_sales_order_id(case: Mutated) -> None:
    check_mapping(mapping.sales_order_id, case)


@FUZZ
@given(st.text(max_size=300), st.text(max_size=300), st.sampled_from(SKU_SPACES + ("HL1001-NAV-XS", "NOT-THERE")))
def test_stock_operation_for_return(order_number: str, external_id: str, sku: str) -> None:
    refs = {"HL1001-NAV-XS": mapping.SkuRef(300100, 20010, 1001)}
    ret = Return(order_number=order_number or "ICO-1", external_id=external_id or "R1", lines=[FulfilmentLine(sku=sku, quantity=1)])
    result = check_mapping(lambda _: mapping.stock_operation_for_return(ret, refs, "channelhub"), Mutated(None))
    if result is not None:
        assert len(result[1]) <= mapping.IDEMPOTENCY_KEY_MAX and result[1] == mapping.return_idempotency_key(ret)


# -- batches: the rest flows ---------------------------------------------------------------------

BAD_SKU_DATA = st.sampled_from([{"sku_number": ""}, {"sku_number": None}, {"ean": ""}, {"ean": None},
                                {"sku_number": "HL1001 NAV Z"}, {"sku_number": "  HL1001-NAV-Z  "}])


@FUZZ
@given(st.integers(min_value=0, max_value=3), BAD_SKU_DATA)
def test_one_sku_with_bad_data_is_reported_and_the_others_map(position: int, bad: dict[str, Any]) -> None:
    skus = [{**SKU, "id": 300100 + i, "sku_number": f"HL1001-NAV-{size}"} for i, size in enumerate(("XS", "S", "M", "L"))]
    skus[position] = {**skus[position], **bad}
    raw = copy.deepcopy(PRODUCT)
    raw["variations"][0]["skus"] = skus
    mapped = mapping.product_from_uphance(raw, seasons=SEASONS, channel=CHANNEL, location="Sydney DC")
    others = {s["sku_number"] for i, s in enumerate(skus) if i != position}
    assert others <= {v.sku for v in mapped.record.variants}  # the rest flows
    if "sku_number" in bad and not (bad["sku_number"] or "").strip():
        assert len(mapped.record.variants) == 3 and any(str(300100 + position) in p for p in mapped.problems)
    if "ean" in bad:
        assert any(skus[position]["sku_number"] in p and "EAN" in p for p in mapped.problems)
    assert mapping.sku_refs([raw], CHANNEL).keys() == {v.sku for v in mapped.record.variants}


@FUZZ
@given(st.integers(min_value=0, max_value=2),
       st.sampled_from([{"quantity": 0}, {"quantity": "2"}, {"quantity": None}, {"sku_id": 999, "sku_number": ""},
                        {"sku_id": [1], "sku_number": None}, {"quantity": -1}]))
def test_one_bad_pick_ticket_line_is_reported_and_the_others_ship(position: int, bad: dict[str, Any]) -> None:
    quantities = [{"sku_id": 300100 + i, "sku_number": f"HL1001-NAV-{i}", "quantity": 1 + i} for i in range(3)]
    quantities[position] = {**quantities[position], **bad}
    ticket = {**TICKET, "line_items": [{"line_quantities": quantities}]}
    mapped = mapping.fulfilment_from_pick_ticket(ticket, {})
    shipped = {(line.sku, line.quantity) for line in mapped.record.lines}
    assert shipped == {(q["sku_number"], q["quantity"]) for i, q in enumerate(quantities) if i != position}
    assert len(mapped.problems) == 1 and "pick ticket 9001" in mapped.problems[0]


def test_the_samples_are_valid() -> None:
    mapped = mapping.product_from_uphance(PRODUCT, seasons=SEASONS, channel=CHANNEL, location="Sydney DC")
    assert not mapped.problems and [v.sku for v in mapped.record.variants] == ["HL1001-NAV-XS", "HL1001-NAV-S"]
    assert mapped.record.variants[0].price_msrp == Decimal("109.94") and mapped.record.gender == "Women"
    fulfilment = mapping.fulfilment_from_pick_ticket(TICKET, {300101: "HL1001-NAV-S"})
    assert fulfilment.record.carrier == "auspost" and len(fulfilment.record.lines) == 2
    assert mapping.sku_refs([PRODUCT], CHANNEL)["HL1001-NAV-S"].sku_id == 300101
