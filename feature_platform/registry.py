"""The registry: every feature view and feature service of a deployment, found by name.

The registry is the code: a deployment lists its views and services in a module
(``assets.feature_views`` here, or the module named by ``FP_REGISTRY_MODULE``), and the
SDK, the CLI and the Dagster assets all read that same module.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass

from feature_platform.feature_service import FeatureService, parse_reference
from feature_platform.feature_view import FeatureView
from feature_platform.naming import DefinitionError

DEFAULT_REGISTRY_MODULE = "assets.feature_views"


class UnknownFeatureError(KeyError):
    """A feature, view or service name that the registry does not know."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class Registry:
    views: dict[str, FeatureView]
    services: dict[str, FeatureService]

    @classmethod
    def of(cls, views, services=()) -> "Registry":
        registry = cls({v.name: v for v in views}, {s.name: s for s in services})
        for service in registry.services.values():
            registry.resolve(service.features)  # fail at definition time, not at read time
        return registry

    @classmethod
    def from_module(cls, module_name: str | None = None) -> "Registry":
        module = importlib.import_module(module_name or os.environ.get("FP_REGISTRY_MODULE", DEFAULT_REGISTRY_MODULE))
        return cls.of(getattr(module, "FEATURE_VIEWS"), getattr(module, "FEATURE_SERVICES", ()))

    def view(self, name: str) -> FeatureView:
        if name not in self.views:
            raise UnknownFeatureError(f"unknown feature view {name!r}; known: {', '.join(sorted(self.views))}")
        return self.views[name]

    def service(self, name: str) -> FeatureService:
        if name not in self.services:
            raise UnknownFeatureError(f"unknown feature service {name!r}; known: {', '.join(sorted(self.services))}")
        return self.services[name]

    def resolve(self, references) -> list[tuple[FeatureView, str]]:
        """``["view:feature", ...]`` → [(view, feature)], in the given order."""
        resolved = []
        for reference in references:
            try:
                view_name, feature = parse_reference(reference)
            except DefinitionError as error:
                raise UnknownFeatureError(str(error)) from None
            view = self.view(view_name)
            if feature not in view.feature_names:
                raise UnknownFeatureError(
                    f"unknown feature {reference!r}: view {view_name!r} has {', '.join(view.feature_names)}")
            resolved.append((view, feature))
        return resolved

    def services_using(self, view: FeatureView) -> list[FeatureService]:
        return [s for s in self.services.values() if any(r.split(":")[0] == view.name for r in s.features)]
