// 3D gamma index (Low et al., Med Phys 25, 1998) of an evaluated dose against
// a reference dose on the same grid. Doses are float32 (any unit, both the
// same), (z, y, x) C order; spacing (z, y, x) in mm. No policy here: the
// dose-difference criterion, the low-dose threshold and the search limits
// come from Python (airtp.evaluation.gamma).
//
// For each reference voxel r with ref[r] >= threshold (and inside the mask,
// when one is given):
//
//     gamma(r) = min over points p of sqrt(|p - r|^2 / dta^2 + (E(p) - ref[r])^2 / dd^2)
//
// where E is the evaluated dose interpolated trilinearly between voxel
// centres, and p runs over a cubic lattice of step `step_mm` centred on r,
// clipped to the sphere |p - r| <= max_gamma * dta and to the grid (points
// beyond the outer voxel centres are skipped). The lattice is the same for
// every voxel: a table of offsets sorted by distance (GammaTable), so the
// search stops as soon as |p - r| / dta alone reaches the best gamma found.
// The result is min(gamma, max_gamma): gamma is exact (up to the lattice)
// where it is below max_gamma, and max_gamma stands for "max_gamma or more".
// Voxels that are not evaluated get NaN.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "edt.h"  // Dims

#ifndef AIRTP_HOST_DEVICE
#ifdef __CUDACC__
#define AIRTP_HOST_DEVICE __host__ __device__
#else
#define AIRTP_HOST_DEVICE
#endif
#endif

namespace airtp {

// The search lattice as offsets from a voxel centre, nearest first. Because
// every reference point is a voxel centre, an offset's position in voxel
// units splits once into an integer part k (the interpolation cell's lower
// corner) and a fractional part w in [0, 1): interpolating at r + offset is
// then a fixed-weight blend of the 8 voxels from r + k. A fraction of 0
// means the axis needs no neighbour (exact on the lattice of voxel centres,
// and no read past the grid's last voxel).
struct GammaTable {
    std::vector<float> r2;   // (|offset| / dta)^2, non-decreasing
    std::vector<int32_t> k;  // 3 per offset: z, y, x voxel steps of the cell's lower corner
    std::vector<float> w;    // 3 per offset: z, y, x fractions in [0, 1)
    int64_t size() const { return static_cast<int64_t>(r2.size()); }
};

// Offsets of the lattice of step `step_mm` within `radius_mm`, for a grid of
// dims d and spacing (z, y, x) mm; axes with a single voxel get no offsets
// along them (2D and 1D doses work as such). Ties in distance are ordered by
// (z, y, x) lattice index, so the table is deterministic.
GammaTable gamma_table(Dims d, const double spacing[3], double dta_mm, double radius_mm, double step_mm);

struct GammaParams {
    float inv_dd2;     // 1 / dd^2, dd the dose-difference criterion in dose units
    float threshold;   // reference doses below are not evaluated
    float max_gamma2;  // max_gamma^2: the cap and the end of the search
};

// Gamma of one reference voxel (iz, iy, ix) of value `ref`: the shared core
// of the CPU and CUDA kernels. Device code passes the products and sums
// through __fmul_rn/__fadd_rn (no fused multiply-add), so both back ends
// round alike.
#ifdef __CUDA_ARCH__
#define AIRTP_GMUL(a, b) __fmul_rn((a), (b))
#define AIRTP_GADD(a, b) __fadd_rn((a), (b))
#define AIRTP_GSUB(a, b) __fsub_rn((a), (b))
#else
#define AIRTP_GMUL(a, b) ((a) * (b))
#define AIRTP_GADD(a, b) ((a) + (b))
#define AIRTP_GSUB(a, b) ((a) - (b))
#endif

AIRTP_HOST_DEVICE inline float gamma_lerp(float a, float b, float w) {
    return AIRTP_GADD(a, AIRTP_GMUL(w, AIRTP_GSUB(b, a)));
}

AIRTP_HOST_DEVICE inline float gamma_voxel(const float* ev, Dims d, int64_t iz, int64_t iy, int64_t ix, float ref,
                                           const float* r2, const int32_t* k, const float* w, int64_t n,
                                           const GammaParams& p) {
    float best = p.max_gamma2;
    const int64_t plane = d.ny * d.nx;
    for (int64_t j = 0; j < n; ++j) {
        const float rj = r2[j];
        if (rj >= best) break;  // distance alone already gives gamma >= best
        const int64_t kz = k[3 * j], ky = k[3 * j + 1], kx = k[3 * j + 2];
        const float wz = w[3 * j], wy = w[3 * j + 1], wx = w[3 * j + 2];
        const int64_t hz = wz > 0.0f, hy = wy > 0.0f, hx = wx > 0.0f;
        const int64_t z = iz + kz, y = iy + ky, x = ix + kx;
        if (z < 0 || z + hz >= d.nz || y < 0 || y + hy >= d.ny || x < 0 || x + hx >= d.nx) continue;
        const float* q = ev + (z * d.ny + y) * d.nx + x;
        const int64_t sz = hz * plane, sy = hy * d.nx, sx = hx;
        const float c00 = gamma_lerp(q[0], q[sx], wx);
        const float c01 = gamma_lerp(q[sy], q[sy + sx], wx);
        const float c10 = gamma_lerp(q[sz], q[sz + sx], wx);
        const float c11 = gamma_lerp(q[sz + sy], q[sz + sy + sx], wx);
        const float v = gamma_lerp(gamma_lerp(c00, c01, wy), gamma_lerp(c10, c11, wy), wz);
        const float dv = AIRTP_GSUB(v, ref);
        const float g2 = AIRTP_GADD(rj, AIRTP_GMUL(AIRTP_GMUL(dv, dv), p.inv_dd2));
        if (g2 < best) best = g2;
    }
    return best;  // squared; the caller takes the root
}

// Gamma of every voxel of `ref` (see the file comment) into out (float32,
// NaN where not evaluated). mask may be null. OpenMP over rows of voxels.
void gamma_index(const float* ref, const float* ev, const uint8_t* mask, Dims d, const GammaTable& t,
                 const GammaParams& p, float* out);

// The same on the GPU (gamma.cu, built with AIRTP_WITH_CUDA only): one thread
// per voxel, the table in global memory (read in step by a warp: broadcast).
// Results equal the CPU ones: same table, same arithmetic without fused
// multiply-adds, IEEE square root (see airtp.evaluation.gamma.CPU_GPU_ATOL).
void gamma_index_cuda(const float* ref, const float* ev, const uint8_t* mask, Dims d, const GammaTable& t,
                      const GammaParams& p, float* out);

}  // namespace airtp
