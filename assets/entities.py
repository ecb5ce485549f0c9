"""The entities of the inventory shop: what features describe."""

from feature_platform.entity import Entity

customer = Entity("customer", join_key="customer_id", description="A customer of the shop (customers.id).")
product = Entity("product", join_key="product_id", description="A product of the catalogue (products.id).")
