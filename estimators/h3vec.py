"""Vectorized H3 ``latLngToCell`` in pure numpy.

Why: h3-py 4 has no array call; looping ``h3.latlng_to_cell`` over pings runs at ~2 M points/s,
which dominates binning of lat/lon pings. :func:`latlng_to_cell` encodes whole arrays (>= 10 M
points/s on one core at res 7-9) and returns exactly the integers of
``h3.api.basic_int.latlng_to_cell`` (same bits, incl. the cell mode, resolution and unused digits).

The algorithm and all constant tables follow the H3 reference implementation (uber/h3 v4.5.0,
``faceijk.c``, ``coordijk.c``, ``h3Index.c``, ``baseCells.c``, ``vec3.c``, ``latLng.c``,
``constants.h``; Apache-2.0):

1. lat/lng (degrees -> radians as ``degsToRads``) to a unit vector; the icosahedron face is the
   one whose centre (``faceCenterPoint``) is closest by squared euclidean distance;
2. face-centred gnomonic projection: r = acos(1 - sqd / 2), azimuth from the face centre in its
   local north/east tangent basis (4.5.0 does this on 3-D vectors, so the older
   ``faceCenterGeo`` / ``_geoAzimuthRads`` route is not needed),
   theta = ``faceAxesAzRadsCII[face][0]`` - azimuth (minus the aperture-7 rotation for Class III
   resolutions), hex2d = tan(r) / RES0_U_GNOMONIC * sqrt(7)^res * (cos theta, sin theta);
3. ``_hex2dToCoordIJK``: the hex2d point to the IJK coordinates of the containing cell;
4. ``_faceIjkToH3``: aperture-7 digit extraction up to resolution 0 (``_upAp7`` / ``_upAp7r``
   with ``_downAp7`` / ``_downAp7r``), base cell lookup (``faceIjkBaseCells``) and the
   ``ccwRot60`` rotations, incl. the pentagon handling (leaving the deleted k-axes subsequence,
   ``cwOffsetPent`` faces, ``_h3RotatePent60ccw``).

How the whole-array version stays exact: the bulk of the points take a fast path that computes
the same geometric quantities with cheaper, algebraically equivalent float64 formulas (sin/cos
from the half-angle tangent, the face from a precomputed lat/lng grid with 20 dot products only
near face edges, the gnomonic coordinates as dot products instead of
acos/atan2/tan, nearest-hex rounding, digit extraction four levels at a time through a table of
residues modulo 49, since two aperture-7 steps of alternating class multiply by exactly 7).
Every data-dependent decision of the fast path (closest face, containing hexagon) is checked
against a conservative bound on the difference to H3's own float64 rounding; the rare points
that fall within it (within ~1e-13 of a face edge or cell boundary, or very near a face centre
where H3's acos(1 - sqd / 2) itself loses precision) and out-of-range inputs are recomputed by a
step-by-step mirror of the compiled C code (same float64 operations in the same order, the same
libm through :mod:`math`), so results match h3 bit for bit, also for points exactly on cell
vertices (see tests/test_h3vec.py). The integer part (digits, base cell, rotations) is exact.
The mirror relies on Python's :mod:`math` and h3 using the same libm (true for the Linux wheels).
"""

from __future__ import annotations

import math
import operator
import threading
from functools import cache
from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["MAX_RES", "cell_to_parent", "hexagon_circumradius", "is_pentagon", "latlng_to_cell"]

MAX_RES = 15

# constants.h (the double values compiled into h3 4.5.0).
_M_PI_180 = 0.0174532925199432957692369076848861271111
_M_2PI = 6.28318530717958647692528676655900576839433
_EPSILON = 0.0000000000000001
_M_AP7_ROT_RADS = 0.333473172251832115336090755351601070065900389
_RES0_U_GNOMONIC = 0.38196601125010500003
_INV_RES0_U_GNOMONIC = 1.0 / _RES0_U_GNOMONIC  # as compiled (one ulp off the decimal 1/x)
_M_SQRT7 = 2.6457513110645905905016157536392604257102
_M_RSIN60 = 1.1547005383792515290182975610039149112953
_ONE_THIRD = 1.0 / 3.0
_TWO_THIRDS = 2.0 / 3.0
_ONE_SEVENTH = 1.0 / 7.0

# faceijk.c: icosahedron face centres on the unit sphere (faceCenterPoint) and the azimuth of
# each face's Class II i-axis (faceAxesAzRadsCII[face][0]).
_FACE_CENTER_POINT = np.array([
    [0.2199307791404606, 0.6583691780274996, 0.7198475378926182],
    [-0.2139234834501421, 0.1478171829550703, 0.9656017935214205],
    [0.1092625278784797, -0.4811951572873210, 0.8697775121287253],
    [0.7428567301586791, -0.3593941678278028, 0.5648005936517033],
    [0.8112534709140969, 0.3448953237639384, 0.4721387736413930],
    [-0.1055498149613921, 0.9794457296411413, 0.1718874610009365],
    [-0.8075407579970092, 0.1533552485898818, 0.5695261994882688],
    [-0.2846148069787907, -0.8644080972654206, 0.4144792552473539],
    [0.7405621473854482, -0.6673299564565524, -0.0789837646326737],
    [0.8512303986474293, 0.4722343788582681, -0.2289137388687808],
    [-0.7405621473854481, 0.6673299564565524, 0.0789837646326737],
    [-0.8512303986474292, -0.4722343788582682, 0.2289137388687808],
    [0.1055498149613919, -0.9794457296411413, -0.1718874610009365],
    [0.8075407579970092, -0.1533552485898819, -0.5695261994882688],
    [0.2846148069787908, 0.8644080972654204, -0.4144792552473539],
    [-0.7428567301586791, 0.3593941678278027, -0.5648005936517033],
    [-0.8112534709140971, -0.3448953237639382, -0.4721387736413930],
    [-0.2199307791404607, -0.6583691780274996, -0.7198475378926182],
    [0.2139234834501420, -0.1478171829550704, -0.9656017935214205],
    [-0.1092625278784796, 0.4811951572873210, -0.8697775121287253],
])
_FACE_AXIS_AZ_RADS = np.array([
    5.619958268523939882, 5.760339081714187279, 0.780213654393430055, 0.430469363979999913,
    6.130269123335111400, 2.692877706530642877, 2.982963003477243874, 3.532912002790141181,
    3.494305004259568154, 3.003214169499538391, 5.930472956509811562, 0.138378484090254847,
    0.448714947059150361, 0.158629650112549365, 5.891865957979238535, 2.711123289609793325,
    3.294508837434268316, 3.804819692245439833, 3.664438879055192436, 2.361378999196363184,
])

# baseCells.c: faceIjkBaseCells[face][i][j][k] = {baseCell, ccwRot60}, flattened over (i, j, k)
# with i, j, k in 0..2 (row = face; the three lines of a row are i = 0, 1, 2).
_FACE_IJK_BASE_CELL = np.array([
    [16, 18, 24, 33, 30, 32, 49, 48, 50,  # face 0
     8, 5, 10, 22, 16, 18, 41, 33, 30,
     4, 0, 2, 15, 8, 5, 31, 22, 16],
    [2, 6, 14, 10, 11, 17, 24, 23, 25,  # face 1
     0, 1, 9, 5, 2, 6, 18, 10, 11,
     4, 3, 7, 8, 0, 1, 16, 5, 2],
    [7, 21, 38, 9, 19, 34, 14, 20, 36,  # face 2
     3, 13, 29, 1, 7, 21, 6, 9, 19,
     4, 12, 26, 0, 3, 13, 2, 1, 7],
    [26, 42, 58, 29, 43, 62, 38, 47, 64,  # face 3
     12, 28, 44, 13, 26, 42, 21, 29, 43,
     4, 15, 31, 3, 12, 28, 7, 13, 26],
    [31, 41, 49, 44, 53, 61, 58, 65, 75,  # face 4
     15, 22, 33, 28, 31, 41, 42, 44, 53,
     4, 8, 16, 12, 15, 22, 26, 28, 31],
    [50, 48, 49, 32, 30, 33, 24, 18, 16,  # face 5
     70, 67, 66, 52, 50, 48, 37, 32, 30,
     83, 87, 85, 74, 70, 67, 57, 52, 50],
    [25, 23, 24, 17, 11, 10, 14, 6, 2,  # face 6
     45, 39, 37, 35, 25, 23, 27, 17, 11,
     63, 59, 57, 56, 45, 39, 46, 35, 25],
    [36, 20, 14, 34, 19, 9, 38, 21, 7,  # face 7
     55, 40, 27, 54, 36, 20, 51, 34, 19,
     72, 60, 46, 73, 55, 40, 71, 54, 36],
    [64, 47, 38, 62, 43, 29, 58, 42, 26,  # face 8
     84, 69, 51, 82, 64, 47, 76, 62, 43,
     97, 89, 71, 98, 84, 69, 96, 82, 64],
    [75, 65, 58, 61, 53, 44, 49, 41, 31,  # face 9
     94, 86, 76, 81, 75, 65, 66, 61, 53,
     107, 104, 96, 101, 94, 86, 85, 81, 75],
    [57, 59, 63, 74, 78, 79, 83, 92, 95,  # face 10
     37, 39, 45, 52, 57, 59, 70, 74, 78,
     24, 23, 25, 32, 37, 39, 50, 52, 57],
    [46, 60, 72, 56, 68, 80, 63, 77, 90,  # face 11
     27, 40, 55, 35, 46, 60, 45, 56, 68,
     14, 20, 36, 17, 27, 40, 25, 35, 46],
    [71, 89, 97, 73, 91, 103, 72, 88, 105,  # face 12
     51, 69, 84, 54, 71, 89, 55, 73, 91,
     38, 47, 64, 34, 51, 69, 36, 54, 71],
    [96, 104, 107, 98, 110, 115, 97, 111, 119,  # face 13
     76, 86, 94, 82, 96, 104, 84, 98, 110,
     58, 65, 75, 62, 76, 86, 64, 82, 96],
    [85, 87, 83, 101, 102, 100, 107, 112, 114,  # face 14
     66, 67, 70, 81, 85, 87, 94, 101, 102,
     49, 48, 50, 61, 66, 67, 75, 81, 85],
    [95, 92, 83, 79, 78, 74, 63, 59, 57,  # face 15
     109, 108, 100, 93, 95, 92, 77, 79, 78,
     117, 118, 114, 106, 109, 108, 90, 93, 95],
    [90, 77, 63, 80, 68, 56, 72, 60, 46,  # face 16
     106, 93, 79, 99, 90, 77, 88, 80, 68,
     117, 109, 95, 113, 106, 93, 105, 99, 90],
    [105, 88, 72, 103, 91, 73, 97, 89, 71,  # face 17
     113, 99, 80, 116, 105, 88, 111, 103, 91,
     117, 106, 90, 121, 113, 99, 119, 116, 105],
    [119, 111, 97, 115, 110, 98, 107, 104, 96,  # face 18
     121, 116, 103, 120, 119, 111, 112, 115, 110,
     117, 113, 105, 118, 121, 116, 114, 120, 119],
    [114, 112, 107, 100, 102, 101, 83, 87, 85,  # face 19
     118, 120, 115, 108, 114, 112, 92, 100, 102,
     117, 121, 119, 109, 118, 120, 95, 108, 114],
], dtype=np.int64).ravel()
_FACE_IJK_CCW_ROT60 = np.array([int(c) for c in "".join((
    "000003133 055000100 055105100",  # face 0
    "000003133 055000100 155105100",  # face 1
    "000003133 055000100 255105100",  # face 2
    "000003133 055000100 355105100",  # face 3
    "000003133 055000100 455105100",  # face 4
    "003033333 003300303 033300130",  # face 5
    "003033333 003300303 033300330",  # face 6
    "003033333 003300303 033300330",  # face 7
    "003033333 003300303 033300330",  # face 8
    "003033333 003300303 033300330",  # face 9
    "003033333 033000303 033303300",  # face 10
    "003033333 033000303 033303300",  # face 11
    "003033333 033000303 033303300",  # face 12
    "003033333 033000303 033303300",  # face 13
    "003033333 033000303 033303300",  # face 14
    "000003133 005100100 455100110",  # face 15
    "000003133 005100100 355100110",  # face 16
    "000003133 005100100 255100110",  # face 17
    "000003133 005100100 155100110",  # face 18
    "000003133 005100100 055100110",  # face 19
)).replace(" ", "")], dtype=np.int64)

# baseCells.c baseCellData: the 12 pentagon base cells and their cwOffsetPent faces
# (-1: no cw offset face).
_PENTAGON_CW_OFFSET_FACES = {
    4: (-1, -1), 14: (2, 6), 24: (1, 5), 38: (3, 7), 49: (0, 9), 58: (4, 8),
    63: (11, 15), 72: (12, 16), 83: (10, 19), 97: (13, 17), 107: (14, 18), 117: (-1, -1),
}
_NUM_BASE_CELLS = 122
_IS_PENTAGON = np.isin(np.arange(_NUM_BASE_CELLS), list(_PENTAGON_CW_OFFSET_FACES))
_CW_OFFSET_FACE = np.array([_PENTAGON_CW_OFFSET_FACES.get(bc, (-1, -1))
                            for bc in range(_NUM_BASE_CELLS)], dtype=np.int64)

# coordijk.c: _rotate60ccw on a digit (0 centre, 1 k, 2 j, 3 jk, 4 i, 5 ik, 6 ij, 7 invalid)
# and _unitIjkToDigit on a unit axial offset (i - k, j - k), indexed by (di + 1) * 3 + (dj + 1).
_ROT60_CCW = np.array([0, 5, 3, 1, 6, 4, 2, 7], dtype=np.int64)
_AXIAL_UNIT_DIGIT = np.array([1, 3, 7, 5, 0, 2, 7, 4, 6], dtype=np.int64)
_K_AXES_DIGIT = 1

_CHUNK = 16384
# Face lookup grid over (lat, lng) for the fast path; cells near a face edge are marked -1.
_GRID_NLAT = 512
_GRID_NLNG = 1024
# Decision margins of the fast path (see _fast_face_axial).
_FACE_DOT_MARGIN = 1e-12
_HEX_TOL_LINEAR = 2e-14
_HEX_TOL_CENTRE = 1e-15


def latlng_to_cell(lat_deg: ArrayLike, lng_deg: ArrayLike, res: int) -> NDArray[np.uint64]:
    """H3 cell indexes of points, identical to ``h3.api.basic_int.latlng_to_cell`` per point.

    Args:
        lat_deg: latitudes in degrees (any shape; float64, or anything numpy converts to it,
            e.g. float32, whose values are used exactly as h3 would receive them).
        lng_deg: longitudes in degrees, same shape as ``lat_deg``.
        res: H3 resolution, 0..15.

    Returns:
        uint64 array of the shape of the inputs. Elements whose lat or lng is not finite (NaN,
        +-inf), where h3 raises, are 0. Finite values outside [-90, 90] / [-180, 180] are
        encoded as h3 does (it takes sin/cos of them), but on the slow exact path; callers
        are expected to validate ranges beforehand.

    Raises:
        TypeError: ``res`` is not an integer.
        ValueError: ``res`` outside 0..15, or the two inputs have different shapes.
    """
    res = operator.index(res)
    if not 0 <= res <= MAX_RES:
        raise ValueError(f"resolution must be in 0..{MAX_RES}, got {res}")
    lat = np.asarray(lat_deg, dtype=np.float64)
    lng = np.asarray(lng_deg, dtype=np.float64)
    if lat.shape != lng.shape:
        raise ValueError(f"lat and lng shapes differ: {lat.shape} vs {lng.shape}")
    shape = lat.shape
    lat = np.ascontiguousarray(lat).reshape(-1)
    lng = np.ascontiguousarray(lng).reshape(-1)
    out = np.empty(lat.size, dtype=np.uint64)
    if lat.size:
        params = _res_params(res)
        for start in range(0, lat.size, _CHUNK):
            stop = start + _CHUNK
            _encode_chunk(lat[start:stop], lng[start:stop], params, out[start:stop])
    return out.reshape(shape)


# ---------------------------------------------------------------------------------------------
# Static tables derived from the constants above.


def _tangent_basis() -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Per-face local north/east unit vectors, as ``_vec3TangentBasis`` computes them.

    Same float64 operations in the same order as the C code, so the values are identical.
    """
    cx, cy, cz = _FACE_CENTER_POINT.T
    d = (cx * 0.0 + cy * 0.0) + cz
    nx = -d * cx + 0.0
    ny = -d * cy + 0.0
    nz = -d * cz + 1.0
    inv = 1.0 / np.sqrt((nx * nx + ny * ny) + nz * nz)
    nx, ny, nz = nx * inv, ny * inv, nz * inv
    north = np.stack([nx, ny, nz], axis=1)
    east = np.stack([ny * cz - nz * cy, nz * cx - nx * cz, nx * cy - ny * cx], axis=1)
    return north, east


_FACE_NORTH, _FACE_EAST = _tangent_basis()


def _up_ap7_exact(a: NDArray[np.int64], b: NDArray[np.int64],
                  class3: bool) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64]]:
    """One aperture-7 step up on axial coordinates (i - k, j - k), in exact integers.

    ``_upAp7`` (Class III child level) or ``_upAp7r`` (Class II), then the digit of the child
    relative to the parent centre (``_downAp7`` / ``_downAp7r``, ``_unitIjkToDigit``). The
    C ``lround(n / 7.0)`` never sees a tie, so it equals floor((2 n + 7) / 14).
    """
    if class3:
        n1, n2 = 3 * a - b, a + 2 * b
    else:
        n1, n2 = 2 * a + b, 3 * b - a
    pa = (2 * n1 + 7) // 14
    pb = (2 * n2 + 7) // 14
    if class3:
        ca, cb = 2 * pa + pb, 3 * pb - pa
    else:
        ca, cb = 3 * pa - pb, pa + 2 * pb
    digit = _AXIAL_UNIT_DIGIT[(a - ca + 1) * 3 + (b - cb + 1)]
    return pa, pb, digit


def _rotate_packed(packed: NDArray[np.int64], ndigits: int, turns: int) -> NDArray[np.int64]:
    """Rotate every 3-bit digit of ``packed`` 60 degrees ccw ``turns`` times."""
    rot = np.arange(8)
    for _ in range(turns):
        rot = _ROT60_CCW[rot]
    out = np.zeros_like(packed)
    for m in range(ndigits):
        out |= rot[(packed >> (3 * m)) & 7] << (3 * m)
    return out


class _Block(NamedTuple):
    """Digit extraction over ``levels`` consecutive resolutions, finest first.

    For 2 or 4 levels the axial coordinates are split as v = modulus * q + residue; then the
    parent ``levels`` up is q + (off_a, off_b)[residue] and the packed digits depend on the
    residue only. One level uses the residue of the class's coset invariant n1 modulo 7.
    """

    levels: int
    modulus: int
    off_a: NDArray[np.float64]
    off_b: NDArray[np.float64]
    digits: NDArray[np.int64]  # (6, size): packed digits rotated ccw 0..5 times


@cache
def _block(levels: int, class3: bool) -> _Block:
    """Tables of a digit block whose finest level is Class III (``class3``) or Class II."""
    if levels == 1:
        a, b = np.meshgrid(np.arange(-20, 21), np.arange(-20, 21))
        a, b = a.ravel(), b.ravel()
        n1 = 3 * a - b if class3 else 2 * a + b
        delta = n1 - 7 * ((2 * n1 + 7) // 14)
        digits = np.zeros(7, dtype=np.int64)
        digits[delta + 3] = _up_ap7_exact(a, b, class3)[2]
        empty = np.zeros(0)
        return _Block(1, 7, empty, empty, np.stack([_rotate_packed(digits, 1, t)
                                                    for t in range(6)]))
    modulus = 7 ** (levels // 2)
    a, b = np.divmod(np.arange(modulus * modulus, dtype=np.int64), modulus)
    packed = np.zeros_like(a)
    cls = class3
    for m in range(levels):
        a, b, digit = _up_ap7_exact(a, b, cls)
        packed |= digit << (3 * m)
        cls = not cls
    rotated = np.stack([_rotate_packed(packed, levels, t) for t in range(6)])
    return _Block(levels, modulus, a.astype(np.float64), b.astype(np.float64), rotated)


class _ResParams(NamedTuple):
    """Per-resolution precomputed data."""

    res: int
    proj_u: NDArray[np.float64]  # (3, 20): hex2d x = (p . u) / (p . centre)
    proj_v: NDArray[np.float64]  # (3, 20): hex2d y = (p . v) / (p . centre)
    tol_linear: float
    tol_centre_sq: float
    head: NDArray[np.uint64]  # per base cell: mode, resolution, base cell, unused digits = 7
    plan: tuple[tuple[_Block, int, bool, NDArray[np.uint64]], ...]


@cache
def _res_params(res: int) -> _ResParams:
    """Projection vectors, tolerances, header bits and digit blocks for resolution ``res``."""
    scale = _INV_RES0_U_GNOMONIC * _M_SQRT7 ** res
    alpha = _FACE_AXIS_AZ_RADS - (_M_AP7_ROT_RADS if res % 2 else 0.0)
    cos_a, sin_a = np.cos(alpha)[:, None], np.sin(alpha)[:, None]
    proj_u = scale * (cos_a * _FACE_NORTH + sin_a * _FACE_EAST)
    proj_v = scale * (sin_a * _FACE_NORTH - cos_a * _FACE_EAST)
    # Bound on |fast hex2d - H3's float64 hex2d| in hex units: a relative part and, near a face
    # centre, H3's rounding of 1 - sqd / 2 inside acos (error ~ 5.6e-17 / sin r in r).
    tol_linear = _HEX_TOL_LINEAR * scale
    tol_centre = _HEX_TOL_CENTRE * scale * scale
    bc = np.arange(_NUM_BASE_CELLS, dtype=np.uint64)
    head = ((np.uint64(1) << np.uint64(59)) | (np.uint64(res) << np.uint64(52))
            | (bc << np.uint64(45)) | np.uint64((1 << (3 * (MAX_RES - res))) - 1))
    plan = []
    level = res
    while level >= 1:
        levels = 4 if level >= 4 else 2 if level >= 2 else 1
        blk = _block(levels, level % 2 == 1)
        shifted = blk.digits.astype(np.uint64).ravel() << np.uint64(3 * (MAX_RES - level))
        plan.append((blk, level, level % 2 == 1, shifted))
        level -= levels
    return _ResParams(res, np.ascontiguousarray(proj_u.T), np.ascontiguousarray(proj_v.T),
                      tol_linear, tol_centre * tol_centre, head, tuple(plan))


def _face_grid_rows(rows: NDArray[np.intp]) -> NDArray[np.int8]:
    """Closest face per grid cell of the lat rows ``rows`` (``int8[len(rows), _GRID_NLNG]``),
    or -1 where a face edge may pass through the cell.

    A cell gets face f only if, for every other face g, p . c_f - p . c_g at the cell centre
    exceeds |c_f - c_g| times a bound on the distance from the centre to any point of the
    cell (plus slack), so every point of the cell, and points mis-binned by rounding, is
    closer to c_f by a wide margin. Every value is computed elementwise from per-row and
    per-column terms of the whole grid, so a row is the same whichever rows it is computed
    with.
    """
    half_lat = math.pi / (2 * _GRID_NLAT)
    half_lng = math.pi / _GRID_NLNG
    lat_c = (np.arange(_GRID_NLAT) + 0.5) * (2 * half_lat) - math.pi / 2
    lng_c = (np.arange(_GRID_NLNG) + 0.5) * (2 * half_lng) - math.pi
    reach_lat = half_lat + np.cos(np.maximum(np.abs(lat_c) - half_lat, 0.0)) * half_lng
    cos_lat, sin_lat = np.cos(lat_c)[rows], np.sin(lat_c)[rows]
    px = (cos_lat[:, None] * np.cos(lng_c)[None, :]).ravel()
    py = (cos_lat[:, None] * np.sin(lng_c)[None, :]).ravel()
    pz = np.repeat(sin_lat, _GRID_NLNG)
    reach = np.repeat(reach_lat[rows], _GRID_NLNG)
    centres = _FACE_CENTER_POINT
    best = np.zeros(px.size, dtype=np.intp)
    best_dot = np.full(px.size, -np.inf)
    for f in range(centres.shape[0]):
        dot = px * centres[f, 0] + py * centres[f, 1] + pz * centres[f, 2]
        better = dot > best_dot
        best[better] = f
        best_dot[better] = dot[better]
    dist = np.linalg.norm(centres[:, None, :] - centres[None, :, :], axis=-1)
    safe = np.ones(px.size, dtype=bool)
    for g in range(centres.shape[0]):
        dot = px * centres[g, 0] + py * centres[g, 1] + pz * centres[g, 2]
        need = dist[:, g].take(best) * reach + 1e-9
        safe &= (best == g) | (best_dot - dot > need)
    return np.where(safe, best, -1).astype(np.int8).reshape(len(rows), _GRID_NLNG)


_GRID = np.full((_GRID_NLAT + 1) * _GRID_NLNG, -1, dtype=np.int8)
"""The face grid (:func:`_face_grid_rows`), row-major; row ``_GRID_NLAT`` repeats the last row
for lat = 90. Filled a band of rows at a time, as points need them (:func:`_face_grid`): a
country's points need a tenth of it, and the whole grid costs about 0.2 s to compute."""
_GRID_DONE = np.zeros(_GRID_NLAT + 1, dtype=bool)
_GRID_LOCK = threading.Lock()


def _face_grid(lo: int, hi: int) -> NDArray[np.int8]:
    """The face grid (flat, ``int8[(_GRID_NLAT + 1) * _GRID_NLNG]``) with at least its rows
    ``lo..hi`` computed (the others may still be -1); thread-safe."""
    if not _GRID_DONE[lo:hi + 1].all():
        with _GRID_LOCK:
            band = np.arange(lo, hi + 1)
            band = band[~_GRID_DONE[band]]
            if band.size:
                grid = _GRID.reshape(_GRID_NLAT + 1, _GRID_NLNG)
                grid[band] = _face_grid_rows(np.minimum(band, _GRID_NLAT - 1))
                _GRID_DONE[band] = True
    return _GRID


# ---------------------------------------------------------------------------------------------
# Encoding.


def _encode_chunk(lat: NDArray[np.float64], lng: NDArray[np.float64], prm: _ResParams,
                  out: NDArray[np.uint64]) -> None:
    """Encode one chunk of points into ``out``."""
    invalid = None
    special = None
    fast_lat, fast_lng = lat, lng
    if not (np.isfinite(lat).all() and np.isfinite(lng).all()):
        invalid = ~(np.isfinite(lat) & np.isfinite(lng))
    if (invalid is not None or lat.min() < -90.0 or lat.max() > 90.0
            or lng.min() < -180.0 or lng.max() > 180.0):
        # Out-of-range and non-finite values take the exact path (or give 0); the fast path
        # sees a harmless placeholder instead.
        with np.errstate(invalid="ignore"):
            special = ~((np.abs(lat) <= 90.0) & (np.abs(lng) <= 180.0))
        fast_lat = np.where(special, 0.0, lat)
        fast_lng = np.where(special, 0.0, lng)

    face, a, b, redo = _fast_face_axial(fast_lat, fast_lng, prm)
    if special is not None:
        redo |= special
    if invalid is not None:
        redo &= ~invalid
    redo_idx = np.flatnonzero(redo)
    if redo_idx.size:
        f_r, a_r, b_r = _exact_face_axial(lat[redo_idx], lng[redo_idx], prm.res)
        face[redo_idx], a[redo_idx], b[redo_idx] = f_r, a_r, b_r

    out[:] = _digits_and_base_cell(face, a, b, prm)
    if invalid is not None:
        out[invalid] = 0


def _fast_face_axial(lat: NDArray[np.float64], lng: NDArray[np.float64], prm: _ResParams
                     ) -> tuple[NDArray[np.intp], NDArray[np.float64], NDArray[np.float64],
                                NDArray[np.bool_]]:
    """Face and axial hex coordinates at ``prm.res`` for in-range points, plus a redo mask.

    The mask marks points whose face or hexagon decision is too close to call against H3's
    own float64 rounding; their results must be recomputed with :func:`_exact_face_axial`.
    """
    half = 0.5 * _M_PI_180
    cos_lat, sin_lat = _cos_sin_from_half_tan(np.tan(lat * half))
    cos_lng, sin_lng = _cos_sin_from_half_tan(np.tan(lng * half))
    px = cos_lat * cos_lng
    py = cos_lat * sin_lng
    pz = sin_lat

    row = ((lat + 90.0) * (_GRID_NLAT / 180.0)).astype(np.int32)
    col = ((lng + 540.0) * (_GRID_NLNG / 360.0)).astype(np.int32) & (_GRID_NLNG - 1)
    grid = _face_grid(int(row.min()), int(row.max())) if row.size else _GRID
    face = grid.take(row * _GRID_NLNG + col).astype(np.intp)
    redo = np.zeros(lat.size, dtype=bool)
    amb = np.flatnonzero(face < 0)
    if amb.size:
        c = _FACE_CENTER_POINT
        dots = (px[amb, None] * c[:, 0] + py[amb, None] * c[:, 1]) + pz[amb, None] * c[:, 2]
        best = dots.argmax(axis=1)
        rows = np.arange(amb.size)
        best_dot = dots[rows, best]
        dots[rows, best] = -np.inf
        face[amb] = best
        redo[amb] = best_dot - dots.max(axis=1) < _FACE_DOT_MARGIN

    c = _FACE_CENTER_POINT
    u, v = prm.proj_u, prm.proj_v
    inv_den = 1.0 / (px * c[:, 0].take(face) + py * c[:, 1].take(face)
                     + pz * c[:, 2].take(face))
    x = (px * u[0].take(face) + py * u[1].take(face) + pz * u[2].take(face)) * inv_den
    y = (px * v[0].take(face) + py * v[1].take(face) + pz * v[2].take(face)) * inv_den

    # Nearest hexagon centre: axial (a, b) has hex2d centre (a - b / 2, b * sqrt(3) / 2), i.e.
    # cube coordinates (a - b, b, -a); cube rounding re-derives the coordinate that rounded
    # worst from the other two.
    bf = y * _M_RSIN60
    af = x + 0.5 * bf
    qf = af - bf
    a0 = np.rint(af)
    b0 = np.rint(bf)
    q0 = np.rint(qf)
    err_a = np.abs(a0 - af)
    err_b = np.abs(b0 - bf)
    err_q = np.abs(q0 - qf)
    worst_q = (err_q > err_a) & (err_q > err_b)
    worst_b = (err_b > err_a) & ~worst_q
    worst_a = ~(worst_q | worst_b)
    a = np.where(worst_a, q0 + b0, a0)
    b = np.where(worst_b, a0 - q0, b0)
    da = af - a
    db = bf - b
    # Twice the offset from the centre along the three hexagon axis normals; the distance to
    # the cell boundary is (1 - max |u_k|) / 2.
    umax = np.maximum(np.maximum(np.abs(2.0 * da - db), np.abs(da + db)), np.abs(2.0 * db - da))
    margin = (0.5 - prm.tol_linear) - 0.5 * umax
    redo |= ~((margin > 0.0) & (margin * margin * (x * x + y * y) > prm.tol_centre_sq))
    return face, a, b, redo


def _cos_sin_from_half_tan(t: NDArray[np.float64]
                           ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """cos and sin of an angle from t = tan(angle / 2)."""
    t2 = t * t
    inv = 1.0 / (1.0 + t2)
    return (1.0 - t2) * inv, (t + t) * inv


def _digits_and_base_cell(face: NDArray[np.intp], a: NDArray[np.float64],
                          b: NDArray[np.float64], prm: _ResParams) -> NDArray[np.uint64]:
    """``_faceIjkToH3`` on (face, axial coordinates at ``prm.res``), 0 where out of range."""
    residues = []
    for blk, _level, class3, _shifted in prm.plan:
        if blk.levels == 1:
            if class3:
                n1, n2 = 3.0 * a - b, a + 2.0 * b
            else:
                n1, n2 = 2.0 * a + b, 3.0 * b - a
            a = np.rint(n1 * _ONE_SEVENTH)
            b = np.rint(n2 * _ONE_SEVENTH)
            residues.append((n1 - 7.0 * a + 3.0).astype(np.intp))
            continue
        m = float(blk.modulus)
        inv_m = 1.0 / m
        qa = np.floor((a + 0.5) * inv_m)
        qb = np.floor((b + 0.5) * inv_m)
        idx = ((a - m * qa) * m + (b - m * qb)).astype(np.intp)
        a = qa + blk.off_a.take(idx)
        b = qb + blk.off_b.take(idx)
        residues.append(idx)

    # Base cell coordinates, normalized IJK (min component 0), must lie in 0..2.
    low = np.minimum(np.minimum(a, b), 0.0)
    i, j, k = a - low, b - low, -low
    ok = (i <= 2.0) & (j <= 2.0) & (k <= 2.0)
    key = ((i * 3.0 + j) * 3.0 + k).astype(np.intp) + face * 27
    all_ok = bool(ok.all())
    if not all_ok:
        key[~ok] = 0
    base_cell = _FACE_IJK_BASE_CELL.take(key)
    turns = _FACE_IJK_CCW_ROT60.take(key)

    pent = np.flatnonzero(_IS_PENTAGON.take(base_cell))
    if pent.size:
        turns[pent] = _pentagon_turns(base_cell[pent], face[pent], turns[pent],
                                      [idx[pent] for idx in residues], prm)

    h = prm.head.take(base_cell)
    for (blk, _level, _class3, shifted), idx in zip(prm.plan, residues, strict=True):
        h |= shifted.take(turns * blk.digits.shape[1] + idx)
    if not all_ok:
        h[~ok] = 0
    return h


def _pentagon_turns(base_cell: NDArray[np.int64], face: NDArray[np.intp],
                    turns: NDArray[np.int64], residues: list[NDArray[np.intp]],
                    prm: _ResParams) -> NDArray[np.int64]:
    """Total ccw 60-degree digit rotations for points in pentagon base cells.

    Mirrors the pentagon branch of ``_faceIjkToH3``: a leading k-axes digit is first rotated
    out (cw on the base cell's ``cwOffsetPent`` faces, else ccw), then ``numRots`` times
    ``_h3RotatePent60ccw``, which rotates all digits once more whenever the leading digit lands
    on the k axis. All rotations act on every digit alike, so only their count is tracked,
    together with the current leading non-zero digit.
    """
    lead = np.zeros(base_cell.size, dtype=np.int64)
    for (blk, _level, _class3, _shifted), idx in zip(prm.plan[::-1], residues[::-1],
                                                     strict=True):
        packed = blk.digits[0].take(idx)
        for m in range(blk.levels - 1, -1, -1):
            lead = np.where(lead == 0, (packed >> (3 * m)) & 7, lead)
    total = np.zeros_like(turns)
    on_k = lead == _K_AXES_DIGIT
    cw = on_k & ((_CW_OFFSET_FACE[base_cell, 0] == face) | (_CW_OFFSET_FACE[base_cell, 1] == face))
    ccw = on_k & ~cw
    total += np.where(cw, 5, 0) + ccw
    lead = np.where(cw, 3, np.where(ccw, _ROT60_CCW[_K_AXES_DIGIT], lead))
    for step in range(5):
        active = turns > step
        lead = np.where(active, _ROT60_CCW[lead], lead)
        again = active & (lead == _K_AXES_DIGIT)
        lead = np.where(again, _ROT60_CCW[lead], lead)
        total += active.astype(np.int64) + again
    return total % 6


# ---------------------------------------------------------------------------------------------
# Exact path: a step-by-step mirror of H3's C code for the few points the fast path defers.

_LIBM_SIN = np.frompyfunc(math.sin, 1, 1)
_LIBM_COS = np.frompyfunc(math.cos, 1, 1)
_LIBM_TAN = np.frompyfunc(math.tan, 1, 1)
_LIBM_ACOS = np.frompyfunc(math.acos, 1, 1)
_LIBM_ATAN2 = np.frompyfunc(math.atan2, 2, 1)


def _libm(fn: np.ufunc, *args: NDArray[np.float64]) -> NDArray[np.float64]:
    """Apply a libm function (through :mod:`math`, i.e. the same libm calls as H3's C)."""
    return np.asarray(fn(*args), dtype=object).astype(np.float64)


def _pos_angle_rads(rads: NDArray[np.float64]) -> NDArray[np.float64]:
    """``_posAngleRads``: normalize radians to [0, 2 pi)."""
    tmp = np.where(rads < 0.0, rads + _M_2PI, rads)
    return np.where(rads >= _M_2PI, tmp - _M_2PI, tmp)


def _exact_face_axial(lat_deg: NDArray[np.float64], lng_deg: NDArray[np.float64], res: int
                      ) -> tuple[NDArray[np.intp], NDArray[np.float64], NDArray[np.float64]]:
    """Face and axial coordinates exactly as ``latLngToCell`` -> ``_vec3ToFaceIjk`` compute them.

    Same float64 operations in the same order as the compiled C (``degsToRads``,
    ``latLngToVec3``, ``_vec3ToClosestFace``, ``_vec3ToHex2d`` with ``_vec3AzimuthRads``,
    ``_hex2dToCoordIJK``); transcendental functions go through :mod:`math` (the platform libm,
    which H3 also calls). Meant for small subsets.
    """
    lat = lat_deg * _M_PI_180
    lng = lng_deg * _M_PI_180
    cos_lat = _libm(_LIBM_COS, lat)
    x = _libm(_LIBM_COS, lng) * cos_lat
    y = _libm(_LIBM_SIN, lng) * cos_lat
    z = _libm(_LIBM_SIN, lat)

    face = np.zeros(lat.size, dtype=np.intp)
    sqd = np.full(lat.size, 5.0)
    for f in range(_FACE_CENTER_POINT.shape[0]):
        c = _FACE_CENTER_POINT[f]
        dx, dy, dz = c[0] - x, c[1] - y, c[2] - z
        dist = (dx * dx + dy * dy) + dz * dz
        closer = dist < sqd
        face[closer] = f
        sqd = np.where(closer, dist, sqd)
    r = _libm(_LIBM_ACOS, 1.0 - sqd * 0.5)

    cx, cy, cz = _FACE_CENTER_POINT[face].T
    nx, ny, nz = _FACE_NORTH[face].T
    ex, ey, ez = _FACE_EAST[face].T
    s = -((y * cy + x * cx) + z * cz)
    qx, qy, qz = cx * s + x, y + cy * s, z + cz * s
    norm = np.sqrt((qx * qx + qy * qy) + qz * qz)
    inv = np.divide(1.0, norm, out=np.zeros_like(norm), where=norm > 0.0)
    qx, qy, qz = qx * inv, qy * inv, qz * inv
    az = _libm(_LIBM_ATAN2, (qx * ex + qy * ey) + qz * ez, (nx * qx + ny * qy) + nz * qz)
    theta = _pos_angle_rads(_FACE_AXIS_AZ_RADS[face] - _pos_angle_rads(az))
    if res % 2:
        theta = _pos_angle_rads(theta - _M_AP7_ROT_RADS)
    rr = _libm(_LIBM_TAN, r) * _INV_RES0_U_GNOMONIC
    for _ in range(res):
        rr = rr * _M_SQRT7
    hx = _libm(_LIBM_COS, theta) * rr
    hy = rr * _libm(_LIBM_SIN, theta)
    centre = r < _EPSILON
    hx[centre] = 0.0
    hy[centre] = 0.0
    a, b = _hex2d_to_axial_exact(hx, hy)
    return face, a.astype(np.float64), b.astype(np.float64)


def _hex2d_to_axial_exact(x: NDArray[np.float64], y: NDArray[np.float64]
                          ) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """``_hex2dToCoordIJK`` (before its final normalization, where k = 0) on arrays."""
    x2 = np.abs(y) * _M_RSIN60
    x1 = np.abs(x) + x2 * 0.5
    m1 = x1.astype(np.int64)
    m2 = x2.astype(np.int64)
    r1 = x1 - m1
    r2 = x2 - m2
    one_minus = 1.0 - r1
    below_half = r1 < 0.5
    case_a = below_half & (r1 < _ONE_THIRD)
    case_b = below_half & ~(r1 < _ONE_THIRD)
    case_c = ~below_half & (r1 < _TWO_THIRDS)
    i_step = np.where(case_a, False, np.where(
        case_b, (one_minus <= r2) & (r2 < 2.0 * r1), np.where(
            case_c, ~((2.0 * r1 - 1.0 < r2) & (r2 < one_minus)), True)))
    j_step = np.where(case_a, ~(r2 < (1.0 + r1) / 2.0), np.where(
        case_b | case_c, ~(r2 < one_minus), ~(r2 < r1 / 2.0)))
    i = m1 + i_step
    j = m2 + j_step
    odd = j % 2
    axis_i = (j + odd) // 2
    i = np.where(x < 0.0, i - 2 * (i - axis_i) - odd, i)
    neg_y = y < 0.0
    i = np.where(neg_y, i - (2 * j + 1) // 2, i)
    j = np.where(neg_y, -j, j)
    return i, j


def cell_to_parent(cells: ArrayLike, res: int) -> NDArray[np.uint64]:
    """Parent cell at ``res`` of each H3 cell (uint64), like ``h3.cell_to_parent``, vectorized.

    The resolution field is set to ``res`` and the digits below it to 7 (unused); cells already
    at or above ``res`` must not be passed (their digits would be wrong).
    """
    if not 0 <= res <= 15:
        raise ValueError(f"H3 resolution must be 0..15, got {res}")
    c = np.asarray(cells, dtype=np.uint64)
    res_mask = np.uint64(0xF << 52)
    out = (c & ~res_mask) | np.uint64(res << 52)
    unused = 0
    for r in range(res + 1, 16):
        unused |= 7 << ((15 - r) * 3)
    return out | np.uint64(unused)


def is_pentagon(cells: ArrayLike) -> NDArray[np.bool_]:
    """Whether each H3 cell (uint64) is a pentagon, like ``h3.is_pentagon``, vectorized: its
    base cell is one of the 12 pentagons and every digit down to its resolution is 0."""
    c = np.asarray(cells, dtype=np.uint64)
    res = (c >> np.uint64(52)) & np.uint64(0xF)
    base = ((c >> np.uint64(45)) & np.uint64(0x7F)).astype(np.intp)
    digits = (c >> (np.uint64(45) - np.uint64(3) * res)) & ((np.uint64(1) << (np.uint64(3) * res))
                                                             - np.uint64(1))
    return _IS_PENTAGON.take(np.minimum(base, _NUM_BASE_CELLS - 1)) & (base < _NUM_BASE_CELLS) \
        & (digits == 0)


def hexagon_circumradius(res: int) -> float:
    """Circumradius of an H3 hexagon at ``res`` in its icosahedron face's gnomonic plane
    (tangent units of a unit sphere): ``RES0_U_GNOMONIC / (sqrt(3) * sqrt(7)**res)``, a hex2d
    unit (the distance between neighbouring centres) being ``RES0_U_GNOMONIC / sqrt(7)**res``.
    The inverse gnomonic projection shrinks lengths, so no point of a cell is farther from
    its centre along the sphere, except where a cell's plane unfolding breaks down (within a
    few cells of an icosahedron vertex)."""
    return _RES0_U_GNOMONIC / (math.sqrt(3.0) * math.sqrt(7.0) ** res)
