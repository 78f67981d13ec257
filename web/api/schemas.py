"""Marshmallow schemas of the REST API. The same schemas validate input (400 with field errors),
serialise output and generate the OpenAPI document; the UI's hub-settings form uses them too."""

from __future__ import annotations

from marshmallow import EXCLUDE, RAISE, Schema, fields, validate

from hub.accounts import ACTION_LABELS, FLOWS
from hub.labels import RULE_FIELDS
from hub.models import AccountStatus, Environment, OrderStatus, Role

PRICE_FIELDS = ("msrp", "wholesale", "retail", "sale")
INVENTORY_BASES = ("available", "available_from_stock", "on_hand")
RUNNABLE_FLOWS = ("catalog", "listings", "stock", "orders", "fulfilment", "reconcile", "reset")
MAX_ID = 2**31 - 1  # as web.access.MAX_ID: the largest id a row can have
MAX_PAGE = 1_000_000
ID = validate.Range(min=1, max=MAX_ID)
PAGE = validate.Range(min=1, max=MAX_PAGE)


class Strict(Schema):
    class Meta:
        unknown = RAISE  # a misspelt field is an error, not silently ignored


class Error(Schema):
    error = fields.String(required=True)
    fields_ = fields.Dict(data_key="fields", keys=fields.String(), values=fields.Raw(),
                          metadata={"description": "field -> problems, for validation errors"})


class AccountCreate(Strict):
    name = fields.String(required=True, validate=validate.Length(min=1, max=100))
    plugin = fields.String(required=True, metadata={"description": "the channel's name, e.g. iconic"})
    environment = fields.String(load_default="sandbox", validate=validate.OneOf([e.value for e in Environment]))
    credentials = fields.Dict(load_default=dict, metadata={"description": "validated by the channel's credentials schema"})
    settings = fields.Dict(load_default=dict, metadata={"description": "validated by the channel's settings schema"})


class AccountHubSettings(Strict):
    """The hub's own settings of an account (the channel's settings are the plugin's schema)."""

    label_id = fields.Integer(allow_none=True, validate=ID,
                              metadata={"description": "the label whose products this account lists"})
    source_account_id = fields.Integer(allow_none=True, validate=ID)
    destination_account_id = fields.Integer(allow_none=True, validate=ID)
    fulfilment_account_id = fields.Integer(allow_none=True, validate=ID)
    reserve_stock = fields.Integer(validate=validate.Range(min=0, max=100000),
                                   metadata={"description": "units held back from every variant's quantity"})
    price_field = fields.String(validate=validate.OneOf(PRICE_FIELDS))
    inventory_basis = fields.String(validate=validate.OneOf(INVENTORY_BASES))
    warehouses = fields.List(fields.String(validate=validate.Length(min=1, max=100)))
    brand_filter = fields.List(fields.String(validate=validate.Length(min=1, max=200)))
    season_filter = fields.List(fields.String(validate=validate.Length(min=1, max=64)))
    base_url = fields.Url(allow_none=True, require_tld=False, metadata={"description": "sandbox or custom API host"})
    schedules = fields.Dict(keys=fields.String(validate=validate.OneOf(RUNNABLE_FLOWS)),
                            values=fields.Integer(validate=validate.Range(min=60, max=7 * 86400)),
                            metadata={"description": "flow -> interval in seconds"})


class AccountSettingsUpdate(Strict):
    hub = fields.Nested(AccountHubSettings, load_default=dict)
    settings = fields.Dict(load_default=None, allow_none=True,
                           metadata={"description": "the channel's settings, merged into the stored ones"})
    credentials = fields.Dict(load_default=None, allow_none=True,
                              metadata={"description": "credential fields to replace; others are kept"})


class Account(Schema):
    id = fields.Integer()
    name = fields.String()
    plugin = fields.String()
    environment = fields.Function(lambda a: a.environment.value)
    status = fields.Function(lambda a: a.status.value)
    flows = fields.Function(lambda a: {f: bool(getattr(a, f"{f}_enabled")) for f in FLOWS})
    allowed_actions = fields.Method("_allowed_actions")
    settings = fields.Method("_settings", metadata={"description": "secrets masked"})
    credentials = fields.Method("_credentials", metadata={"description": "always masked"})
    label_id = fields.Integer(allow_none=True)
    source_account_id = fields.Integer(allow_none=True)
    destination_account_id = fields.Integer(allow_none=True)
    fulfilment_account_id = fields.Integer(allow_none=True)
    reserve_stock = fields.Integer()
    price_field = fields.String()
    inventory_basis = fields.String()
    testing_started_at = fields.DateTime(allow_none=True)
    live_at = fields.DateTime(allow_none=True)

    def _allowed_actions(self, account: object) -> list[str]:
        from hub.accounts import allowed_actions

        return allowed_actions(account)  # type: ignore[arg-type]

    def _settings(self, account: object) -> dict:
        from web.services import masked_settings

        return masked_settings(account)  # type: ignore[arg-type]

    def _credentials(self, account: object) -> dict:
        from web.services import masked_credentials

        return masked_credentials(account)  # type: ignore[arg-type]


class Transition(Strict):
    action = fields.String(required=True, validate=validate.OneOf(list(ACTION_LABELS)))
    confirm = fields.Boolean(load_default=False, metadata={"description": "required (true) for go_live"})


class FlowToggle(Strict):
    enabled = fields.Boolean(required=True)


class RunRequest(Strict):
    flow = fields.String(required=True, validate=validate.OneOf(RUNNABLE_FLOWS))
    params = fields.Dict(load_default=dict)


class Run(Schema):
    id = fields.Integer()
    account_id = fields.Integer(allow_none=True)
    flow = fields.String()
    trigger = fields.String()
    status = fields.Function(lambda r: r.status.value)
    attempt = fields.Integer()
    counts = fields.Dict()
    api_calls = fields.Integer()
    progress_done = fields.Integer()
    progress_total = fields.Integer(allow_none=True)
    error = fields.String(allow_none=True)
    queued_at = fields.DateTime()
    started_at = fields.DateTime(allow_none=True)
    finished_at = fields.DateTime(allow_none=True)


class RunItem(Schema):
    key = fields.String()
    outcome = fields.String()
    field = fields.String(allow_none=True)
    message = fields.String()


class RunDetail(Run):
    items = fields.List(fields.Nested(RunItem))


class LabelCreate(Strict):
    name = fields.String(required=True, validate=validate.Length(min=1, max=100))


class LabelRuleCreate(Strict):
    field = fields.String(required=True, validate=validate.OneOf(RULE_FIELDS))
    value = fields.String(required=True, validate=validate.Length(min=1, max=200))


class LabelRule(Schema):
    id = fields.Integer()
    field = fields.String()
    value = fields.String()


class Label(Schema):
    id = fields.Integer()
    name = fields.String()
    rules = fields.List(fields.Nested(LabelRule))


class LabelAssign(Strict):
    skus = fields.List(fields.String(validate=validate.Length(min=1, max=100)), required=True,
                       validate=validate.Length(min=1, max=10000),
                       metadata={"description": "variant SKUs, or parent SKUs meaning all their variants"})
    remove = fields.Boolean(load_default=False)


class LabelAssignResult(Schema):
    added = fields.Integer()
    removed = fields.Integer()
    unknown = fields.List(fields.String())


class VariantOut(Schema):
    id = fields.Integer()
    sku = fields.String()
    barcode = fields.String()
    size = fields.String()
    colour = fields.String()
    price_retail = fields.Decimal(as_string=True, allow_none=True)
    active = fields.Boolean()
    duplicate = fields.Boolean()


class Product(Schema):
    id = fields.Integer()
    parent_sku = fields.String()
    title = fields.String()
    brand = fields.String()
    season = fields.String()
    category = fields.String()
    active = fields.Boolean()
    variants = fields.List(fields.Nested(VariantOut))


class CatalogueQuery(Schema):
    class Meta:
        unknown = EXCLUDE

    q = fields.String(load_default="")
    brand = fields.String(load_default="")
    season = fields.String(load_default="")
    label_id = fields.Integer(load_default=None, allow_none=True, validate=ID)
    page = fields.Integer(load_default=1, validate=PAGE)


class OrderLine(Schema):
    sku = fields.String()
    title = fields.String()
    quantity = fields.Integer()
    unit_price = fields.Decimal(as_string=True, allow_none=True)
    status = fields.String()


class Order(Schema):
    id = fields.Integer()
    account_id = fields.Integer()
    channel_order_id = fields.String()
    order_number = fields.String()
    status = fields.Function(lambda o: o.status.value)
    placed_at = fields.DateTime(allow_none=True)
    currency = fields.String()
    total = fields.Decimal(as_string=True, allow_none=True)
    customer_name = fields.String()
    error = fields.String(allow_none=True)


class OrderDetail(Order):
    lines = fields.List(fields.Nested(OrderLine))
    shipping_address = fields.Dict()
    billing_address = fields.Dict()


class OrderQuery(Schema):
    class Meta:
        unknown = EXCLUDE

    account_id = fields.Integer(load_default=None, allow_none=True, validate=ID)
    status = fields.String(load_default=None, allow_none=True, validate=validate.OneOf([s.value for s in OrderStatus]))
    since = fields.Date(load_default=None, allow_none=True)
    until = fields.Date(load_default=None, allow_none=True)
    page = fields.Integer(load_default=1, validate=PAGE)


class OrderAction(Strict):
    action = fields.String(required=True, validate=validate.OneOf(["retry_routing", "resend_fulfilment", "cancel"]))
    reason = fields.String(load_default="", validate=validate.Length(max=500),
                           metadata={"description": "required for cancel"})


class Queued(Schema):
    run_id = fields.Integer()


class UserOut(Schema):
    id = fields.Integer()
    email = fields.String()
    name = fields.String()
    role = fields.Function(lambda u: u.role.value)
    organisation_id = fields.Integer()


ROLES = [r.value for r in Role]
STATUSES = [s.value for s in AccountStatus]
