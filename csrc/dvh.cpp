// Histograms of dose inside many prepared structures (DvhIndex).
//
// Preparation (once per structure set): every mask is scanned row by row,
// eight voxels at a time where it is empty, into runs of voxels along x;
// weighted structures keep their weights in run order. The runs are cut into
// work items of about kDvhItemVoxels voxels, listed largest first.
//
// Per dose: dose_scan is one parallel pass for validation (NaN/inf count,
// minimum, maximum on the float bit patterns: vectorised integer min/max).
// dvh_histograms is one parallel region with one dynamic loop over the items
// (and no barrier but the last: with more runnable threads than cores every
// barrier can cost a time slice). An item copies the doses of its runs one
// after the other into a thread buffer, computes their bins, exact min/max
// and sum in one vectorised pass (AVX-512 / AVX2 / SSE2 clones), then counts
// the bins into two interleaved uint32 sub-histograms. A structure of one
// item writes its output rows directly from the thread's scratch; the items
// of a larger one are merged into its output row under a lock, and the last
// one to merge finishes the row. Output rows are the scaled differential
// histogram and the cumulative sum (exact counts times the voxel volume for
// masks).
#include "dvh.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <numeric>

#include <omp.h>

namespace airtp {
namespace {

inline bool word_empty(const uint8_t* p) {
    uint64_t w;
    std::memcpy(&w, p, 8);
    return w == 0;
}

inline bool word_empty(const float* p) {
    // eight weights that are all +0.0f are 32 zero bytes
    uint64_t w[4];
    std::memcpy(w, p, 32);
    return (w[0] | w[1] | w[2] | w[3]) == 0;
}

inline bool belongs(const uint8_t* p, int64_t i) { return p[i] != 0; }
inline bool belongs(const float* p, int64_t i) { return p[i] > 0.0f; }

struct StructureRuns {
    std::vector<int64_t> starts;
    std::vector<int32_t> lengths;
    std::vector<float> weights;
};

template <class T>
void runs_of(const T* m, Dims d, bool keep_weights, StructureRuns& out) {
    const int64_t rows = d.nz * d.ny;
    for (int64_t r = 0; r < rows; ++r) {
        const T* row = m + r * d.nx;
        int64_t x = 0;
        while (x < d.nx) {
            if (x + 8 <= d.nx && word_empty(row + x)) {
                x += 8;
                continue;
            }
            if (!belongs(row, x)) {
                ++x;
                continue;
            }
            const int64_t x0 = x;
            while (x < d.nx && belongs(row, x)) ++x;
            out.starts.push_back(r * d.nx + x0);
            out.lengths.push_back(static_cast<int32_t>(x - x0));
            if (keep_weights)
                for (int64_t i = x0; i < x; ++i) out.weights.push_back(reinterpret_cast<const float*>(row)[i]);
        }
    }
}

inline int32_t float_bits(float v) {
    int32_t b;
    std::memcpy(&b, &v, 4);
    return b;
}

inline float bits_float(int32_t b) {
    float v;
    std::memcpy(&v, &b, 4);
    return v;
}

// Per-item (and per merged structure) accumulator.
struct Acc {
    int64_t lo = std::numeric_limits<int64_t>::max(), hi = -1;  // bins touched
    DvhStats st;
    void merge(const Acc& o) {
        if (o.st.voxels == 0) return;
        if (st.voxels == 0) {
            st.min = o.st.min;
            st.max = o.st.max;
        } else {
            st.min = std::min(st.min, o.st.min);
            st.max = std::max(st.max, o.st.max);
        }
        st.volume += o.st.volume;
        st.dose_sum += o.st.dose_sum;
        st.voxels += o.st.voxels;
        lo = std::min(lo, o.lo);
        hi = std::max(hi, o.hi);
    }
};

struct Binning {
    double width, inv_width;
    int32_t last;  // n_bins - 1
};

// Hot loops: vectorised with AVX-512 / AVX2 where the CPU has them (function
// multi-versioning), SSE2 otherwise. The selects on double comparisons
// vectorise only without trapping math (no FP exceptions are used here).
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define AIRTP_DVH_HOT __attribute__((target_clones("avx512f", "avx2", "default"), optimize("no-trapping-math")))
#else
#define AIRTP_DVH_HOT
#endif

// One pass over the gathered doses of an item: bins into buf (the rule of
// dvh_bin, branch-free), exact min/max and the sum; doses finite and >= 0.
AIRTP_DVH_HOT
void item_pass(const float* __restrict vals, int64_t n, const Binning& B, int32_t* __restrict buf, float& vmin,
               float& vmax, double& vsum, int32_t& bmin, int32_t& bmax) {
    const double w = B.width, inv = B.inv_width, last = static_cast<double>(B.last);
    float mn = vmin, mx = vmax;
    double s = 0.0;
#pragma omp simd reduction(min : mn) reduction(max : mx) reduction(+ : s)
    for (int64_t j = 0; j < n; ++j) {
        const float x = vals[j];
        const double v = static_cast<double>(x);
        double f = v * inv;
        f = f < last ? f : last;  // also keeps the conversion in range
        double b = static_cast<double>(static_cast<int32_t>(f));
        const double lo = b * w, hi = (b + 1.0) * w;  // edges k * w as in dvh_bin
        b = b - static_cast<double>(v < lo) + static_cast<double>(v >= hi);
        b = b > last ? last : b;
        b = b < 0.0 ? 0.0 : b;
        buf[j] = static_cast<int32_t>(b);
        mn = x < mn ? x : mn;
        mx = x > mx ? x : mx;
        s += v;
    }
    vmin = mn;
    vmax = mx;
    vsum += s;
    // the bins touched (the scratch histograms are cleared over exactly these)
    int32_t lo = bmin, hi = bmax;
#pragma omp simd reduction(min : lo) reduction(max : hi)
    for (int64_t j = 0; j < n; ++j) {
        lo = buf[j] < lo ? buf[j] : lo;
        hi = buf[j] > hi ? buf[j] : hi;
    }
    bmin = lo;
    bmax = hi;
}

// Doses of the runs r0..r1 copied one after the other into vals (which has
// 8 floats of slack); returns the count. Runs are copied in blocks of eight
// floats (one 32-byte move each) except where a block would read past the
// end of the dose.
inline int64_t gather(const float* dose, int64_t n_voxels, const DvhIndex& ix, int64_t r0, int64_t r1, float* vals) {
    int64_t k = 0;
    for (int64_t r = r0; r < r1; ++r) {
        const int64_t n = ix.lengths[r], st = ix.starts[r];
        const float* p = dose + st;
        float* q = vals + k;
        if (st + ((n + 7) & ~int64_t(7)) <= n_voxels) {
            for (int64_t j = 0; j < n; j += 8) std::memcpy(q + j, p + j, 32);
        } else {
            std::memcpy(q, p, sizeof(float) * static_cast<size_t>(n));
        }
        k += n;
    }
    return k;
}

inline void finish_acc(Acc& a, float vmin, float vmax, int32_t bmin, int32_t bmax) {
    if (a.st.voxels == 0) return;
    a.st.min = vmin == 0.0f ? 0.0 : static_cast<double>(vmin);
    a.st.max = vmax == 0.0f ? 0.0 : static_cast<double>(vmax);
    a.lo = bmin;
    a.hi = bmax;
}

struct Scratch {
    std::vector<float> vals;
    std::vector<int32_t> bins;
};

// Mask runs r0..r1 into `Ways` (2 or 1) interleaved uint32 sub-histograms
// cnt[b * Ways + k] (repeated bins then do not serialise on one counter).
template <int Ways>
Acc mask_item(const float* dose, const DvhIndex& ix, int64_t r0, int64_t r1, const Binning& B, uint32_t* cnt,
              Scratch& sc) {
    Acc a;
    const int64_t n = gather(dose, ix.dims.size(), ix, r0, r1, sc.vals.data());
    float mn = std::numeric_limits<float>::infinity(), mx = -mn;
    double sum = 0.0;
    int32_t bmin = std::numeric_limits<int32_t>::max(), bmax = -1;
    item_pass(sc.vals.data(), n, B, sc.bins.data(), mn, mx, sum, bmin, bmax);
    const int32_t* buf = sc.bins.data();
    int64_t j = 0;
    if (Ways == 2) {
        for (; j + 2 <= n; j += 2) {
            ++cnt[buf[j] * 2];
            ++cnt[buf[j + 1] * 2 + 1];
        }
    }
    for (; j < n; ++j) ++cnt[static_cast<int64_t>(buf[j]) * Ways];
    a.st.voxels = n;
    a.st.volume = static_cast<double>(n);
    a.st.dose_sum = sum;
    finish_acc(a, mn, mx, bmin, bmax);
    return a;
}

// Weighted runs r0..r1 (their weights are contiguous) into row (double).
Acc weight_item(const float* dose, const DvhIndex& ix, int64_t r0, int64_t r1, const Binning& B, double* row,
                Scratch& sc) {
    Acc a;
    const int64_t n = gather(dose, ix.dims.size(), ix, r0, r1, sc.vals.data());
    float mn = std::numeric_limits<float>::infinity(), mx = -mn;
    double unused = 0.0, vol = 0.0, dsum = 0.0;
    int32_t bmin = std::numeric_limits<int32_t>::max(), bmax = -1;
    item_pass(sc.vals.data(), n, B, sc.bins.data(), mn, mx, unused, bmin, bmax);
    const float* wp = ix.weights.data() + (n > 0 ? ix.wpos[r0] : 0);
    const float* v = sc.vals.data();
    const int32_t* buf = sc.bins.data();
    for (int64_t j = 0; j < n; ++j) {
        const double w = static_cast<double>(wp[j]);
        row[buf[j]] += w;
        vol += w;
        dsum += w * static_cast<double>(v[j]);
    }
    a.st.voxels = n;
    a.st.volume = vol;
    a.st.dose_sum = dsum;
    finish_acc(a, mn, mx, bmin, bmax);
    return a;
}

}  // namespace

// ---- DvhIndex ----------------------------------------------------------------

DvhIndex::DvhIndex(const std::vector<DvhStructure>& structures, Dims d, int64_t item_voxels) : dims(d) {
    const int64_t ns = static_cast<int64_t>(structures.size());
    std::vector<StructureRuns> per(ns);
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t s = 0; s < ns; ++s) {
        if (structures[s].mask) runs_of(structures[s].mask, d, false, per[s]);
        else runs_of(structures[s].weight, d, true, per[s]);
    }
    offsets.assign(ns + 1, 0);
    int64_t nw = 0;
    for (int64_t s = 0; s < ns; ++s) {
        offsets[s + 1] = offsets[s] + static_cast<int64_t>(per[s].starts.size());
        nw += static_cast<int64_t>(per[s].weights.size());
    }
    const int64_t nr = offsets[ns];
    starts.resize(nr);
    lengths.resize(nr);
    wpos.resize(nr);
    weights.reserve(nw);
    voxels.assign(ns, 0);
    split.assign(ns, 0);
    std::vector<int64_t> item_vox;
    for (int64_t s = 0; s < ns; ++s) {
        const bool weighted = structures[s].weight != nullptr;
        int64_t r = offsets[s], item_start = r, acc = 0, n_items = 0;
        for (size_t k = 0; k < per[s].starts.size(); ++k, ++r) {
            starts[r] = per[s].starts[k];
            lengths[r] = per[s].lengths[k];
            wpos[r] = -1;  // weighted structures: set below
            voxels[s] += lengths[r];
            acc += lengths[r];
            if (acc >= item_voxels) {
                item_r0.push_back(item_start);
                item_r1.push_back(r + 1);
                item_s.push_back(static_cast<int32_t>(s));
                item_vox.push_back(acc);
                item_start = r + 1;
                acc = 0;
                ++n_items;
            }
        }
        if (acc > 0) {
            item_r0.push_back(item_start);
            item_r1.push_back(r);
            item_s.push_back(static_cast<int32_t>(s));
            item_vox.push_back(acc);
            ++n_items;
        }
        if (weighted) {
            // weights of the structure in run order, positions relative to its first weight
            const int64_t base = static_cast<int64_t>(weights.size());
            weights.insert(weights.end(), per[s].weights.begin(), per[s].weights.end());
            int64_t pos = base;
            for (int64_t q = offsets[s]; q < offsets[s + 1]; ++q) {
                wpos[q] = pos;
                pos += lengths[q];
            }
        }
        split[s] = n_items > 1 ? 1 : 0;
        StructureRuns().starts.swap(per[s].starts);  // free as we go
        StructureRuns().weights.swap(per[s].weights);
    }
    for (int64_t v : item_vox) max_item_voxels = std::max(max_item_voxels, v);
    // Largest items first (longest-processing-time order for the dynamic schedule).
    std::vector<int64_t> order(item_s.size());
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return item_vox[a] > item_vox[b]; });
    std::vector<int64_t> r0(order.size()), r1(order.size());
    std::vector<int32_t> is(order.size());
    for (size_t i = 0; i < order.size(); ++i) {
        r0[i] = item_r0[order[i]];
        r1[i] = item_r1[order[i]];
        is[i] = item_s[order[i]];
    }
    item_r0.swap(r0);
    item_r1.swap(r1);
    item_s.swap(is);
}

int64_t DvhIndex::nbytes() const {
    return static_cast<int64_t>(offsets.size() * 8 + starts.size() * 8 + lengths.size() * 4 + wpos.size() * 8 +
                                weights.size() * 4 + voxels.size() * 8 + item_r0.size() * 20 + split.size());
}

// ---- per dose ----------------------------------------------------------------

namespace {

// Count of NaN/inf (exponent all ones) and min/max of the bit patterns of p[0..n).
AIRTP_DVH_HOT
void scan_chunk(const float* __restrict p, int64_t n, int64_t& bad, int32_t& imin, int32_t& imax) {
    int32_t mn = imin, mx = imax, nb = 0;
#pragma omp simd reduction(+ : nb) reduction(min : mn) reduction(max : mx)
    for (int64_t i = 0; i < n; ++i) {
        const int32_t b = float_bits(p[i]);
        nb += ((b & 0x7f800000) == 0x7f800000) ? 1 : 0;
        mn = b < mn ? b : mn;
        mx = b > mx ? b : mx;
    }
    bad += nb;
    imin = mn;
    imax = mx;
}

}  // namespace

DoseScan dose_scan(const float* dose, int64_t n) {
    DoseScan out;
    if (n <= 0) return out;
    int64_t bad = 0;
    int32_t imin = std::numeric_limits<int32_t>::max(), imax = std::numeric_limits<int32_t>::min();
    constexpr int64_t kChunk = 1 << 16;  // < 2^31 NaNs per chunk for the int32 count
    const int64_t nchunks = (n + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static) reduction(+ : bad) reduction(min : imin) reduction(max : imax)
    for (int64_t c = 0; c < nchunks; ++c) {
        const int64_t i0 = c * kChunk;
        scan_chunk(dose + i0, std::min(kChunk, n - i0), bad, imin, imax);
    }
    out.nonfinite = bad;
    if (bad > 0) return out;
    if (imin >= 0) {  // all doses >= +0.0: bit patterns order like the values
        out.min = static_cast<double>(bits_float(imin));
        out.max = static_cast<double>(bits_float(imax));
        return out;
    }
    // some sign bit set (negative doses, or -0.0): exact float pass
    float mn = std::numeric_limits<float>::infinity(), mx = -mn;
#pragma omp parallel for schedule(static) reduction(min : mn) reduction(max : mx)
    for (int64_t i = 0; i < n; ++i) {
        mn = dose[i] < mn ? dose[i] : mn;
        mx = dose[i] > mx ? dose[i] : mx;
    }
    out.min = mn == 0.0f ? 0.0 : static_cast<double>(mn);
    out.max = mx == 0.0f ? 0.0 : static_cast<double>(mx);
    return out;
}

void dvh_finish_row(double* diff, double* cum, int64_t n_bins, int64_t lo, int64_t hi, double scale, bool integer) {
    if (hi < lo) {  // empty
        std::fill(diff, diff + n_bins, 0.0);
        std::fill(cum, cum + n_bins + 1, 0.0);
        return;
    }
    std::fill(cum + hi + 1, cum + n_bins + 1, 0.0);
    const int64_t n = hi - lo + 1;
    double total = 0.0;
    if (!integer || n < 64) {
        for (int64_t b = hi; b >= lo; --b) {
            total += diff[b];
            cum[b] = total;
        }
    } else {
        // Counts (integer-valued doubles: sums exact in any order): four
        // blocks summed from their tops as independent chains, then the
        // totals of the blocks above added to each.
        const int64_t q = n / 4;
        const int64_t extra = n - 4 * q;  // top elements of the top block, done first
        double run[4] = {0.0, 0.0, 0.0, 0.0};
        for (int64_t b = hi; b > hi - extra; --b) {
            run[3] += diff[b];
            cum[b] = run[3];
        }
        const int64_t top[4] = {lo + q - 1, lo + 2 * q - 1, lo + 3 * q - 1, hi - extra};
        for (int64_t i = 0; i < q; ++i) {
            for (int k = 0; k < 4; ++k) {
                const int64_t b = top[k] - i;
                run[k] += diff[b];
                cum[b] = run[k];
            }
        }
        double above = run[3];
        for (int k = 2; k >= 0; --k) {
            for (int64_t b = lo + k * q; b < lo + (k + 1) * q; ++b) cum[b] += above;
            above += run[k];
        }
        total = above;
    }
    if (scale != 1.0) {
        for (int64_t b = lo; b <= hi; ++b) {
            diff[b] *= scale;
            cum[b] *= scale;
        }
        total *= scale;
    }
    std::fill(cum, cum + lo, total);
}

void dvh_finish_rows(double* diff, double* cum, const DvhStats* stats, const DvhIndex& ix, double bin_width,
                     int64_t n_bins, double scale) {
    const double inv = 1.0 / bin_width;
    const int64_t ns = ix.n_structures();
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t s = 0; s < ns; ++s) {
        const bool empty = stats[s].voxels == 0;
        const int64_t lo = empty ? 0 : dvh_bin(stats[s].min, bin_width, inv, n_bins);
        const int64_t hi = empty ? -1 : dvh_bin(stats[s].max, bin_width, inv, n_bins);
        const bool integer = empty || ix.wpos[ix.offsets[s]] < 0;
        dvh_finish_row(diff + s * n_bins, cum + s * (n_bins + 1), n_bins, lo, hi, scale, integer);
    }
}

void dvh_histograms(const float* dose, const DvhIndex& ix, double bin_width, int64_t n_bins, double scale,
                    double* diff, double* cum, DvhStats* stats) {
    const int64_t ns = ix.n_structures(), nitems = ix.n_items();
    const Binning B{bin_width, 1.0 / bin_width, static_cast<int32_t>(n_bins - 1)};
    const bool two = n_bins <= (int64_t(1) << 20);
    const int ways = two ? 2 : 1;
    bool any_weights = false;
    std::vector<int64_t> empties;
    for (int64_t s = 0; s < ns; ++s) {
        if (ix.voxels[s] == 0) empties.push_back(s);
        else if (ix.wpos[ix.offsets[s]] >= 0) any_weights = true;
    }
    std::vector<int64_t> remaining(ns, 0);  // items of split structures not merged yet
    for (int64_t it = 0; it < nitems; ++it) ++remaining[ix.item_s[it]];
    std::vector<Acc> merged(ns);
    const int64_t nwork = nitems + static_cast<int64_t>(empties.size());
    // One parallel region, one dynamic loop, no barrier but the last: with
    // more runnable threads than cores, every barrier costs a time slice.
#pragma omp parallel if (nwork > 1)
    {
        // Per-thread scratch kept between calls (OpenMP threads persist): the
        // histograms are all zero between items, cleared over the bins used.
        static thread_local std::vector<uint32_t> cnt;
        static thread_local std::vector<double> wrow;
        static thread_local Scratch sc;
        if (cnt.size() < static_cast<size_t>(n_bins) * ways) cnt.assign(static_cast<size_t>(n_bins) * ways, 0u);
        if (any_weights && wrow.size() < static_cast<size_t>(n_bins)) wrow.assign(n_bins, 0.0);
        if (sc.vals.size() < static_cast<size_t>(ix.max_item_voxels + 8)) {
            sc.vals.resize(static_cast<size_t>(ix.max_item_voxels + 8));
            sc.bins.resize(sc.vals.size());
        }
#pragma omp for schedule(dynamic, 1)
        for (int64_t it = 0; it < nwork; ++it) {
            if (it >= nitems) {  // an empty structure
                const int64_t s = empties[it - nitems];
                dvh_finish_row(diff + s * n_bins, cum + s * (n_bins + 1), n_bins, 0, -1, scale, true);
                stats[s] = DvhStats{};
                continue;
            }
            const int64_t s = ix.item_s[it], r0 = ix.item_r0[it], r1 = ix.item_r1[it];
            const bool weighted = ix.wpos[r0] >= 0;
            Acc a = weighted ? weight_item(dose, ix, r0, r1, B, wrow.data(), sc)
                  : two      ? mask_item<2>(dose, ix, r0, r1, B, cnt.data(), sc)
                             : mask_item<1>(dose, ix, r0, r1, B, cnt.data(), sc);
            double* row = diff + s * n_bins;
            if (!ix.split[s]) {
                std::fill(row, row + a.lo, 0.0);
                std::fill(row + a.hi + 1, row + n_bins, 0.0);
                if (weighted) {
                    for (int64_t b = a.lo; b <= a.hi; ++b) {
                        row[b] = wrow[b];
                        wrow[b] = 0.0;
                    }
                    dvh_finish_row(row, cum + s * (n_bins + 1), n_bins, a.lo, a.hi, scale, false);
                } else {
                    // counts: both rows in one pass from the top (what
                    // dvh_finish_row gives for counts: exact sums times scale)
                    double* crow = cum + s * (n_bins + 1);
                    std::fill(crow + a.hi + 1, crow + n_bins + 1, 0.0);
                    int64_t run = 0;
                    uint32_t* c = cnt.data();
                    for (int64_t b = a.hi; b >= a.lo; --b) {
                        uint32_t v;
                        if (two) {
                            v = c[2 * b] + c[2 * b + 1];
                            c[2 * b] = c[2 * b + 1] = 0u;
                        } else {
                            v = c[b];
                            c[b] = 0u;
                        }
                        run += v;
                        row[b] = static_cast<double>(v) * scale;
                        crow[b] = static_cast<double>(run) * scale;
                    }
                    std::fill(crow, crow + a.lo, static_cast<double>(run) * scale);
                }
                stats[s] = a.st;
                continue;
            }
            // A split structure: the first item to merge initialises the row,
            // the others add; the last one finishes it.
            bool last = false;
#pragma omp critical(airtp_dvh_merge)
            {
                const bool first = merged[s].st.voxels == 0;
                if (first) {
                    std::fill(row, row + a.lo, 0.0);
                    std::fill(row + a.hi + 1, row + n_bins, 0.0);
                }
                if (weighted) {
                    for (int64_t b = a.lo; b <= a.hi; ++b) row[b] = (first ? 0.0 : row[b]) + wrow[b];
                } else if (two) {
                    for (int64_t b = a.lo; b <= a.hi; ++b) {
                        const uint32_t* c = cnt.data() + 2 * b;
                        row[b] = (first ? 0.0 : row[b]) + static_cast<double>(c[0] + c[1]);
                    }
                } else {
                    for (int64_t b = a.lo; b <= a.hi; ++b) row[b] = (first ? 0.0 : row[b]) + static_cast<double>(cnt[b]);
                }
                merged[s].merge(a);
                last = --remaining[s] == 0;
            }
            if (weighted) std::fill(wrow.begin() + a.lo, wrow.begin() + a.hi + 1, 0.0);
            else std::fill(cnt.begin() + a.lo * ways, cnt.begin() + (a.hi + 1) * ways, 0u);
            if (last) {
                dvh_finish_row(row, cum + s * (n_bins + 1), n_bins, merged[s].lo, merged[s].hi, scale, !weighted);
                stats[s] = merged[s].st;
            }
        }
    }
}

}  // namespace airtp
