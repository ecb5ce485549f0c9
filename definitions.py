"""The code location: this deployment's assets, sensors and schedules, and its resources.

``workspace.yaml`` points here. The library (``feature_platform``) never imports this
module; a second deployment would write its own.
"""

import dagster as dg

import assets
import sensors
from resources import build_resources

defs = dg.Definitions.merge(
    dg.load_definitions_from_package_module(assets),
    dg.load_definitions_from_package_module(sensors),
    dg.Definitions(resources=build_resources()),
)
