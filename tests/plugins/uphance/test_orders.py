"""create_order, pull_fulfilments and check_in_return against the sandbox."""

from __future__ import annotations

from datetime import datetime, timezone

from hub.records import FulfilmentLine, Return
from tests.plugins.uphance.conftest import control, marketplace_order, post_calls


def created_order(sandbox, external_id):
    return sandbox.state.main.sales_orders[int(external_id)]


def test_an_order_becomes_a_sales_order_on_the_chosen_channel_and_warehouse(channel, sandbox):
    result = channel.create_order(marketplace_order())
    assert result.ok, result.message
    order = created_order(sandbox, result.external_id)
    assert (order["order_number"], order["channel_name"], order["warehouse_name"], order["company_name"]) == (
        "ICO-1001", "The Iconic", "Sydney DC", "THE ICONIC")  # customer and billing party = the marketplace
    assert order["shipping_address"]["line_1"] == "1 George St"  # shipping = the end customer
    assert order["shipping_contact"] == {"name": "Ada Lovelace", "email": "ada@example.com", "phone": "0400000000"}
    assert order["status"] == "draft"  # no PIA payment term: Uphance leaves connector orders as Draft


def test_lines_are_per_colour_with_quantities_per_size_at_the_channel_msrp(channel, sandbox):
    order = created_order(sandbox, channel.create_order(marketplace_order()).external_id)
    navy = next(v for v in sandbox.state.main.products[1001]["variations"] if v["color"] == "Navy")
    iconic_msrp = next(p["msrp_money"] for p in navy["prices"] if p["name"] == "The Iconic")
    lines = {line["color"]: line for line in order["line_items"]}
    assert set(lines) == {"Navy", "Ivory"}
    assert {q["size"]: q["quantity"] for q in lines["Navy"]["line_quantities"]} == {"S": 1, "M": 2}
    assert lines["Navy"]["unit_price"] == iconic_msrp  # MSRP of the chosen channel, not the marketplace's 99.00
    assert order["total_quantity"] == 4


def test_the_price_basis_can_be_wholesale_or_the_marketplace_price(make_channel, sandbox):
    wholesale = make_channel(order_price="wholesale").create_order(marketplace_order("ICO-W"))
    marketplace = make_channel(order_price="marketplace").create_order(marketplace_order("ICO-M"))
    navy = next(v for v in sandbox.state.main.products[1001]["variations"] if v["color"] == "Navy")
    wsp = next(p["wsp_money"] for p in navy["prices"] if p["name"] == "The Iconic")
    assert created_order(sandbox, wholesale.external_id)["line_items"][0]["unit_price"] == wsp
    assert created_order(sandbox, marketplace.external_id)["line_items"][0]["unit_price"] == "99.00"


def test_create_order_is_idempotent_by_looking_the_number_up_first(make_channel, sandbox):
    first = make_channel().create_order(marketplace_order())
    second = make_channel().create_order(marketplace_order())  # a retried job: a fresh channel instance
    assert first.external_id == second.external_id and "already in Uphance" in second.message
    assert post_calls(sandbox, "/sales_orders") == 1 and len(sandbox.state.main.sales_orders) == 1


def test_orders_in_one_job_read_the_catalogue_once(channel, sandbox):
    for number in range(5):
        assert channel.create_order(marketplace_order(f"ICO-{number}")).ok
    assert sandbox.calls[("GET", "/products")] == 1
    assert sandbox.calls[("POST", "/oauth/token")] == 1


def test_a_pia_payment_term_confirms_the_order_and_raises_a_pick_ticket(make_channel, sandbox):
    result = make_channel(payment_term="PIA").create_order(marketplace_order())
    assert created_order(sandbox, result.external_id)["status"] == "confirmed"
    assert [t["order_number"] for t in sandbox.state.main.pick_tickets.values()] == ["ICO-1001"]


def test_bad_orders_are_rejected_naming_the_field(make_channel, sandbox):
    unknown = make_channel().create_order(marketplace_order(skus=(("HL1001-NAV-S", 1), ("NOPE-1", 1))))
    assert not unknown.ok and unknown.field == "lines.1.sku" and "'NOPE-1' is not in Uphance" in unknown.message
    wrong_currency = make_channel().create_order(marketplace_order(currency="NZD"))
    assert not wrong_currency.ok and wrong_currency.field == "currency"
    no_customer = make_channel(customer_id=None).create_order(marketplace_order())
    assert not no_customer.ok and no_customer.field == "customer_id"
    bad_warehouse = make_channel(warehouse="Nowhere").create_order(marketplace_order())
    assert not bad_warehouse.ok and bad_warehouse.field == "sales_order.warehouse_name"
    assert post_calls(sandbox, "/sales_orders") == 1  # only the bad warehouse reached Uphance
    assert not sandbox.state.main.sales_orders


def test_a_new_sku_re_reads_the_catalogue_once(channel, sandbox):
    assert channel.create_order(marketplace_order("ICO-A")).ok
    assert not channel.create_order(marketplace_order("ICO-B", skus=(("NEW-1", 1),))).ok
    assert not channel.create_order(marketplace_order("ICO-C", skus=(("NEW-2", 1),))).ok
    assert sandbox.calls[("GET", "/products")] == 2


def ship(sandbox, external_id, carrier="australia_post", tracking="AP123456789"):
    """What a warehouse user does in Uphance: confirm the order, ship its pick ticket with tracking."""
    order = control(sandbox, f"/_control/sales_orders/{external_id}/confirm")["sales_order"]
    ticket = next(t for t in sandbox.state.main.pick_tickets.values() if t["order_id"] == order["id"])
    control(sandbox, f"/_control/pick_tickets/{ticket['id']}/ship", carrier=carrier, tracking_number=tracking)
    return ticket


def test_shipped_pick_tickets_come_back_with_canonical_carriers(channel, sandbox):
    created = channel.create_order(marketplace_order())
    unshipped = channel.create_order(marketplace_order("ICO-2"))
    control(sandbox, f"/_control/sales_orders/{unshipped.external_id}/confirm")  # picked, not shipped
    ticket = ship(sandbox, created.external_id)
    shipments = list(channel.pull_fulfilments(None))
    assert len(shipments) == 1
    shipment = shipments[0]
    assert (shipment.order_number, shipment.carrier, shipment.tracking_number, shipment.external_id) == (
        "ICO-1001", "auspost", "AP123456789", str(ticket["id"]))
    assert sorted((line.sku, line.quantity) for line in shipment.lines) == [
        ("HL1001-IVO-M", 1), ("HL1001-NAV-M", 2), ("HL1001-NAV-S", 1)]


def test_an_unknown_carrier_passes_through_and_is_reported(channel, sandbox, caplog):
    ship(sandbox, channel.create_order(marketplace_order()).external_id, carrier="pigeon_post")
    assert [s.carrier for s in channel.pull_fulfilments(None)] == ["pigeon_post"]
    assert "carrier 'pigeon_post' has no canonical code" in caplog.text


def test_pull_fulfilments_since_skips_older_shipments(channel, sandbox, clock):
    ship(sandbox, channel.create_order(marketplace_order()).external_id)
    clock.now += 3600
    later = datetime.fromtimestamp(clock.now, tz=timezone.utc)
    assert list(channel.pull_fulfilments(later)) == []
    ship(sandbox, channel.create_order(marketplace_order("ICO-2")).external_id, tracking="AP2")
    assert [s.tracking_number for s in channel.pull_fulfilments(later)] == ["AP2"]


def test_other_channels_pick_tickets_are_ignored(channel, sandbox):
    ticket = ship(sandbox, channel.create_order(marketplace_order()).external_id)
    ticket["channel"] = "Wholesale AUD"
    assert list(channel.pull_fulfilments(None)) == []


def a_return(number="ICO-1001"):
    return Return(order_number=number, external_id=f"RET-{number}", reason="too small",
                  lines=[FulfilmentLine("HL1002-SAG-M", 1), FulfilmentLine("HL1002-SAG-L", 2)])


def test_a_return_is_checked_in_once_even_when_delivered_twice(make_channel, sandbox):
    sku_m, sku_l = (sandbox.state.main.sku_by_number(n) for n in ("HL1002-SAG-M", "HL1002-SAG-L"))
    before = (sku_m["in_stock"], sku_l["in_stock"])
    first = make_channel(auto_check_in_returns=True).check_in_return(a_return())
    second = make_channel(auto_check_in_returns=True).receive_return(a_return())  # the hub's returns hook
    assert first.ok and second.ok and first.external_id == second.external_id
    assert (sku_m["in_stock"], sku_l["in_stock"]) == (before[0] + 1, before[1] + 2)
    assert post_calls(sandbox, "/stock_operations") == 2 and len(sandbox.state.main.stock_operations) == 1
    operation = next(iter(sandbox.state.main.stock_operations.values()))
    assert operation["source"] == "channelhub" and operation["external_ref"] == "ICO-1001"


def test_without_automatic_check_in_a_return_is_reported_for_manual_check_in(channel, sandbox):
    result = channel.check_in_return(a_return())
    assert not result.ok and result.field == "auto_check_in_returns"
    assert "check 1 x HL1002-SAG-M, 2 x HL1002-SAG-L back into stock in Uphance by hand" in result.message
    assert post_calls(sandbox, "/stock_operations") == 0


def test_a_return_of_an_unknown_sku_is_rejected_naming_the_line(make_channel, sandbox):
    ret = Return(order_number="ICO-9", external_id="RET-9", lines=[FulfilmentLine("NOPE", 1)])
    result = make_channel(auto_check_in_returns=True).check_in_return(ret)
    assert not result.ok and result.field == "lines.0.sku"
    assert post_calls(sandbox, "/stock_operations") == 0


def test_a_stock_operation_is_replayed_safely_after_a_server_error(make_channel, sandbox):
    channel = make_channel(auto_check_in_returns=True)
    channel._sku_refs(["HL1002-SAG-M"])  # log in and read the catalogue before the faults start
    before = sandbox.state.main.sku_by_number("HL1002-SAG-M")["in_stock"]
    sandbox.faults.update({"rate_5xx": 0.6, "seed": 11})
    result = channel.check_in_return(a_return())
    sandbox.faults.update({"rate_5xx": 0.0})
    assert sandbox.injected["5xx"] >= 1  # the POST was answered 5xx at least once and replayed
    assert result.ok and len(sandbox.state.main.stock_operations) == 1
    assert sandbox.state.main.sku_by_number("HL1002-SAG-M")["in_stock"] == before + 1


def test_ticket_lines_without_sku_numbers_are_mapped_through_the_catalogue(make_channel, sandbox):
    ticket = ship(sandbox, make_channel().create_order(marketplace_order()).external_id)
    for line in ticket["line_items"]:
        for quantity in line["line_quantities"]:
            del quantity["sku_number"]
    channel = make_channel()
    shipments = list(channel.pull_fulfilments(None))
    assert sorted(line.sku for line in shipments[0].lines) == ["HL1001-IVO-M", "HL1001-NAV-M", "HL1001-NAV-S"]
    assert sandbox.calls[("GET", "/products")] == 2  # one read for the order, one for this job's lookups
