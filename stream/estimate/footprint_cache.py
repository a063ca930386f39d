"""A bounded disk cache of border-cell footprint weights (:mod:`estimators.footprints`).

Tessellating a national cell plan and cutting it by the regions takes seconds
(:func:`~estimators.footprints.footprint_weights`), the same seconds at every ``defacto
calibrate``, ``replay`` and worker start over the same plan, regions and reference population.
:func:`cached_weights` keeps each result in a file named by a digest of everything it depends
on: the plan's points, operators and site regions, the regions (ids, parents, order, geometry as
WKB), the density prior, the module's constants and the versions of shapely, GEOS and numpy. A
file is used only when it holds that same digest and arrays of the right kinds and sizes;
anything else (a truncated, corrupt or foreign file, another digest) is a miss: the weights are
computed again and the file replaced. Files are written whole and renamed into place, so a
reader never sees a partial one; at most :data:`MAX_FILES` are kept, the least recently used
removed. The cache is best effort: a folder that cannot be made, read or written only costs the
computation.

Where: ``$DEFACTO_CACHE_DIR/footprints`` (``off``: no cache), by default
``$XDG_CACHE_HOME/defacto/footprints`` or ``~/.cache/defacto/footprints``, made private
(mode 0700: the weights' points come from the cell plan).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path

import numpy as np
import shapely

from estimators import footprints as fpmod
from estimators.footprints import Footprints, footprint_weights, start_rows
from estimators.regions import RegionSet

FORMAT = b"defacto-footprints-1"
"""Changes whenever the weights or this file's layout would: older files become misses."""
MAX_FILES = 8
"""Cache files kept (each about 10 bytes per plan row plus 36 per piece: 1.4 MB for a
110,000-row plan); the least recently used beyond this are removed."""
_FIELDS = ("ptr", "region", "weight", "lat", "lon", "thr")
_KINDS = {"ptr": np.int64, "region": np.int32, "weight": np.float64, "lat": np.float64,
          "lon": np.float64, "thr": np.int64}


def cache_dir() -> Path | None:
    """The cache folder (None: ``DEFACTO_CACHE_DIR=off``)."""
    root = os.environ.get("DEFACTO_CACHE_DIR")
    if root is not None and root.strip().lower() in ("off", "none", "0", ""):
        return None
    if root is None:
        xdg = os.environ.get("XDG_CACHE_HOME")
        root = os.path.join(xdg, "defacto") if xdg else os.path.join(Path.home(), ".cache",
                                                                    "defacto")
    return Path(root) / "footprints"


def weights_digest(lat: np.ndarray, lon: np.ndarray, group: np.ndarray, regions: RegionSet,
                   density: np.ndarray | None, site_region: np.ndarray) -> str:
    """Hex digest (32 characters) of everything :func:`footprint_weights` with these arguments
    depends on (see the module docstring)."""
    h = hashlib.blake2b(digest_size=16)

    def add(data: bytes) -> None:
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)

    add(FORMAT)
    add(repr((fpmod.KM_PER_DEG, fpmod.REACH_FACTOR, fpmod.MIN_SHARE, fpmod.WEIGHT_DIGITS,
              shapely.__version__, shapely.geos_version_string, np.__version__)).encode())
    for a in (lat, lon, group, site_region, np.zeros(0) if density is None else density):
        arr = np.ascontiguousarray(a)
        add(repr((arr.dtype.str, arr.shape)).encode())
        add(arr.tobytes())
    add(repr((density is None, regions.n, list(regions.ids[: regions.n]),
              np.asarray(regions.depth[: regions.n]).tolist())).encode())
    for r in regions.regions:
        shape = r.geometry if r.geometry is not None \
            else shapely.Polygon(r.rings[0], r.rings[1:])
        add(repr((r.id, r.parent)).encode())
        add(shapely.to_wkb(shape, byte_order=1, include_srid=False))
    return h.hexdigest()


def _load(path: Path, digest: str, n_rows: int, n_regions: int) -> Footprints | None:
    """The weights in ``path`` if it is a whole cache file of ``digest`` for ``n_rows`` plan
    rows and ``n_regions`` regions, else None."""
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["digest"]) != digest:
                return None
            arrays = {name: z[name] for name in _FIELDS}
    except Exception:  # whatever a damaged file raises (BadZipFile, zlib.error, ...): a miss
        return None
    for name, kind in _KINDS.items():
        a = arrays[name]
        if a.dtype != kind or a.ndim != 1:
            return None
    ptr, pieces = arrays["ptr"], len(arrays["region"])
    if len(ptr) != n_rows + 1 or ptr[0] != 0 or ptr[-1] != pieces or (np.diff(ptr) < 0).any():
        return None
    if any(len(arrays[name]) != pieces for name in _FIELDS[1:]):
        return None
    if pieces and (arrays["region"].min() < 0 or arrays["region"].max() > n_regions):
        return None
    thr = arrays["thr"]
    if not np.array_equal(thr >> 33, start_rows(ptr)) or (np.diff(thr) < 0).any():
        return None
    return Footprints(**arrays)


def _store(folder: Path, path: Path, digest: str, fp: Footprints) -> None:
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".npz")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, digest=np.array(digest), **{name: getattr(fp, name) for name in _FIELDS})
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    files = sorted(folder.glob("*.npz"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in files[MAX_FILES:]:
        old.unlink(missing_ok=True)


def cached_weights(lat: np.ndarray, lon: np.ndarray, group: np.ndarray, regions: RegionSet,
                   density: np.ndarray | None, site_region: np.ndarray) -> Footprints:
    """:func:`~estimators.footprints.footprint_weights` (default constants) through the disk
    cache (a :data:`~estimators.footprints.WeightsFunction`): the same arrays, read from the
    cache file when a whole one of the same digest is there, else computed and stored."""
    folder = cache_dir()
    if folder is None:
        return footprint_weights(lat, lon, group, regions, density, site_region)
    digest = weights_digest(lat, lon, group, regions, density, site_region)
    path = folder / f"{digest}.npz"
    fp = _load(path, digest, len(lat), regions.n)
    if fp is not None:
        with contextlib.suppress(OSError):
            os.utime(path)  # recently used
        return fp
    fp = footprint_weights(lat, lon, group, regions, density, site_region)
    with contextlib.suppress(OSError):  # best effort: the weights are computed
        _store(folder, path, digest, fp)
    return fp
