"""Shared fixtures: a tiny region set (a city with two districts inside a rural ring); a Kafka
broker (embedded Tansu) and a Redis per test module.

Tests that start a broker, Redis, Prometheus or Chromium carry the ``integration`` marker, so
``pytest -m "not integration"`` is the fast loop; a test that takes the ``broker`` or
``redis_url`` fixture without the marker fails collection.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stream.local.embedded import Service, redis_service, start_broker


def square(lat0: float, lat1: float, lon0: float, lon1: float) -> list[list[float]]:
    """A closed GeoJSON ring (lon, lat) around a lat/lon box."""
    return [[lon0, lat0], [lon1, lat0], [lon1, lat1], [lon0, lat1], [lon0, lat0]]


def feature(rid: str, rings: list[list[list[float]]], parent: str | None = None,
            urban: bool | None = None) -> dict[str, Any]:
    """A region feature."""
    props: dict[str, Any] = {"id": rid, "name": rid.title()}
    if parent:
        props["parent"] = parent
    if urban is not None:
        props["urban"] = urban
    return {"type": "Feature", "properties": props,
            "geometry": {"type": "Polygon", "coordinates": rings}}


CITY = (51.0, 51.2, 71.3, 71.6)
RURAL = (50.5, 51.7, 70.8, 72.1)


def two_district_city() -> dict[str, Any]:
    """City (two districts) inside a rural ring with a hole where the city is (a new dict)."""
    return {
        "type": "FeatureCollection",
        "features": [
            feature("city", [square(*CITY)], urban=True),
            feature("north", [square(51.1, 51.2, 71.3, 71.6)], parent="city", urban=True),
            feature("south", [square(51.0, 51.1, 71.3, 71.6)], parent="city", urban=True),
            feature("rural", [square(*RURAL), square(*CITY)], urban=False),
        ],
    }


@pytest.fixture
def regions_doc() -> dict[str, Any]:
    """:func:`two_district_city`."""
    return two_district_city()


@pytest.fixture
def regions_file(tmp_path: Path, regions_doc: dict[str, Any]) -> Path:
    """The region set written as GeoJSON."""
    path = tmp_path / "regions.geojson"
    path.write_text(json.dumps(regions_doc))
    return path


@pytest.fixture(autouse=True, scope="session")
def _footprint_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The footprint weights cache (``DEFACTO_CACHE_DIR``) in a folder of the session, never the
    user's ``~/.cache``."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DEFACTO_CACHE_DIR", str(tmp_path_factory.mktemp("defacto-cache")))
        yield


SERVICE_FIXTURES = ("broker", "redis_url")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Keep the ``integration`` marker true: service fixtures only in marked tests."""
    for item in items:
        used = [f for f in SERVICE_FIXTURES if f in getattr(item, "fixturenames", ())]
        if used and item.get_closest_marker("integration") is None:
            raise pytest.UsageError(f"{item.nodeid} uses {', '.join(used)} but is not marked "
                                    "@pytest.mark.integration")


@pytest.fixture(scope="module")
def broker() -> Iterator[Service]:
    svc = start_broker()
    yield svc
    svc.stop()


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    svc = redis_service(prefer_local=True)
    yield svc.url
    svc.stop()
