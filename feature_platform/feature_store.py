"""The SDK: one object for training reads (offline history) and serving reads (Redis).

    store = FeatureStore.from_env()
    training = store.get_historical_features(entity_df, service="churn_model")

Feature names are the same everywhere: ``"view:feature"`` references, or a feature
service's name; columns come back named by feature (``view__feature`` with
``full_feature_names=True``) in the requested order.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from feature_platform.config import Settings
from feature_platform.feature_view import FeatureView
from feature_platform.historical import check_requested, lookup_view, normalize_entity_df
from feature_platform.offline_store import OfflineFeatureStore
from feature_platform.registry import Registry, UnknownFeatureError
from feature_platform.storage import Store


@dataclass
class FeatureStore:
    settings: Settings
    registry: Registry

    @classmethod
    def from_env(cls, registry: Registry | None = None) -> "FeatureStore":
        return cls(Settings.from_env(), registry or Registry.from_module())

    @property
    def offline(self) -> OfflineFeatureStore:
        return OfflineFeatureStore(Store(self.settings.project_offline_root))

    def _requested(self, features, service) -> list[tuple[FeatureView, str]]:
        if (features is None) == (service is None):
            raise UnknownFeatureError("pass exactly one of features=[...] or service=...")
        references = self.registry.service(service).features if service is not None else list(features)
        return self.registry.resolve(references)

    def get_historical_features(self, entity_df: pd.DataFrame, features: list[str] | None = None,
                                service: str | None = None, full_feature_names: bool = False,
                                decimals: str = "float") -> pd.DataFrame:
        """Point-in-time correct feature values for every row of ``entity_df``.

        ``entity_df`` holds the join keys and ``event_timestamp``; every row is kept, in
        order, duplicates included, and gets each feature's value as of its timestamp.
        Decimal features come back as floats, or as exact ``Decimal`` with ``decimals="decimal"``.
        """
        requested = self._requested(features, service)
        check_requested(entity_df, requested)
        rows = normalize_entity_df(entity_df, sorted({v.entity.join_key for v, _ in requested}))
        result = rows.copy()
        by_view: dict[str, list[str]] = {}
        for view, feature in requested:
            by_view.setdefault(view.name, []).append(feature)
        offline = self.offline
        first = self.settings.partitions_start
        looked_up: dict[str, pd.DataFrame] = {}
        for view_name, names in by_view.items():
            view = self.registry.view(view_name)
            looked_up[view_name] = lookup_view(
                rows, view, offline.history_files(view, first), offline.horizon(view, first), names, decimals)
        for view, feature in requested:
            column = f"{view.name}__{feature}" if full_feature_names else feature
            if column in result.columns:
                raise UnknownFeatureError(
                    f"two requested features are both named {column!r}; pass full_feature_names=True")
            result[column] = looked_up[view.name][feature].array
        return result
