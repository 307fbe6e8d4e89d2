// Gamma index on the CPU: the offset table, then one OpenMP loop over rows of
// reference voxels (dynamic schedule: a failing voxel searches the whole
// sphere, a passing one stops after a few offsets, so rows cost unequally).
//
// Fused multiply-adds are kept off in this file so that the CPU rounds as
// the CUDA kernel does (gamma.h) whatever -march the core is built for.
#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#include "gamma.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include <omp.h>

namespace airtp {

namespace {

// Integer and fractional parts of an offset in voxel units; fractions within
// 1e-6 of a whole number are snapped so that lattice points on voxel centres
// need no neighbour.
void split(double voxels, int32_t& k, float& w) {
    double f = std::floor(voxels);
    double r = voxels - f;
    if (r < 1e-6) r = 0.0;
    if (r > 1.0 - 1e-6) {
        f += 1.0;
        r = 0.0;
    }
    k = static_cast<int32_t>(f);
    w = static_cast<float>(r);
}

}  // namespace

GammaTable gamma_table(Dims d, const double spacing[3], double dta_mm, double radius_mm, double step_mm) {
    const int64_t m = static_cast<int64_t>(std::floor(radius_mm / step_mm + 1e-9));
    const int64_t n_axis[3] = {d.nz, d.ny, d.nx};
    int64_t lo[3], hi[3];
    for (int a = 0; a < 3; ++a) {
        lo[a] = n_axis[a] > 1 ? -m : 0;  // a single-voxel axis is searched at its centre only
        hi[a] = n_axis[a] > 1 ? m : 0;
    }
    const double lim = (radius_mm / step_mm) * (radius_mm / step_mm) * (1.0 + 1e-12);
    struct Entry {
        int64_t i2;
        int32_t i, j, l;
    };
    std::vector<Entry> entries;
    for (int64_t i = lo[0]; i <= hi[0]; ++i)
        for (int64_t j = lo[1]; j <= hi[1]; ++j)
            for (int64_t l = lo[2]; l <= hi[2]; ++l) {
                const int64_t i2 = i * i + j * j + l * l;
                if (static_cast<double>(i2) <= lim)
                    entries.push_back({i2, static_cast<int32_t>(i), static_cast<int32_t>(j), static_cast<int32_t>(l)});
            }
    // stable: ties keep the (z, y, x) lattice order of the loops above
    std::stable_sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) { return a.i2 < b.i2; });
    GammaTable t;
    const size_t n = entries.size();
    t.r2.resize(n);
    t.k.resize(3 * n);
    t.w.resize(3 * n);
    const double scale = step_mm / dta_mm;
    for (size_t e = 0; e < n; ++e) {
        const Entry& en = entries[e];
        t.r2[e] = static_cast<float>(static_cast<double>(en.i2) * scale * scale);
        const int32_t idx[3] = {en.i, en.j, en.l};
        for (int a = 0; a < 3; ++a) split(idx[a] * step_mm / spacing[a], t.k[3 * e + a], t.w[3 * e + a]);
    }
    return t;
}

void gamma_index(const float* ref, const float* ev, const uint8_t* mask, Dims d, const GammaTable& t,
                 const GammaParams& p, float* out) {
    const int64_t rows = d.nz * d.ny;
    const float nan = std::numeric_limits<float>::quiet_NaN();
    const float* r2 = t.r2.data();
    const int32_t* k = t.k.data();
    const float* w = t.w.data();
    const int64_t n = t.size();
#pragma omp parallel for schedule(dynamic, 4)
    for (int64_t row = 0; row < rows; ++row) {
        const int64_t iz = row / d.ny, iy = row % d.ny;
        const int64_t base = row * d.nx;
        for (int64_t ix = 0; ix < d.nx; ++ix) {
            const int64_t i = base + ix;
            const float r = ref[i];
            if (!(r >= p.threshold) || (mask && !mask[i])) {
                out[i] = nan;
                continue;
            }
            out[i] = std::sqrt(gamma_voxel(ev, d, iz, iy, ix, r, r2, k, w, n, p));
        }
    }
}

}  // namespace airtp
