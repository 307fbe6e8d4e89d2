// Separable exact EDT (Felzenszwalb & Huttenlocher, "Distance transforms of
// sampled functions", Theory of Computing 8, 2012) with mm spacing per axis,
// parallel over lines. Strided passes gather blocks of neighbouring lines so
// that every memory access reads a contiguous run of x.
#include "edt.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include <omp.h>

namespace airtp {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr int64_t kBlock = 32;  // x columns gathered together in strided passes

struct Box {
    int64_t z0, z1, y0, y1, x0, x1;  // half-open
    int64_t nz() const { return z1 - z0; }
    int64_t ny() const { return y1 - y0; }
    int64_t nx() const { return x1 - x0; }
    int64_t size() const { return nz() * ny() * nx(); }
};

// Bounding box of nonzero voxels; returns false when the mask is empty.
bool bounding_box(const uint8_t* mask, Dims d, Box& box) {
    int64_t z0 = d.nz, z1 = -1, y0 = d.ny, y1 = -1, x0 = d.nx, x1 = -1;
#pragma omp parallel for reduction(min : z0, y0, x0) reduction(max : z1, y1, x1) schedule(static)
    for (int64_t z = 0; z < d.nz; ++z) {
        for (int64_t y = 0; y < d.ny; ++y) {
            const uint8_t* row = mask + (z * d.ny + y) * d.nx;
            int64_t first = -1, last = -1;
            for (int64_t x = 0; x < d.nx; ++x)
                if (row[x]) { first = x; break; }
            if (first < 0) continue;
            for (int64_t x = d.nx - 1; x >= first; --x)
                if (row[x]) { last = x; break; }
            z0 = std::min(z0, z); z1 = std::max(z1, z);
            y0 = std::min(y0, y); y1 = std::max(y1, y);
            x0 = std::min(x0, first); x1 = std::max(x1, last);
        }
    }
    if (z1 < 0) return false;
    box = {z0, z1 + 1, y0, y1 + 1, x0, x1 + 1};
    return true;
}

Box grow(const Box& b, Dims d, const int64_t lo[3], const int64_t hi[3]) {
    return {std::max<int64_t>(0, b.z0 - lo[0]), std::min(d.nz, b.z1 + hi[0]),
            std::max<int64_t>(0, b.y0 - lo[1]), std::min(d.ny, b.y1 + hi[1]),
            std::max<int64_t>(0, b.x0 - lo[2]), std::min(d.nx, b.x1 + hi[2])};
}

// out[p] = min_q f[q] + (w (p - q))^2 over a line of n samples.
void lower_envelope(const double* f, int64_t n, double w, double* out, int64_t* v, double* zb) {
    int64_t k = -1;
    for (int64_t q = 0; q < n; ++q) {
        if (f[q] == kInf) continue;
        const double xq = w * static_cast<double>(q);
        const double hq = f[q] + xq * xq;
        double s = -kInf;
        while (k >= 0) {
            const double xv = w * static_cast<double>(v[k]);
            s = (hq - (f[v[k]] + xv * xv)) / (2.0 * (xq - xv));
            if (s <= zb[k]) --k;
            else break;
        }
        ++k;
        v[k] = q;
        zb[k] = (k == 0) ? -kInf : s;
    }
    if (k < 0) {
        std::fill(out, out + n, kInf);
        return;
    }
    zb[k + 1] = kInf;
    int64_t j = 0;
    for (int64_t p = 0; p < n; ++p) {
        const double xp = w * static_cast<double>(p);
        while (zb[j + 1] < xp) ++j;
        const double dx = xp - w * static_cast<double>(v[j]);
        out[p] = f[v[j]] + dx * dx;
    }
}

// out[p] = min_k f[p - k] + g[k + kneg], k in [-kneg, kpos].
void min_convolve(const double* f, int64_t n, const std::vector<double>& g, int64_t kneg,
                  int64_t kpos, double* out) {
    for (int64_t p = 0; p < n; ++p) {
        double best = kInf;
        const int64_t klo = std::max(-kneg, p - (n - 1));
        const int64_t khi = std::min(kpos, p);
        for (int64_t k = klo; k <= khi; ++k) best = std::min(best, f[p - k] + g[k + kneg]);
        out[p] = best;
    }
}

// Apply op(in, out, n) to every line of W (box shape bz, by, bx) along axis
// (0 = z, 1 = y, 2 = x), in place.
template <class Op>
void for_each_line(double* W, int64_t bz, int64_t by, int64_t bx, int axis, const Op& op) {
    if (axis == 2) {
#pragma omp parallel
        {
            std::vector<double> buf(bx);
#pragma omp for schedule(static)
            for (int64_t r = 0; r < bz * by; ++r) {
                double* line = W + r * bx;
                std::copy(line, line + bx, buf.begin());
                op(buf.data(), line, bx);
            }
        }
        return;
    }
    const int64_t n = axis == 1 ? by : bz;
    const int64_t stride = axis == 1 ? bx : by * bx;
    const int64_t outer = axis == 1 ? bz : by;
    const int64_t nblocks = (bx + kBlock - 1) / kBlock;
#pragma omp parallel
    {
        std::vector<double> in(n * kBlock), out(n);
#pragma omp for schedule(dynamic, 4)
        for (int64_t item = 0; item < outer * nblocks; ++item) {
            const int64_t o = item / nblocks, xb = (item % nblocks) * kBlock;
            const int64_t width = std::min(kBlock, bx - xb);
            const int64_t base = (axis == 1 ? o * by * bx : o * bx) + xb;
            for (int64_t j = 0; j < n; ++j) {
                const double* src = W + base + j * stride;
                for (int64_t c = 0; c < width; ++c) in[c * n + j] = src[c];
            }
            for (int64_t c = 0; c < width; ++c) {
                op(in.data() + c * n, out.data(), n);
                // scatter this column back; neighbouring columns share cache lines
                for (int64_t j = 0; j < n; ++j) W[base + j * stride + c] = out[j];
            }
        }
    }
}

// Squared mm distance, for every voxel of box, to the nearest voxel of box
// whose mask value differs from `background` (features: mask != background).
void edt_box(const uint8_t* mask, Dims d, const Box& b, const double sp[3], bool features_are_zero,
             std::vector<double>& W) {
    const int64_t bz = b.nz(), by = b.ny(), bx = b.nx();
    W.resize(b.size());
    const double wx = sp[2];
    // x pass on the binary mask: nearest feature along the row by two sweeps.
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < bz * by; ++r) {
        const int64_t z = b.z0 + r / by, y = b.y0 + r % by;
        const uint8_t* row = mask + (z * d.ny + y) * d.nx + b.x0;
        double* o = W.data() + r * bx;
        int64_t last = -1;
        for (int64_t x = 0; x < bx; ++x) {
            const bool feat = features_are_zero ? row[x] == 0 : row[x] != 0;
            if (feat) last = x;
            o[x] = last < 0 ? kInf : static_cast<double>(x - last);
        }
        last = -1;
        for (int64_t x = bx - 1; x >= 0; --x) {
            const bool feat = features_are_zero ? row[x] == 0 : row[x] != 0;
            if (feat) last = x;
            if (last >= 0) o[x] = std::min(o[x], static_cast<double>(last - x));
        }
        for (int64_t x = 0; x < bx; ++x) o[x] = o[x] == kInf ? kInf : (wx * o[x]) * (wx * o[x]);
    }
    for (int axis : {1, 0}) {
        const double w = sp[axis];
        const int64_t n = axis == 1 ? by : bz;
        if (n == 1) continue;
        for_each_line(W.data(), bz, by, bx, axis, [w, n](const double* in, double* out, int64_t) {
            thread_local std::vector<int64_t> v;
            thread_local std::vector<double> zb;
            if (static_cast<int64_t>(v.size()) < n + 1) { v.resize(n + 1); zb.resize(n + 1); }
            lower_envelope(in, n, w, out, v.data(), zb.data());
        });
    }
}

inline bool within(double dist_sq, double limit_sq) {
    return dist_sq <= limit_sq * (1.0 + kWithinRelTol);
}

}  // namespace

void edt_sq(const uint8_t* mask, Dims d, const double spacing[3], double* out) {
    Box full{0, d.nz, 0, d.ny, 0, d.nx};
    std::vector<double> W;
    edt_box(mask, d, full, spacing, false, W);
    std::copy(W.begin(), W.end(), out);
}

void margin(const uint8_t* mask, Dims d, const double spacing[3], double mm, uint8_t* out) {
    std::fill(out, out + d.size(), uint8_t{0});
    Box mb;
    if (!bounding_box(mask, d, mb)) return;
    std::vector<double> W;
    if (mm == 0.0) {
        std::copy(mask, mask + d.size(), out);
        for (int64_t i = 0; i < d.size(); ++i) out[i] = out[i] ? 1 : 0;
        return;
    }
    if (mm > 0) {
        int64_t r[3];
        for (int a = 0; a < 3; ++a) r[a] = static_cast<int64_t>(std::floor(mm / spacing[a] * (1.0 + kWithinRelTol)));
        const Box b = grow(mb, d, r, r);
        edt_box(mask, d, b, spacing, false, W);
        const double lim = mm * mm;
#pragma omp parallel for schedule(static)
        for (int64_t r2 = 0; r2 < b.nz() * b.ny(); ++r2) {
            const int64_t z = b.z0 + r2 / b.ny(), y = b.y0 + r2 % b.ny();
            uint8_t* o = out + (z * d.ny + y) * d.nx + b.x0;
            const double* w = W.data() + r2 * b.nx();
            for (int64_t x = 0; x < b.nx(); ++x) o[x] = within(w[x], lim) ? 1 : 0;
        }
        return;
    }
    // Contraction: distance to the background; one voxel of background around
    // the mask's box holds every nearest background voxel (clamping argument).
    const int64_t one[3] = {1, 1, 1};
    const Box b = grow(mb, d, one, one);
    edt_box(mask, d, b, spacing, true, W);
    const double lim = mm * mm;
#pragma omp parallel for schedule(static)
    for (int64_t r2 = 0; r2 < b.nz() * b.ny(); ++r2) {
        const int64_t z = b.z0 + r2 / b.ny(), y = b.y0 + r2 % b.ny();
        const int64_t off = (z * d.ny + y) * d.nx + b.x0;
        const double* w = W.data() + r2 * b.nx();
        for (int64_t x = 0; x < b.nx(); ++x) out[off + x] = (mask[off + x] && !within(w[x], lim)) ? 1 : 0;
    }
}

void asymmetric_expand(const uint8_t* mask, Dims d, const double spacing[3], const double radii[6],
                       uint8_t* out) {
    std::fill(out, out + d.size(), uint8_t{0});
    Box mb;
    if (!bounding_box(mask, d, mb)) return;
    // radii order x-, x+, y-, y+, z-, z+ ; axis index a: 0 = z, 1 = y, 2 = x.
    int64_t lo[3], hi[3];
    std::vector<double> g[3];
    for (int a = 0; a < 3; ++a) {
        const int r_index = 2 * (2 - a);
        const double rneg = radii[r_index], rpos = radii[r_index + 1];
        lo[a] = static_cast<int64_t>(std::floor(rneg / spacing[a] * (1.0 + kWithinRelTol)));
        hi[a] = static_cast<int64_t>(std::floor(rpos / spacing[a] * (1.0 + kWithinRelTol)));
        // g[k]: normalised cost of offset k (p = q + k) along axis a.
        g[a].resize(lo[a] + hi[a] + 1);
        for (int64_t k = -lo[a]; k <= hi[a]; ++k) {
            const double r = k > 0 ? rpos : rneg;
            const double t = k == 0 ? 0.0 : spacing[a] * static_cast<double>(k) / r;
            g[a][k + lo[a]] = t * t;
        }
    }
    // The result reaches lo below and hi above the mask box on each axis.
    const Box b = grow(mb, d, lo, hi);
    const int64_t bz = b.nz(), by = b.ny(), bx = b.nx();
    std::vector<double> W(b.size());
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < bz * by; ++r) {
        const int64_t z = b.z0 + r / by, y = b.y0 + r % by;
        const uint8_t* row = mask + (z * d.ny + y) * d.nx + b.x0;
        for (int64_t x = 0; x < bx; ++x) W[r * bx + x] = row[x] ? 0.0 : kInf;
    }
    for (int a : {2, 1, 0}) {
        const std::vector<double>& ga = g[a];
        const int64_t kneg = lo[a], kpos = hi[a];
        for_each_line(W.data(), bz, by, bx, a, [&ga, kneg, kpos](const double* in, double* o, int64_t n) {
            min_convolve(in, n, ga, kneg, kpos, o);
        });
    }
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < bz * by; ++r) {
        const int64_t z = b.z0 + r / by, y = b.y0 + r % by;
        uint8_t* o = out + (z * d.ny + y) * d.nx + b.x0;
        for (int64_t x = 0; x < bx; ++x) o[x] = within(W[r * bx + x], 1.0) ? 1 : 0;
    }
}

}  // namespace airtp
