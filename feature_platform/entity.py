"""An entity: the thing features describe, and the key they are looked up by."""

from __future__ import annotations

from dataclasses import dataclass

from feature_platform.naming import check_snake_case


@dataclass(frozen=True)
class Entity:
    """``Entity("customer", join_key="customer_id")``: rows of every view of it share that key."""

    name: str
    join_key: str
    description: str = ""

    def __post_init__(self) -> None:
        check_snake_case("entity", self.name)
        check_snake_case(f"entity {self.name!r} join key", self.join_key)
