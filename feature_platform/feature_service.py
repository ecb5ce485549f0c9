"""Feature services: the named, ordered list of features one model was trained with."""

from __future__ import annotations

from dataclasses import dataclass

from feature_platform.naming import DefinitionError, check_snake_case


def parse_reference(reference: str) -> tuple[str, str]:
    """``"customer_orders:total_spend_30d"`` → (view, feature)."""
    view, separator, feature = reference.partition(":")
    if not separator or not view or not feature or ":" in feature:
        raise DefinitionError(f"feature reference {reference!r} must look like 'view:feature'")
    return view, feature


@dataclass(frozen=True)
class FeatureService:
    """``FeatureService("churn_model", features=["customer_orders:total_spend_30d", ...])``.

    The order of ``features`` is the order a model artifact expects its inputs in; online
    and offline reads both return the columns in this order.
    """

    name: str
    features: tuple[str, ...]
    description: str = ""
    owners: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_snake_case("feature service", self.name)
        object.__setattr__(self, "features", tuple(self.features))
        object.__setattr__(self, "owners", tuple(self.owners))
        for reference in self.features:
            parse_reference(reference)
        if len(set(self.features)) != len(self.features):
            raise DefinitionError(f"feature service {self.name!r} lists a feature twice")
