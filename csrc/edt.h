// Exact Euclidean distance transform on anisotropic voxel grids, and the
// structure margins built on it. Arrays are (z, y, x), C order; spacing is
// (z, y, x) in millimetres. No policy here: thresholds come from Python.
#pragma once
#include <cstdint>

namespace airtp {

struct Dims {
    int64_t nz, ny, nx;
    int64_t size() const { return nz * ny * nx; }
};

// Squared distance (mm^2) from each voxel centre to the nearest centre with
// mask != 0; +inf where the mask is empty.
void edt_sq(const uint8_t* mask, Dims d, const double spacing[3], double* out);

// Symmetric margin: mm > 0 expands, mm < 0 contracts, mm == 0 copies.
// A voxel is in an expansion iff its centre lies within mm of a mask centre;
// it stays in a contraction iff no non-mask centre inside the grid lies within
// |mm| of it (the grid border is not treated as outside the structure).
void margin(const uint8_t* mask, Dims d, const double spacing[3], double mm, uint8_t* out);

// Asymmetric expansion. radii (mm): x-, x+, y-, y+, z-, z+. A voxel p is in
// the result iff some mask voxel q has sum_i (d_i / r_i)^2 <= 1 with d = p - q
// and r_i the radius on the side of q that p lies on (x+ when d_x > 0, ...).
void asymmetric_expand(const uint8_t* mask, Dims d, const double spacing[3],
                       const double radii[6], uint8_t* out);

// Relative tolerance of the "within" test, so that a centre exactly at the
// margin distance is included despite rounding.
constexpr double kWithinRelTol = 1e-9;

}  // namespace airtp
