"""The disk cache of footprint weights: a hit gives the file's weights, anything else in the file
is a miss that computes them again and replaces it; the folder stays bounded; off is off."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from estimators.footprints import Footprints, footprint_weights
from estimators.regions import Region, RegionSet
from stream.estimate import footprint_cache
from stream.estimate.footprint_cache import MAX_FILES, cached_weights, weights_digest

FIELDS = ("ptr", "region", "weight", "lat", "lon", "thr")


def _regions() -> RegionSet:
    def box(lon0: float, lon1: float) -> np.ndarray:
        return np.array([[lon0, 50.5], [lon1, 50.5], [lon1, 51.5], [lon0, 51.5], [lon0, 50.5]])
    return RegionSet([Region("west", "West", None, True, (box(71.0, 71.5),)),
                      Region("east", "East", None, True, (box(71.5, 72.0),))])


def _plan() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(5)
    lat, lon = rng.uniform(50.6, 51.4, 300), rng.uniform(71.1, 71.9, 300)
    group = rng.integers(0, 2, 300)
    site_region = _regions().locate(lat, lon).astype(np.int32)
    return lat, lon, group, site_region


def _same(a: Footprints, b: Footprints) -> bool:
    return all(np.array_equal(getattr(a, f), getattr(b, f)) for f in FIELDS)


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DEFACTO_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / "footprints"


def test_a_hit_reads_the_file_a_miss_computes_and_stores(folder: Path) -> None:
    regions = _regions()
    lat, lon, group, site = _plan()
    expected = footprint_weights(lat, lon, group, regions, None, site)
    first = cached_weights(lat, lon, group, regions, None, site)
    assert _same(first, expected)
    (path,) = folder.glob("*.npz")
    assert path.stem == weights_digest(lat, lon, group, regions, None, site)
    assert (folder.stat().st_mode & 0o777) == 0o700
    # a hit comes from the file: a well-formed file of the same digest is taken as it is
    changed = replace(expected, lat=expected.lat + 1.0)
    footprint_cache._store(folder, path, path.stem, changed)
    assert _same(cached_weights(lat, lon, group, regions, None, site), changed)
    # another density, another digest, another file
    density = np.array([2.0, 1.0, 1.0])
    other = cached_weights(lat, lon, group, regions, density, site)
    assert _same(other, footprint_weights(lat, lon, group, regions, density, site))
    assert len(list(folder.glob("*.npz"))) == 2


@pytest.mark.parametrize("damage", ["truncated", "garbage", "other digest", "wrong size"])
def test_a_damaged_or_foreign_file_is_a_miss_and_is_replaced(folder: Path, damage: str) -> None:
    regions = _regions()
    lat, lon, group, site = _plan()
    expected = cached_weights(lat, lon, group, regions, None, site)
    (path,) = folder.glob("*.npz")
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:300])
    elif damage == "garbage":
        path.write_bytes(b"not a cache file")
    elif damage == "other digest":
        footprint_cache._store(folder, path, "0" * 32, replace(expected, lat=expected.lat + 1))
    else:  # the digest's name but the weights of a plan one row shorter
        short = footprint_weights(lat[:-1], lon[:-1], group[:-1], regions, None, site[:-1])
        footprint_cache._store(folder, path, path.stem, short)
    assert _same(cached_weights(lat, lon, group, regions, None, site), expected)
    assert footprint_cache._load(path, path.stem, len(lat), regions.n) is not None  # replaced


def test_the_folder_keeps_the_most_recent_files_only(folder: Path) -> None:
    regions = _regions()
    lat, lon, group, site = _plan()
    for i in range(MAX_FILES + 3):
        cached_weights(lat, lon, group, regions, np.array([1.0 + i, 1.0, 1.0]), site)
    assert len(list(folder.glob("*.npz"))) == MAX_FILES
    assert not list(folder.glob(".tmp-*"))


def test_off_or_unwritable_still_gives_the_weights(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    regions = _regions()
    lat, lon, group, site = _plan()
    expected = footprint_weights(lat, lon, group, regions, None, site)
    monkeypatch.setenv("DEFACTO_CACHE_DIR", "off")
    assert footprint_cache.cache_dir() is None
    assert _same(cached_weights(lat, lon, group, regions, None, site), expected)
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder would be")
    monkeypatch.setenv("DEFACTO_CACHE_DIR", str(blocker))
    assert _same(cached_weights(lat, lon, group, regions, None, site), expected)
    monkeypatch.delenv("DEFACTO_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert footprint_cache.cache_dir() == tmp_path / "xdg" / "defacto" / "footprints"
