"""Discovery: words a person reads to find and reuse a feature, generated from its definition.

The same text serves the Dagster UI (asset descriptions, column schemas and lineage) and
``feature-platform catalog``, so what the catalog says can never drift from the code.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from feature_platform.feature_service import FeatureService
from feature_platform.feature_view import FeatureView
from feature_platform.registry import Registry


def duration(value: timedelta | None) -> str:
    if value is None:
        return "all history"
    seconds = int(value.total_seconds())
    for unit, size in (("week", 604800), ("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds % size == 0:
            count = seconds // size
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{seconds} seconds"


@dataclass(frozen=True)
class FeatureEntry:
    """One feature, as the catalog lists it."""

    view: FeatureView
    name: str
    dtype: str
    kind: str  # aggregation, feature, derived, on-demand
    how: str  # how it is computed, in one line
    description: str

    @property
    def reference(self) -> str:
        return f"{self.view.name}:{self.name}"


def feature_entries(view: FeatureView) -> list[FeatureEntry]:
    dtypes = view.feature_dtypes()
    entries = []
    for a in view.aggregations:
        what = "rows" if a.input is None else repr(a.input)
        how = f"{a.function} of {what} over {duration(a.window)} of {view.timestamp_field}"
        entries.append(FeatureEntry(view, a.name, str(dtypes[a.name]), "aggregation", how, a.description))
    for f in view.features:
        entries.append(FeatureEntry(view, f.name, str(dtypes[f.name]), "feature",
                                    f"current value of {f.expression!r}", f.description))
    for d in view.derived:
        entries.append(FeatureEntry(view, d.name, str(dtypes[d.name]), "derived", repr(d.expression), d.description))
    for o in view.on_demand:
        entries.append(FeatureEntry(view, o.name, str(dtypes[o.name]), "on-demand",
                                    f"{o.function.__name__}({', '.join(o.inputs)}, request time)", o.description))
    return entries


def describe_view(view: FeatureView) -> str:
    """The asset description: what the view is, how each feature is computed, what values mean."""
    kind = "aggregation" if view.is_aggregation_view else "latest-state"
    lines = [
        view.description or f"Features of {view.entity.name}.",
        "",
        f"**{kind} view** of entity `{view.entity.name}` (join key `{view.entity.join_key}`) over source table "
        f"`{view.source.name}`, keyed by `{view.source.name}.{view.entity_column}`, computed by the {view.engine} engine.",
        "",
        "| feature | type | how | description |",
        "|---|---|---|---|",
    ]
    for entry in feature_entries(view):
        lines.append(f"| `{entry.name}` | {entry.dtype} | {entry.how} | {entry.description} |")
    if view.is_aggregation_view:
        semantics = ("Values are exact at every instant T from the changes committed by T; windows are half-open "
                     "(T − W, T] on the event time; an empty window gives count 0, sum 0 and null otherwise.")
    else:
        semantics = ("The value at T is the entity's row as committed by T; a deleted row reads as null; a TOASTed "
                     "column that did not change keeps its previous value.")
    lines += ["", f"**Semantics.** {semantics} See docs/semantics.md.",
              f"**Freshness.** Materialized every hour (and by the CDC sensor as batches land); readers treat "
              f"values as unknown once the history is more than {duration(view.ttl)} (the TTL) behind."]
    return "\n".join(lines)


def describe_service(service: FeatureService, registry: Registry) -> str:
    lines = [service.description or f"Feature service {service.name}.", "",
             "Features, in the order the model expects them:", ""]
    for position, (view, feature) in enumerate(registry.resolve(service.features), start=1):
        lines.append(f"{position}. `{view.name}:{feature}` ({view.feature_dtypes()[feature]})")
    return "\n".join(lines)


def search(registry: Registry, term: str | None = None, entity: str | None = None, tag: str | None = None,
           owner: str | None = None) -> list[FeatureEntry]:
    """Features whose name, view, description or computation mention ``term``, filtered by entity, tag, owner."""
    found = []
    for view in registry.views.values():
        if entity and entity not in (view.entity.name, view.entity.join_key):
            continue
        if owner and not any(owner in o for o in view.owners):
            continue
        if tag:
            key, _, value = tag.partition("=")
            tags = {**view.tags, "entity": view.entity.name}
            if key not in tags or (value and tags[key] != value):
                continue
        for entry in feature_entries(view):
            text = " ".join([entry.reference, entry.description, entry.how, view.description]).lower()
            if term is None or term.lower() in text:
                found.append(entry)
    return found
