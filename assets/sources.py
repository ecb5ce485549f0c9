"""The demo deployment's captured tables: Debezium's tutorial ``inventory`` PostgreSQL database.

Changes arrive on topics ``dbserver1.inventory.<table>``. Two columns differ from the
tutorial: ``orders.unit_price NUMERIC(10,2)`` (so order value is exact money) and a
TOASTed ``customers.biography TEXT`` (so an update can arrive without it).
"""

from feature_platform.sources import Column, SourceTable

TOPIC_PREFIX = "dbserver1.inventory"

customers = SourceTable(
    name="customers",
    topic=f"{TOPIC_PREFIX}.customers",
    primary_key=("id",),
    columns=(
        Column("id", "int32", "Customer id; the join key of the customer entity."),
        Column("first_name", "string"),
        Column("last_name", "string"),
        Column("email", "string"),
        Column("biography", "string", "Free text, stored TOASTed: unchanged values arrive as a placeholder."),
    ),
    description="Customers of the inventory shop.",
    owners=("team:growth",),
)

products = SourceTable(
    name="products",
    topic=f"{TOPIC_PREFIX}.products",
    primary_key=("id",),
    columns=(
        Column("id", "int32"),
        Column("name", "string"),
        Column("description", "string"),
        Column("weight", "float64"),
    ),
    description="The product catalogue.",
    owners=("team:catalog",),
)

products_on_hand = SourceTable(
    name="products_on_hand",
    topic=f"{TOPIC_PREFIX}.products_on_hand",
    primary_key=("product_id",),
    columns=(
        Column("product_id", "int32"),
        Column("quantity", "int32", "Units in stock."),
    ),
    description="Stock level per product.",
    owners=("team:catalog",),
)

orders = SourceTable(
    name="orders",
    topic=f"{TOPIC_PREFIX}.orders",
    primary_key=("id",),
    columns=(
        Column("id", "int32"),
        Column("order_date", "date", "Day of the order (Debezium Date), at 00:00 UTC."),
        Column("purchaser", "int32", "The customer who placed the order (customers.id)."),
        Column("quantity", "int32"),
        Column("product_id", "int32"),
        Column("unit_price", "decimal(10,2)", "Price per unit, exact money."),
    ),
    description="Orders placed by customers.",
    owners=("team:growth",),
)

SOURCE_TABLES = (customers, products, products_on_hand, orders)
