"""The demo's seed catalogues: a fashion brand group in Shopify and a second brand in Uphance.

Everything here is deterministic: the same arguments give the same catalogue, byte for byte, on
every run and every machine (a seeded ``random.Random``, no clock, no global state). The demo seeds
the sandboxes from it on every start, because sandboxes keep their state in memory.

The Shopify catalogue is what a fashion label's store looks like: styles (one Shopify product each)
in two or three colours and a size run, four brands, seasons AW25 and SS26, categories that exist on
The Iconic ("Women > Dresses"), a gender, EAN-13 barcodes, prices with some styles on sale, stock
in two locations. Most styles carry the tag ``the-iconic``, which the demo's label rule turns into
the label of The Iconic account. Three problems are planted on purpose, as real catalogues have them
(:class:`Problems`): a SKU used twice, a variant without an EAN, and a SKU with a trailing space.

Gender and season have no field of their own on a Shopify product; stores keep them in tags. The
seed tags each product ``gender:<Women|Men|Unisex>`` and ``season:<AW25|SS26>`` (plus the bare season
code), the convention ``docs/getting-started.md`` describes.

The core never imports this module; ``plugins.demo.runner`` does.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

SEED = 2026
LABEL_TAG = "the-iconic"  # the tag the demo's label rule matches
SEASONS = ("AW25", "SS26")
LOCATIONS = ("Sydney Warehouse", "Melbourne Store")  # the Shopify sandbox's default locations
MIN_SKUS = 30  # below this the planted problems would not all fit
UNLABELLED_EVERY = 9  # every ninth style is not for The Iconic (realistic: not everything is wholesaled)


@dataclass(frozen=True)
class Brand:
    name: str  # as The Iconic sandbox knows it (its seller brands)
    code: str


@dataclass(frozen=True)
class Category:
    path: str  # The Iconic's leaf category path; Shopify's product type
    gender: str
    sizes: tuple[str, ...]
    nouns: tuple[str, ...]
    price_range: tuple[int, int]  # whole dollars, retail


BRANDS = (
    Brand("Elka Collective", "ELK"),
    Brand("Faithfull", "FTH"),
    Brand("Bassike", "BSK"),
    Brand("Henne", "HEN"),
)
WOMEN_SIZES = ("6", "8", "10", "12", "14")
MEN_SIZES = ("S", "M", "L", "XL")
CATEGORIES = (
    Category("Women > Dresses", "Women", WOMEN_SIZES,
             ("Midi Dress", "Slip Dress", "Wrap Dress", "Shirt Dress", "Maxi Dress", "Knit Dress"), (189, 329)),
    Category("Women > Tops", "Women", WOMEN_SIZES,
             ("Linen Top", "Ribbed Tank", "Silk Camisole", "Poplin Blouse", "Boxy Tee"), (79, 169)),
    Category("Men > Shirts", "Men", MEN_SIZES,
             ("Oxford Shirt", "Linen Shirt", "Overshirt", "Camp Collar Shirt"), (129, 199)),
    Category("Men > T-Shirts", "Men", MEN_SIZES,
             ("Heavyweight Tee", "Pocket Tee", "Long Sleeve Tee"), (49, 89)),
    Category("Accessories > Bags", "Unisex", ("OS",),
             ("Tote Bag", "Crossbody Bag", "Leather Clutch"), (149, 299)),
)
# Which brands make which categories (index into CATEGORIES), so a brand's range reads true.
BRAND_CATEGORIES = {"ELK": (0, 1, 4), "FTH": (0, 1), "BSK": (2, 3, 1), "HEN": (0, 1, 4)}
FABRICS = {"AW25": ("Ribbed Knit", "Wool Blend", "Brushed Cotton", "Velvet", "Merino"),
           "SS26": ("Linen", "Crinkle Cotton", "Silk", "Organic Cotton", "Seersucker")}
COLOURS = (("Black", "BLK"), ("Ivory", "IVR"), ("Navy", "NVY"), ("Sage", "SGE"), ("Chocolate", "CHC"),
           ("Cobalt", "CBT"), ("Stone", "STN"), ("Rust", "RST"), ("Butter", "BTR"), ("Olive", "OLV"))


# -- records --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SeedVariant:
    sku: str
    size: str
    colour: str
    barcode: str  # EAN-13, or "" for the planted missing EAN
    price: Decimal  # what the shopper pays (Shopify's price)
    compare_at_price: Decimal | None  # the price before the sale, when on sale
    stock: dict[str, int]  # location -> available


@dataclass(frozen=True)
class SeedProduct:
    style: str  # the style code, e.g. ELK-AW25-1001
    handle: str  # Shopify's handle: the hub's parent SKU
    title: str
    brand: str
    category: str
    gender: str
    season: str
    description: str
    tags: tuple[str, ...]
    variants: tuple[SeedVariant, ...]

    @property
    def labelled(self) -> bool:
        return LABEL_TAG in self.tags


@dataclass(frozen=True)
class Problems:
    """The problems planted on purpose, and where an admin finds each (docs/getting-started.md)."""

    duplicate_sku: str  # on two different products: flagged by the catalogue import, kept out of sync
    missing_ean_sku: str  # no barcode: the listings flow rejects it before anything is sent
    trailing_space_sku: str  # "ABC-1 ": the hub refuses SKUs with stray whitespace


@dataclass(frozen=True)
class ShopifyCatalogue:
    products: tuple[SeedProduct, ...]
    problems: Problems

    @property
    def skus(self) -> list[str]:
        return [variant.sku for product in self.products for variant in product.variants]

    @property
    def labelled_skus(self) -> list[str]:
        return [variant.sku for product in self.products if product.labelled for variant in product.variants]

    def records(self) -> list[dict[str, Any]]:
        """The catalogue as the Shopify sandbox's ``POST /_control/products`` takes it."""
        return [
            {
                "title": product.title, "handle": product.handle, "vendor": product.brand,
                "product_type": product.category, "tags": list(product.tags),
                "description_html": f"<p>{product.description}</p>", "status": "ACTIVE",
                "variants": [
                    {"sku": v.sku, "barcode": v.barcode or None, "price": str(v.price),
                     "compare_at_price": str(v.compare_at_price) if v.compare_at_price is not None else None,
                     "size": v.size, "colour": v.colour, "stock": dict(v.stock)}
                    for v in product.variants
                ],
            }
            for product in self.products
        ]


# -- the Shopify catalogue ------------------------------------------------------------------------


def shopify_catalogue(skus: int = 1000, *, seed: int = SEED) -> ShopifyCatalogue:
    """About ``skus`` SKUs (exactly, counting the planted duplicate once per product that holds it)."""
    if skus < MIN_SKUS:
        raise ValueError(f"the demo catalogue needs at least {MIN_SKUS} SKUs (got {skus})")
    rng = random.Random(seed)
    barcodes = _barcodes()
    styles: list[dict[str, Any]] = []
    total = 0
    number = 0
    while total < skus:
        style = _style(rng, number)
        style["variants"] = style["variants"][: skus - total]
        total += len(style["variants"])
        styles.append(style)
        number += 1
    problems = _plant_problems(styles)
    products = []
    for style in styles:
        variants = tuple(
            SeedVariant(sku=v["sku"], size=v["size"], colour=v["colour"],
                        barcode="" if v.get("no_barcode") else next(barcodes),
                        price=v["price"], compare_at_price=v["compare_at"], stock=v["stock"])
            for v in style["variants"]
        )
        products.append(SeedProduct(
            style=style["style"], handle=style["handle"], title=style["title"], brand=style["brand"],
            category=style["category"], gender=style["gender"], season=style["season"],
            description=style["description"], tags=tuple(style["tags"]), variants=variants,
        ))
    return ShopifyCatalogue(products=tuple(products), problems=problems)


def _style(rng: random.Random, number: int) -> dict[str, Any]:
    brand = BRANDS[number % len(BRANDS)]
    choices = BRAND_CATEGORIES[brand.code]
    category = CATEGORIES[choices[(number // len(BRANDS)) % len(choices)]]
    season = SEASONS[(number // 2) % len(SEASONS)]
    fabric = rng.choice(FABRICS[season])
    noun = rng.choice(category.nouns)
    title = f"{fabric} {noun}"
    style_code = f"{brand.code}-{season}-{1001 + number}"
    colours = rng.sample(COLOURS, 1 if category.sizes == ("OS",) else rng.choice((2, 2, 3)))
    low, high = category.price_range
    retail = Decimal(rng.randrange(low, high + 1, 10)) - Decimal("0.05")  # 189 -> 188.95: shelf prices
    on_sale = rng.random() < 0.2
    price = (retail * Decimal("0.7")).quantize(Decimal("1")) - Decimal("0.05") if on_sale else retail
    tags = [f"gender:{category.gender}", f"season:{season}", season, fabric.split()[0].lower()]
    if number % UNLABELLED_EVERY != UNLABELLED_EVERY - 1:
        tags.append(LABEL_TAG)
    variants = []
    for colour, colour_code in colours:
        for size in category.sizes:
            stock = {LOCATIONS[0]: rng.choice((0, 1, 2, 3, 4, 5, 6, 8, 10, 12)), LOCATIONS[1]: rng.choice((0, 0, 1, 2, 3))}
            variants.append({"sku": f"{style_code}-{colour_code}-{size}", "size": size, "colour": colour,
                             "price": price, "compare_at": retail if on_sale else None, "stock": stock})
    return {
        "style": style_code, "handle": f"{_slug(title)}-{style_code.lower()}", "title": title,
        "brand": brand.name, "category": category.path, "gender": category.gender, "season": season,
        "description": (f"{title} by {brand.name}, from the {season} collection, "
                        f"in {' and '.join(c.lower() for c, _ in colours)}."),
        "tags": tags, "variants": variants,
    }


def _plant_problems(styles: list[dict[str, Any]]) -> Problems:
    """Three mistakes in labelled styles near the start, so even a small catalogue has them all."""
    labelled = [style for style in styles if LABEL_TAG in style["tags"] and len(style["variants"]) >= 3]
    if len(labelled) < 3:
        raise ValueError("the catalogue is too small for the planted problems")
    first, second, third = labelled[0], labelled[1], labelled[2]
    # 1. A SKU used twice: the second style's first variant was keyed with the first style's SKU.
    duplicate = first["variants"][0]["sku"]
    second["variants"][0]["sku"] = duplicate
    # 2. A variant whose EAN was never entered.
    missing = first["variants"][2]
    missing["no_barcode"] = True
    # 3. A SKU pasted with a trailing space.
    spaced = third["variants"][1]
    spaced["sku"] = spaced["sku"] + " "
    return Problems(duplicate_sku=duplicate, missing_ean_sku=missing["sku"], trailing_space_sku=spaced["sku"])


def _barcodes(prefix: str = "9312345") -> Any:
    """EAN-13s under an Australian (93) company prefix, each with its check digit."""
    item = 0
    while True:
        item += 1
        body = f"{prefix}{item:05d}"
        yield body + str(ean_check_digit(body))


def ean_check_digit(first_twelve: str) -> int:
    total = sum(int(digit) * (3 if index % 2 else 1) for index, digit in enumerate(first_twelve))
    return (10 - total % 10) % 10


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


# -- the Uphance brand ----------------------------------------------------------------------------

UPHANCE_BRAND = "Harbour Lane"
UPHANCE_SEASONS = ({"id": 125, "name": "AW25"}, {"id": 126, "name": "SS26"})
UPHANCE_STYLES = (
    ("Dresses", "Midi", "Tiered Midi Dress", "Women"),
    ("Tops", "Tees", "Boxy Linen Tee", "Women"),
    ("Knitwear", "Cardigans", "Cropped Cardigan", "Women"),
    ("Pants", "Wide Leg", "Wide Leg Pant", "Women"),
    ("Shirts", "Overshirts", "Cord Overshirt", "Men"),
    ("Knitwear", "Jumpers", "Crew Jumper", "Men"),
)
UPHANCE_SIZES = ("XS", "S", "M", "L")


@dataclass(frozen=True)
class UphanceCatalogue:
    products: tuple[dict[str, Any], ...]  # in the shape Uphance's GET /products returns
    seasons: tuple[dict[str, Any], ...] = field(default=UPHANCE_SEASONS)

    @property
    def skus(self) -> list[str]:
        return [sku["sku_number"] for p in self.products for v in p["variations"] for sku in v["skus"]]


def uphance_catalogue(price_lists: list[dict[str, Any]], *, styles: int = 12, seed: int = SEED,
                      updated_at: str = "2026-01-05T09:00:00.000Z") -> UphanceCatalogue:
    """A second brand (Harbour Lane) for the Uphance sandbox: ``styles`` styles in two colours and four
    sizes, seasons AW25 and SS26, a Gender custom field, EANs, and a price per Uphance price list
    (``price_lists``: ``[{"name", "currency", "factor"}]``, the sandbox's sales channels)."""
    rng = random.Random(seed + 1)
    barcodes = _barcodes("9387654")
    products = []
    for index in range(styles):
        category, sub_category, noun, gender = UPHANCE_STYLES[index % len(UPHANCE_STYLES)]
        season = UPHANCE_SEASONS[index % len(UPHANCE_SEASONS)]
        style = f"HL-{season['name']}-{2001 + index}"
        msrp = Decimal(rng.randrange(99, 260, 10)) - Decimal("0.05")
        colours = rng.sample(COLOURS, 2)
        variations = []
        for k, (colour, code) in enumerate(colours):
            skus = []
            for s, size in enumerate(UPHANCE_SIZES):
                on_hand = rng.randint(0, 20)
                allocated = min(on_hand, rng.randint(0, 2))
                incoming = rng.choice((0, 0, 5, 10))
                skus.append({"id": 700_000 + index * 100 + k * 10 + s, "sku_number": f"{style}-{code}-{size}",
                             "color": colour, "size": size, "ean": next(barcodes), "in_stock": on_hand,
                             "available_to_sell_from_stock": on_hand - allocated,
                             "available_to_sell": on_hand - allocated + incoming})
            prices = [{"name": p["name"], "currency": p["currency"],
                       "msrp_money": _money(msrp * Decimal(str(p.get("factor", 1)))),
                       "wsp_money": _money(msrp * Decimal(str(p.get("factor", 1))) / Decimal("2.2"))}
                      for p in price_lists]
            variations.append({"id": 60_000 + index * 10 + k, "color": colour, "textile_content": "100% cotton",
                               "prices": prices, "skus": skus})
        products.append({
            "id": 5000 + index, "product_identifier": style, "name": f"{noun}",
            "description": f"{noun} from the {UPHANCE_BRAND} {season['name']} range.",
            "sizing_system": ", ".join(UPHANCE_SIZES), "image_url": f"https://cdn.example.com/{style}.jpg",
            "not_for_sale": False, "brand": UPHANCE_BRAND, "category": category, "sub_category": sub_category,
            "season_id": [season["id"]],
            "custom_fields": [{"name": "Gender", "field_type": "dropdown", "value": gender}],
            "created_at": updated_at, "updated_at": updated_at, "variations": variations,
        })
    return UphanceCatalogue(products=tuple(products))


def _money(value: Decimal) -> str:
    return str(value.quantize(Decimal("0.01")))
