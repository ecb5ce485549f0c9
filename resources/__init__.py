"""Resources of this deployment, configured from the environment (see README: Configuration)."""

from feature_platform.config import Settings
from feature_platform.orchestration.resources import LandingZoneResource, OfflineStoreResource


def build_resources(settings: Settings | None = None) -> dict:
    settings = settings or Settings.from_env()
    return {
        "landing": LandingZoneResource(uri=settings.landing_uri),
        "offline": OfflineStoreResource(uri=settings.offline_uri, project=settings.project),
    }
