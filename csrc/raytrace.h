// Radiological path length by exact Siddon ray tracing (Siddon, Med Phys 12,
// 1985, in the incremental form of Jacobs et al. 1998) through a density grid.
// Points and grids are (z, y, x) patient mm; density is relative electron
// density, 0 outside the grid. The tracer is one inline function shared by
// the CPU (raytrace.cpp) and CUDA (raytrace.cu) code, so both give the same
// path lengths up to the compiler's floating-point contraction.
#pragma once
#include <cmath>
#include <cstdint>

#include "edt.h"  // Dims

#ifdef __CUDACC__
#define AIRTP_HD __host__ __device__
#else
#define AIRTP_HD
#endif

namespace airtp {

// min/max without libm calls (operands are never NaN here).
AIRTP_HD inline double dmin(double a, double b) { return a < b ? a : b; }
AIRTP_HD inline double dmax(double a, double b) { return a > b ? a : b; }

// A regular grid of voxel centres: centre of voxel (0,0,0) at origin.
struct VoxelGrid {
    Dims d;
    double origin[3];   // (z, y, x) mm
    double spacing[3];  // (z, y, x) mm
};

// Integral of density along the segment a -> b (mm of water-equivalent path).
AIRTP_HD inline double siddon_path(const float* rho, const VoxelGrid& g, const double a[3], const double b[3]) {
    const int64_t n[3] = {g.d.nz, g.d.ny, g.d.nx};
    double dir[3], lo[3];
    double len2 = 0.0;
    for (int k = 0; k < 3; ++k) {
        dir[k] = b[k] - a[k];
        len2 += dir[k] * dir[k];
        lo[k] = g.origin[k] - 0.5 * g.spacing[k];
    }
    if (len2 == 0.0) return 0.0;
    double amin = 0.0, amax = 1.0;
    for (int k = 0; k < 3; ++k) {
        const double hi = lo[k] + double(n[k]) * g.spacing[k];
        if (dir[k] != 0.0) {
            const double a0 = (lo[k] - a[k]) / dir[k], a1 = (hi - a[k]) / dir[k];
            amin = dmax(amin, dmin(a0, a1));
            amax = dmin(amax, dmax(a0, a1));
        } else if (a[k] < lo[k] || a[k] > hi) {
            return 0.0;
        }
    }
    if (!(amin < amax)) return 0.0;
    // Per axis: first voxel, the alpha of the next plane crossing, the alpha
    // between crossings, the flat-index stride of a step and the steps left
    // before the ray leaves the grid. Scalars rather than arrays indexed by
    // the stepping axis, so that the loop state stays in registers.
    int64_t idx[3], stride[3], left[3];
    double anext[3], dalpha[3];
    const int64_t flat_stride[3] = {n[1] * n[2], n[2], 1};
    for (int k = 0; k < 3; ++k) {
        const double t = (a[k] + amin * dir[k] - lo[k]) / g.spacing[k];
        int64_t i = dir[k] > 0.0 ? int64_t(floor(t)) : int64_t(ceil(t)) - 1;
        if (dir[k] == 0.0) i = int64_t(floor(t));
        i = i < 0 ? 0 : (i >= n[k] ? n[k] - 1 : i);
        idx[k] = i;
        if (dir[k] > 0.0) {
            stride[k] = flat_stride[k];
            left[k] = n[k] - 1 - i;
            anext[k] = (lo[k] + double(i + 1) * g.spacing[k] - a[k]) / dir[k];
            dalpha[k] = g.spacing[k] / dir[k];
        } else if (dir[k] < 0.0) {
            stride[k] = -flat_stride[k];
            left[k] = i;
            anext[k] = (lo[k] + double(i) * g.spacing[k] - a[k]) / dir[k];
            dalpha[k] = -g.spacing[k] / dir[k];
        } else {
            stride[k] = 0;
            left[k] = INT64_MAX;
            anext[k] = INFINITY;
            dalpha[k] = INFINITY;
        }
    }
    double n0 = anext[0], n1 = anext[1], n2 = anext[2];
    int64_t l0 = left[0], l1 = left[1], l2 = left[2];
    int64_t f = (idx[0] * n[1] + idx[1]) * n[2] + idx[2];
    double sum = 0.0, ac = amin;
    // The axis whose plane comes first steps (ties: the lower axis, z before
    // y before x); the loop ends at the point or where the ray leaves the grid.
    while (ac < amax) {
        double an;
        if (n0 <= n1 && n0 <= n2) {
            an = dmin(n0, amax);
            sum += (an - ac) * double(rho[f]);
            f += stride[0];
            n0 += dalpha[0];
            if (--l0 < 0) break;
        } else if (n1 <= n2) {
            an = dmin(n1, amax);
            sum += (an - ac) * double(rho[f]);
            f += stride[1];
            n1 += dalpha[1];
            if (--l1 < 0) break;
        } else {
            an = dmin(n2, amax);
            sum += (an - ac) * double(rho[f]);
            f += stride[2];
            n2 += dalpha[2];
            if (--l2 < 0) break;
        }
        ac = an;
    }
    return sum * sqrt(len2);
}

// Radiological path from `source` to each of n points (n, 3), into out (n).
void radiological_path(const float* rho, const VoxelGrid& g, const double source[3], const double* points,
                       int64_t n, double* out);

}  // namespace airtp
