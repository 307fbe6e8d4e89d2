// CPU pencil-beam dose-influence: OpenMP over chunks of voxels. The counting
// pass and the filling pass walk the same chunks in the same order, so every
// column's rows come out sorted and the result does not depend on the number
// of threads. Per voxel and beam the erf factors are computed once per
// beamlet edge, then every beamlet within the cut-off costs a few multiplies.
#include "pencilbeam.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include <omp.h>
#ifdef __linux__
#include <sys/mman.h>
#endif

namespace airtp {
namespace {

// Chunks of consecutive voxels: many small ones, so that the pairs of one
// chunk fit in cache while they are regrouped by column, but no more than
// keeps the (chunks x columns) offset table within 32 MB.
int64_t n_chunks(int64_t nvox, int64_t ncols) {
    const int64_t least = 8 * int64_t(omp_get_max_threads());
    const int64_t by_size = nvox / 1024;
    const int64_t by_table = std::max<int64_t>(least, (int64_t(1) << 23) / std::max<int64_t>(1, ncols));
    return std::max<int64_t>(1, std::min(nvox, std::max(least, std::min(by_size, by_table))));
}

// erf on a uniform table with linear interpolation: |error| < 3e-8, several
// times faster than std::erf, which dominated the filling pass.
class ErfTable {
  public:
    ErfTable() {
        v_.resize(kN + 2);
        for (int64_t i = 0; i <= kN + 1; ++i) v_[i] = std::erf(-kMax + double(i) / kPerUnit);
    }
    double operator()(double x) const {
        const double t = (x + kMax) * kPerUnit;
        if (!(t > 0.0)) return -1.0;
        if (t >= double(kN)) return 1.0;
        const int64_t i = int64_t(t);
        const double f = t - double(i);
        return v_[i] + f * (v_[i + 1] - v_[i]);
    }

  private:
    static constexpr double kMax = 6.0;       // erf(6) = 1 - 2e-17
    static constexpr double kPerUnit = 2048;  // samples per unit
    static constexpr int64_t kN = int64_t(2 * kMax * kPerUnit);
    std::vector<double> v_;
};

const ErfTable& erf_table() {
    static const ErfTable t;
    return t;
}

// Ask for transparent huge pages on a large output buffer before it is first
// written: the filling pass writes to thousands of column streams at once,
// and with 4 kB pages nearly every write missed the TLB.
void advise_huge_pages(void* p, size_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    const uintptr_t huge = uintptr_t(2) << 20;
    const uintptr_t a = (reinterpret_cast<uintptr_t>(p) + huge - 1) & ~(huge - 1);
    const uintptr_t e = (reinterpret_cast<uintptr_t>(p) + bytes) & ~(huge - 1);
    if (e > a) madvise(reinterpret_cast<void*>(a), e - a, MADV_HUGEPAGE);  // advice only: failure is harmless
#else
    (void)p;
    (void)bytes;
#endif
}

// Edge erf table for one axis: F[c][k] for beamlets lo..hi of component c.
struct AxisFactors {
    std::vector<double> f;  // (n_comp, n)
    int32_t n = 0;
    void build(double pos, double first_centre, double pitch, int32_t lo, int32_t hi, int n_comp,
               const double* inv_sig) {
        n = hi - lo + 1;
        f.resize(size_t(n_comp) * (n + 1));
        std::vector<double>& e = f;  // reuse: compute edges then differences in place
        const ErfTable& E = erf_table();
        for (int c = 0; c < n_comp; ++c) {
            double* ec = e.data() + size_t(c) * (n + 1);
            // edges of beamlets lo..hi: lower edge of k is centre_k - pitch/2
            for (int32_t k = 0; k <= n; ++k) {
                const double edge = first_centre + (double(lo + k) - 0.5) * pitch;
                ec[k] = E((pos - edge) * inv_sig[c]);
            }
            // factor of beamlet k: 1/2 [erf((pos - lower) s) - erf((pos - upper) s)]
            for (int32_t k = 0; k < n; ++k) ec[k] = 0.5 * (ec[k] - ec[k + 1]);
        }
    }
    double at(int c, int32_t k) const { return f[size_t(c) * (n + 1) + k]; }
};

// Visit every (column, value) pair of one voxel in one beam, columns ascending.
template <class Visit>
void voxel_pairs(const InfluenceProblem& P, const BeamGeometry& bm, const double p[3], double depth,
                 AxisFactors& fx, AxisFactors& fy, const Visit& visit) {
    BeamProjection o;
    if (!project_voxel(bm, p, P.kernel.cutoff_mm, o)) return;
    double amp[kMaxComponents], inv[kMaxComponents];
    kernel_at(P.kernel, depth, o.scale, amp, inv);
    const int nc = P.kernel.n_comp;
    fx.build(o.a, bm.x0, bm.sx, o.ixlo, o.ixhi, nc, inv);
    fy.build(o.b, bm.y0, bm.sy, o.iylo, o.iyhi, nc, inv);
    const int32_t* map = P.column_map + bm.map_offset;
    for (int32_t iy = o.iylo; iy <= o.iyhi; ++iy) {
        double ay[kMaxComponents];
        for (int c = 0; c < nc; ++c) ay[c] = amp[c] * fy.at(c, iy - o.iylo);
        for (int32_t ix = o.ixlo; ix <= o.ixhi; ++ix) {
            const int32_t col = map[int64_t(iy) * bm.nx + ix];
            if (col < 0 || !within_cutoff(bm, o, ix, iy)) continue;
            double val = 0.0;
            for (int c = 0; c < nc; ++c) val += ay[c] * fx.at(c, ix - o.ixlo);
            visit(col, val);
        }
    }
}

template <class Visit>
void voxel_columns(const InfluenceProblem& P, const BeamGeometry& bm, const double p[3], const Visit& visit) {
    BeamProjection o;
    if (!project_voxel(bm, p, P.kernel.cutoff_mm, o)) return;
    const int32_t* map = P.column_map + bm.map_offset;
    for (int32_t iy = o.iylo; iy <= o.iyhi; ++iy)
        for (int32_t ix = o.ixlo; ix <= o.ixhi; ++ix) {
            const int32_t col = map[int64_t(iy) * bm.nx + ix];
            if (col >= 0 && within_cutoff(bm, o, ix, iy)) visit(col);
        }
}

}  // namespace

void beam_depths(const InfluenceProblem& P, float* depth) {
    const float nan = std::numeric_limits<float>::quiet_NaN();
#pragma omp parallel for schedule(dynamic, 64)
    for (int64_t i = 0; i < P.nvox; ++i) {
        double p[3];
        voxel_centre(P.dose, P.voxels[i], p);
        for (int32_t b = 0; b < P.nbeams; ++b) {
            const BeamGeometry& bm = P.beams[b];
            depth[int64_t(b) * P.nvox + i] =
                reaches_any(P, bm, p) ? float(siddon_path(P.rho, P.ct, bm.source, p)) : nan;
        }
    }
}

CscPlan influence_count(const InfluenceProblem& P) {
    CscPlan plan;
    const int64_t nch = n_chunks(P.nvox, P.ncols), nc = P.ncols;
    plan.chunk_begin.resize(nch + 1);
    for (int64_t c = 0; c <= nch; ++c) plan.chunk_begin[c] = P.nvox * c / nch;
    plan.offsets.assign(size_t(nch * nc), 0);
    plan.reached.assign(size_t(P.nbeams) * P.nvox, 0);
    std::vector<int64_t> chunk_pairs(nch);
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t ch = 0; ch < nch; ++ch) {
        int32_t* cnt = plan.offsets.data() + ch * nc;
        int64_t pairs = 0;
        for (int64_t i = plan.chunk_begin[ch]; i < plan.chunk_begin[ch + 1]; ++i) {
            double p[3];
            voxel_centre(P.dose, P.voxels[i], p);
            for (int32_t b = 0; b < P.nbeams; ++b) {
                int64_t n = 0;
                voxel_columns(P, P.beams[b], p, [&](int32_t col) {
                    ++cnt[col];
                    ++n;
                });
                plan.reached[int64_t(i) * P.nbeams + b] = n > 0;
                pairs += n;
            }
        }
        chunk_pairs[ch] = pairs;
    }
    plan.max_chunk_pairs = *std::max_element(chunk_pairs.begin(), chunk_pairs.end());
    plan.colptr.assign(nc + 1, 0);
    // per-chunk counts -> each chunk's first position within the column
#pragma omp parallel for schedule(static)
    for (int64_t col = 0; col < nc; ++col) {
        int64_t run = 0;
        for (int64_t ch = 0; ch < nch; ++ch) {
            const int32_t c = plan.offsets[ch * nc + col];
            plan.offsets[ch * nc + col] = int32_t(run);
            run += c;
        }
        plan.colptr[col + 1] = run;
    }
    for (int64_t col = 0; col < nc; ++col) plan.colptr[col + 1] += plan.colptr[col];
    return plan;
}

void influence_fill(const InfluenceProblem& P, const CscPlan& plan, int32_t* rows, float* vals) {
    const int64_t nch = int64_t(plan.chunk_begin.size()) - 1, nc = P.ncols;
    const int64_t nnz = plan.colptr[nc];
    advise_huge_pages(rows, size_t(nnz) * sizeof(int32_t));
    advise_huge_pages(vals, size_t(nnz) * sizeof(float));
    erf_table();  // build before the parallel region
#pragma omp parallel
    {
        AxisFactors fx, fy;
        std::vector<int64_t> cursor(nc), start(nc + 1);
        // sized once for the largest chunk: growing them chunk by chunk left
        // the outgrown blocks in the thread's heap, tens of MB of peak memory
        std::vector<int32_t> lrows(plan.max_chunk_pairs);
        std::vector<float> lvals(plan.max_chunk_pairs);
#pragma omp for schedule(dynamic, 1)
        for (int64_t ch = 0; ch < nch; ++ch) {
            // this chunk's pairs of column c go to colptr[c] + [off[c], next[c]) ...
            const int32_t* off = plan.offsets.data() + ch * nc;
            start[0] = 0;
            for (int64_t c = 0; c < nc; ++c) {
                const int64_t next = ch + 1 < nch ? int64_t(off[c + nc]) : plan.colptr[c + 1] - plan.colptr[c];
                start[c + 1] = start[c] + (next - off[c]);
            }
            // ... and are first grouped by column in a local buffer
            std::copy(start.begin(), start.end() - 1, cursor.begin());
            for (int64_t i = plan.chunk_begin[ch]; i < plan.chunk_begin[ch + 1]; ++i) {
                double p[3];
                voxel_centre(P.dose, P.voxels[i], p);
                for (int32_t b = 0; b < P.nbeams; ++b) {
                    if (!plan.reached[int64_t(i) * P.nbeams + b]) continue;
                    const BeamGeometry& bm = P.beams[b];
                    const double d = double(float(siddon_path(P.rho, P.ct, bm.source, p)));
                    voxel_pairs(P, bm, p, d, fx, fy, [&](int32_t col, double v) {
                        const int64_t k = cursor[col]++;
                        lrows[k] = int32_t(i);
                        lvals[k] = float(v);
                    });
                }
            }
            for (int64_t c = 0; c < nc; ++c) {
                const int64_t n = start[c + 1] - start[c];
                if (n == 0) continue;
                const int64_t dst = plan.colptr[c] + off[c];
                std::copy(lrows.begin() + start[c], lrows.begin() + start[c + 1], rows + dst);
                std::copy(lvals.begin() + start[c], lvals.begin() + start[c + 1], vals + dst);
            }
        }
    }
}

void fluence_dose(const InfluenceProblem& P, const float* depth, const float* weights, float* out) {
    erf_table();
#pragma omp parallel
    {
        AxisFactors fx, fy;
#pragma omp for schedule(dynamic, 64)
        for (int64_t i = 0; i < P.nvox; ++i) {
            double p[3];
            voxel_centre(P.dose, P.voxels[i], p);
            double sum = 0.0;
            for (int32_t b = 0; b < P.nbeams; ++b) {
                const float d = depth[int64_t(b) * P.nvox + i];
                if (std::isnan(d)) continue;
                voxel_pairs(P, P.beams[b], p, d, fx, fy, [&](int32_t col, double v) {
                    sum += double(weights[col]) * double(float(v));
                });
            }
            out[i] = float(sum);
        }
    }
}

}  // namespace airtp
