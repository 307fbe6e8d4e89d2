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
    int64_t idx[3], step[3];
    double anext[3], dalpha[3];
    for (int k = 0; k < 3; ++k) {
        const double t = (a[k] + amin * dir[k] - lo[k]) / g.spacing[k];
        int64_t i = dir[k] > 0.0 ? int64_t(floor(t)) : int64_t(ceil(t)) - 1;
        if (dir[k] == 0.0) i = int64_t(floor(t));
        i = i < 0 ? 0 : (i >= n[k] ? n[k] - 1 : i);
        idx[k] = i;
        if (dir[k] > 0.0) {
            step[k] = 1;
            anext[k] = (lo[k] + double(i + 1) * g.spacing[k] - a[k]) / dir[k];
            dalpha[k] = g.spacing[k] / dir[k];
        } else if (dir[k] < 0.0) {
            step[k] = -1;
            anext[k] = (lo[k] + double(i) * g.spacing[k] - a[k]) / dir[k];
            dalpha[k] = -g.spacing[k] / dir[k];
        } else {
            step[k] = 0;
            anext[k] = INFINITY;
            dalpha[k] = INFINITY;
        }
    }
    double sum = 0.0, ac = amin;
    while (ac < amax) {
        int k = 0;
        if (anext[1] < anext[k]) k = 1;
        if (anext[2] < anext[k]) k = 2;
        const double an = dmin(anext[k], amax);
        sum += (an - ac) * double(rho[(idx[0] * n[1] + idx[1]) * n[2] + idx[2]]);
        ac = an;
        idx[k] += step[k];
        anext[k] += dalpha[k];
        if (idx[k] < 0 || idx[k] >= n[k]) break;
    }
    return sum * sqrt(len2);
}

// Radiological path from `source` to each of n points (n, 3), into out (n).
void radiological_path(const float* rho, const VoxelGrid& g, const double source[3], const double* points,
                       int64_t n, double* out);

}  // namespace airtp
