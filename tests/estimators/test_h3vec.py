"""estimators.h3vec.latlng_to_cell must return exactly h3.api.basic_int.latlng_to_cell."""

from __future__ import annotations

import h3
import numpy as np
import pytest

from estimators import h3vec
from estimators.h3vec import latlng_to_cell

RESOLUTIONS = range(h3vec.MAX_RES + 1)


def h3_reference(lat: np.ndarray, lng: np.ndarray, res: int) -> np.ndarray:
    """Per-point h3 (the ground truth); 0 where h3 raises (non-finite input)."""
    encode = h3.api.basic_int.latlng_to_cell
    out = np.zeros(len(lat), dtype=np.uint64)
    for n, (a, b) in enumerate(zip(np.asarray(lat, dtype=np.float64).tolist(),
                                   np.asarray(lng, dtype=np.float64).tolist(), strict=True)):
        try:
            out[n] = encode(a, b, res)
        except (h3.H3BaseException, ValueError):
            out[n] = 0
    return out


def assert_same_as_h3(lat: np.ndarray, lng: np.ndarray, res: int) -> None:
    """Exact equality with h3 for every point; reports the first few mismatches."""
    got = latlng_to_cell(lat, lng, res)
    want = h3_reference(lat, lng, res)
    bad = np.flatnonzero(got != want)
    detail = [(float(lat[i]), float(lng[i]), hex(got[i]), hex(want[i])) for i in bad[:5]]
    assert bad.size == 0, f"res {res}: {bad.size}/{len(lat)} mismatches, e.g. {detail}"


def uniform_sphere(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n points uniform on the sphere, in degrees."""
    rng = np.random.default_rng(seed)
    lat = np.degrees(np.arcsin(rng.uniform(-1.0, 1.0, n)))
    lng = rng.uniform(-180.0, 180.0, n)
    return lat, lng


def to_latlng(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors (..., 3) to degrees."""
    v = v / np.linalg.norm(v, axis=-1, keepdims=True)
    return np.degrees(np.arcsin(np.clip(v[..., 2], -1.0, 1.0))), np.degrees(
        np.arctan2(v[..., 1], v[..., 0]))


def to_vec(lat: np.ndarray, lng: np.ndarray) -> np.ndarray:
    """Degrees to unit vectors (..., 3)."""
    la, lo = np.radians(lat), np.radians(lng)
    return np.stack([np.cos(la) * np.cos(lo), np.cos(la) * np.sin(lo), np.sin(la)], axis=-1)


def jittered(lat: np.ndarray, lng: np.ndarray, scales: list[float], copies: int,
             seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The points themselves plus ``copies`` random offsets of each size in ``scales`` (deg)."""
    rng = np.random.default_rng(seed)
    lats, lngs = [lat], [lng]
    for scale in scales:
        for _ in range(copies):
            lats.append(lat + rng.normal(size=lat.shape) * scale)
            lngs.append(lng + rng.normal(size=lng.shape) * scale)
    out_lat = np.clip(np.concatenate(lats), -90.0, 90.0)
    out_lng = np.clip(np.concatenate(lngs), -180.0, 180.0)
    return out_lat, out_lng


def icosahedron() -> tuple[np.ndarray, list[tuple[int, int]], list[tuple[int, int, int]]]:
    """Vertices (the res-0 pentagon centres), edges and faces of H3's icosahedron, from h3."""
    verts = to_vec(*np.array([h3.cell_to_latlng(c) for c in h3.get_pentagons(0)]).T)
    dist = np.linalg.norm(verts[:, None] - verts[None], axis=-1)
    edge_len = np.sort(dist[0])[1]
    adjacent = np.abs(dist - edge_len) < 1e-6
    edges = [(a, b) for a in range(12) for b in range(a + 1, 12) if adjacent[a, b]]
    faces = [(a, b, c) for a, b in edges for c in range(b + 1, 12)
             if adjacent[a, c] and adjacent[b, c]]
    assert (len(edges), len(faces)) == (30, 20)
    return verts, edges, faces


# (a) uniformly random points on the sphere --------------------------------------------------

@pytest.mark.parametrize("res", RESOLUTIONS)
def test_uniform_sphere(res: int) -> None:
    lat, lng = uniform_sphere(200_000, seed=res)
    assert_same_as_h3(lat, lng, res)


# (b) near pentagon centres and icosahedron face edges / vertices / centres ------------------

@pytest.mark.parametrize("res", RESOLUTIONS)
def test_near_pentagons(res: int) -> None:
    centres = np.array([h3.cell_to_latlng(c) for c in h3.get_pentagons(res)])
    lat, lng = jittered(centres[:, 0], centres[:, 1],
                        [1e-15, 1e-12, 1e-9, 1e-7, 1e-5, 1e-3, 1e-1], copies=20, seed=res)
    assert_same_as_h3(lat, lng, res)


@pytest.mark.parametrize("res", RESOLUTIONS)
def test_near_face_edges_vertices_and_centres(res: int) -> None:
    rng = np.random.default_rng(100 + res)
    verts, edges, faces = icosahedron()
    t = rng.uniform(0.0, 1.0, (len(edges), 40, 1))
    a, b = verts[[e[0] for e in edges]][:, None], verts[[e[1] for e in edges]][:, None]
    on_edges = (1.0 - t) * a + t * b
    face_centres = verts[np.array(faces)].sum(axis=1)
    pts = np.concatenate([on_edges.reshape(-1, 3), verts, face_centres])
    lat, lng = jittered(*to_latlng(pts), [1e-14, 1e-11, 1e-8, 1e-5], copies=2, seed=res)
    assert_same_as_h3(lat, lng, res)


# (c) within metres (down to ~1e-10 m) of cell boundaries -----------------------------------

@pytest.mark.parametrize("res", RESOLUTIONS)
def test_near_cell_boundaries(res: int) -> None:
    lat, lng = uniform_sphere(150, seed=200 + res)
    cells = {h3.latlng_to_cell(a, b, res) for a, b in zip(lat, lng, strict=True)}
    verts = np.array([v for c in sorted(cells) for v in h3.cell_to_boundary(c)])
    rng = np.random.default_rng(300 + res)
    scales = 10.0 ** rng.uniform(-9.0, -6.0, (4, len(verts), 1))
    near = verts[None] + rng.normal(size=(4, *verts.shape)) * scales
    tight = verts[None] + rng.normal(size=(2, *verts.shape)) * np.array([1e-15, 1e-12])[:, None,
                                                                                         None]
    pts = np.concatenate([verts[None], near, tight]).reshape(-1, 2)
    assert_same_as_h3(np.clip(pts[:, 0], -90, 90), np.clip(pts[:, 1], -180, 180), res)


# (d) poles, antimeridian, lat = +-90, the integer-degree grid --------------------------------

@pytest.mark.parametrize("res", RESOLUTIONS)
def test_poles_antimeridian_and_grid(res: int) -> None:
    grid_lat, grid_lng = np.meshgrid(np.arange(-90.0, 90.5, 2.5), np.arange(-180.0, 180.5, 2.5))
    line = np.linspace(-90.0, 90.0, 721)
    lng_line = np.linspace(-180.0, 180.0, 721)
    lat = np.concatenate([grid_lat.ravel(), line, line, np.full(721, 90.0), np.full(721, -90.0),
                          [90.0, -90.0, 0.0, -0.0, 89.999999999999, -89.999999999999]])
    lng = np.concatenate([grid_lng.ravel(), np.full(721, 180.0), np.full(721, -180.0),
                          lng_line, lng_line, [180.0, -180.0, 180.0, -0.0, 179.999999999999,
                                               -179.999999999999]])
    assert_same_as_h3(lat, lng, res)


def test_out_of_range_values_follow_h3() -> None:
    lat = np.array([95.0, -100.0, 10.0, 10.0, 30.0, 180.0, 1e5, -270.0, 45.0])
    lng = np.array([10.0, 20.0, 200.0, -540.0, 720.5, 180.0, 1e5, 45.0, 3600.0])
    for res in (0, 5, 9, 15):
        assert_same_as_h3(lat, lng, res)


# (e) empty input, float32, shapes, invalid values ------------------------------------------

def test_empty() -> None:
    out = latlng_to_cell(np.array([]), np.array([]), 8)
    assert out.dtype == np.uint64
    assert out.shape == (0,)


@pytest.mark.parametrize("res", [0, 7, 8, 9, 15])
def test_float32_input(res: int) -> None:
    lat, lng = uniform_sphere(20_000, seed=400 + res)
    lat32, lng32 = lat.astype(np.float32), lng.astype(np.float32)
    got = latlng_to_cell(lat32, lng32, res)
    np.testing.assert_array_equal(got, h3_reference(lat32, lng32, res))


def test_shape_is_kept_and_lists_accepted() -> None:
    lat, lng = uniform_sphere(12, seed=5)
    grid = latlng_to_cell(lat.reshape(3, 4), lng.reshape(3, 4), 9)
    assert grid.shape == (3, 4)
    np.testing.assert_array_equal(grid.ravel(), h3_reference(lat, lng, 9))
    np.testing.assert_array_equal(latlng_to_cell(lat.tolist(), lng.tolist(), 9), grid.ravel())
    assert latlng_to_cell(np.float64(lat[0]), np.float64(lng[0]), 9).shape == ()


def test_non_finite_gives_zero() -> None:
    lat = np.array([np.nan, np.inf, -np.inf, 10.0, 10.0, 51.1])
    lng = np.array([0.0, 0.0, 0.0, np.nan, -np.inf, 71.4])
    got = latlng_to_cell(lat, lng, 8)
    np.testing.assert_array_equal(got[:5], 0)
    assert got[5] == h3.api.basic_int.latlng_to_cell(51.1, 71.4, 8)


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError):
        latlng_to_cell(np.zeros(2), np.zeros(2), 16)
    with pytest.raises(ValueError):
        latlng_to_cell(np.zeros(2), np.zeros(2), -1)
    with pytest.raises(ValueError):
        latlng_to_cell(np.zeros(2), np.zeros(3), 5)
    with pytest.raises(TypeError):
        latlng_to_cell(np.zeros(2), np.zeros(2), 5.0)  # type: ignore[arg-type]


# (f) Kazakhstan bounding box, 1 M points ----------------------------------------------------

def test_kazakhstan_bbox_1m_res8() -> None:
    rng = np.random.default_rng(2024)
    lat = rng.uniform(40.0, 56.0, 1_000_000)
    lng = rng.uniform(46.0, 88.0, 1_000_000)
    assert_same_as_h3(lat, lng, 8)


# Internals: the exact path on its own, and the ported tables against h3 --------------------

@pytest.mark.parametrize("res", RESOLUTIONS)
def test_exact_path_alone(res: int) -> None:
    lat, lng = uniform_sphere(3_000, seed=500 + res)
    face, a, b = h3vec._exact_face_axial(lat, lng, res)
    got = h3vec._digits_and_base_cell(face, a, b, h3vec._res_params(res))
    np.testing.assert_array_equal(got, h3_reference(lat, lng, res))


def test_pentagon_table_matches_h3() -> None:
    api = h3.api.basic_int
    res0 = sorted(api.get_res0_cells())
    assert len(res0) == 122
    assert [api.get_base_cell_number(c) for c in res0] == list(range(122))
    pentagons = [api.get_base_cell_number(c) for c in res0 if api.is_pentagon(c)]
    assert np.flatnonzero(h3vec._IS_PENTAGON).tolist() == pentagons


def test_res0_cell_centres() -> None:
    cells = h3.api.basic_int.get_res0_cells()
    centres = np.array([h3.api.basic_int.cell_to_latlng(c) for c in cells])
    got = latlng_to_cell(centres[:, 0], centres[:, 1], 0)
    np.testing.assert_array_equal(np.sort(got), np.sort(np.array(list(cells), dtype=np.uint64)))


def test_the_face_grid_is_the_same_whichever_rows_it_is_computed_with() -> None:
    """The grid is filled a band of rows at a time, as points need them: every band equals the
    same rows of the whole grid computed at once (bit for bit), and row 512 repeats 511."""
    nlat, nlng = h3vec._GRID_NLAT, h3vec._GRID_NLNG
    whole = h3vec._face_grid_rows(np.arange(nlat))
    assert (whole >= 0).mean() > 0.9  # most cells decide their face without the exact path
    rng = np.random.default_rng(7)
    for _ in range(5):
        rows = np.sort(rng.choice(nlat, size=37, replace=False))
        assert np.array_equal(h3vec._face_grid_rows(rows), whole[rows])
    lo, hi = 370, 402  # Kazakhstan's latitudes: 40.4 .. 56.5
    grid = h3vec._face_grid(lo, hi).reshape(nlat + 1, nlng)
    assert np.array_equal(grid[lo:hi + 1], whole[lo:hi + 1])
    assert np.array_equal(h3vec._face_grid(nlat, nlat).reshape(nlat + 1, nlng)[nlat], whole[-1])
