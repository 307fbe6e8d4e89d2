// Histograms of dose inside many structures. Work items are (structure, slab
// of z-slices); each thread keeps one scratch histogram row, accumulates an
// item into it, then adds the touched bin range to the shared result under a
// lock and clears it. Mask rows are scanned eight bytes at a time, so empty
// parts of a structure cost one load per eight voxels.
#include "dvh.h"

#include <algorithm>
#include <cstring>
#include <limits>

#include <omp.h>

namespace airtp {
namespace {

// Accumulator of one work item.
struct Item {
    double* row;  // thread scratch, n_bins, zero outside [lo, hi]
    int64_t lo, hi;
    DvhStats st;
    Item(double* r, int64_t n_bins) : row(r), lo(n_bins), hi(-1) {
        st.min = std::numeric_limits<double>::infinity();
        st.max = -std::numeric_limits<double>::infinity();
    }
    inline void add(double v, double w, double width, double inv_width, int64_t n_bins) {
        const int64_t b = dvh_bin(v, width, inv_width, n_bins);
        row[b] += w;
        lo = b < lo ? b : lo;
        hi = b > hi ? b : hi;
        st.volume += w;
        st.dose_sum += w * v;
        st.min = v < st.min ? v : st.min;
        st.max = v > st.max ? v : st.max;
        ++st.voxels;
    }
};

void merge(Item& it, double* hist_row, DvhStats& total) {
    if (it.hi < 0) return;
#pragma omp critical(airtp_dvh_merge)
    {
        for (int64_t b = it.lo; b <= it.hi; ++b) hist_row[b] += it.row[b];
        if (total.voxels == 0) {
            total.min = it.st.min;
            total.max = it.st.max;
        } else {
            total.min = std::min(total.min, it.st.min);
            total.max = std::max(total.max, it.st.max);
        }
        total.volume += it.st.volume;
        total.dose_sum += it.st.dose_sum;
        total.voxels += it.st.voxels;
    }
    std::fill(it.row + it.lo, it.row + it.hi + 1, 0.0);
}

inline bool word_empty(const uint8_t* p) {
    uint64_t w;
    std::memcpy(&w, p, 8);
    return w == 0;
}

inline bool word_empty(const float* p) {
    // weights are >= 0: eight zeros read as two zero 128-bit halves
    uint64_t w[4];
    std::memcpy(w, p, 32);
    return (w[0] | w[1] | w[2] | w[3]) == 0;
}

inline double weight_of(const uint8_t* p, int64_t i) { return p[i] ? 1.0 : 0.0; }
inline double weight_of(const float* p, int64_t i) { return p[i] > 0.0f ? static_cast<double>(p[i]) : 0.0; }

template <class T>
void scan_rows(const T* m, const float* dose, int64_t begin, int64_t end, double width, double inv_width,
               int64_t n_bins, Item& it) {
    int64_t i = begin;
    for (; i + 8 <= end; i += 8) {
        if (word_empty(m + i)) continue;
        for (int64_t j = i; j < i + 8; ++j) {
            const double w = weight_of(m, j);
            if (w > 0.0) it.add(static_cast<double>(dose[j]), w, width, inv_width, n_bins);
        }
    }
    for (; i < end; ++i) {
        const double w = weight_of(m, i);
        if (w > 0.0) it.add(static_cast<double>(dose[i]), w, width, inv_width, n_bins);
    }
}

void finish(int64_t n_structures, DvhStats* stats) {
    for (int64_t s = 0; s < n_structures; ++s)
        if (stats[s].voxels == 0) stats[s] = DvhStats{};
}

}  // namespace

void dvh_histograms(const float* dose, Dims d, const std::vector<DvhStructure>& structures, double bin_width,
                    int64_t n_bins, double* hist, DvhStats* stats) {
    const int64_t ns = static_cast<int64_t>(structures.size());
    std::fill(hist, hist + ns * n_bins, 0.0);
    std::fill(stats, stats + ns, DvhStats{});
    const double inv_width = 1.0 / bin_width;
    const int64_t slice = d.ny * d.nx;
    // Slabs small enough to balance the largest structure over all threads.
    const int64_t nthreads = omp_get_max_threads();
    const int64_t slab = std::max<int64_t>(1, d.nz / (8 * nthreads));
    const int64_t nslabs = (d.nz + slab - 1) / slab;
#pragma omp parallel
    {
        std::vector<double> scratch(n_bins, 0.0);
#pragma omp for schedule(dynamic, 1)
        for (int64_t item = 0; item < ns * nslabs; ++item) {
            const int64_t s = item / nslabs, z0 = (item % nslabs) * slab;
            const int64_t begin = z0 * slice, end = std::min(d.nz, z0 + slab) * slice;
            Item it(scratch.data(), n_bins);
            if (structures[s].mask)
                scan_rows(structures[s].mask, dose, begin, end, bin_width, inv_width, n_bins, it);
            else
                scan_rows(structures[s].weight, dose, begin, end, bin_width, inv_width, n_bins, it);
            merge(it, hist + s * n_bins, stats[s]);
        }
    }
    finish(ns, stats);
}

void dvh_histograms_runs(const float* dose, int64_t n_voxels, int64_t n_structures, const int64_t* offsets,
                         const int64_t* starts, const int64_t* lengths, double bin_width, int64_t n_bins,
                         double* hist, DvhStats* stats) {
    (void)n_voxels;
    std::fill(hist, hist + n_structures * n_bins, 0.0);
    std::fill(stats, stats + n_structures, DvhStats{});
    const double inv_width = 1.0 / bin_width;
    // Work items: chunks of about kChunk runs of one structure.
    constexpr int64_t kChunk = 2048;
    std::vector<int64_t> item_s, item_r0;
    for (int64_t s = 0; s < n_structures; ++s)
        for (int64_t r = offsets[s]; r < offsets[s + 1]; r += kChunk) {
            item_s.push_back(s);
            item_r0.push_back(r);
        }
    const int64_t nitems = static_cast<int64_t>(item_s.size());
#pragma omp parallel
    {
        std::vector<double> scratch(n_bins, 0.0);
#pragma omp for schedule(dynamic, 1)
        for (int64_t item = 0; item < nitems; ++item) {
            const int64_t s = item_s[item];
            const int64_t r1 = std::min(offsets[s + 1], item_r0[item] + kChunk);
            Item it(scratch.data(), n_bins);
            for (int64_t r = item_r0[item]; r < r1; ++r) {
                const float* p = dose + starts[r];
                for (int64_t j = 0; j < lengths[r]; ++j)
                    it.add(static_cast<double>(p[j]), 1.0, bin_width, inv_width, n_bins);
            }
            merge(it, hist + s * n_bins, stats[s]);
        }
    }
    finish(n_structures, stats);
}

void mask_runs(const uint8_t* mask, Dims d, std::vector<int64_t>& starts, std::vector<int64_t>& lengths) {
    const int64_t rows = d.nz * d.ny;
    const int nthreads = omp_get_max_threads();
    std::vector<std::vector<int64_t>> ts(nthreads), tl(nthreads);
    // Static contiguous row ranges per thread keep the runs in flat order.
#pragma omp parallel num_threads(nthreads)
    {
        const int t = omp_get_thread_num(), nt = omp_get_num_threads();
        const int64_t r0 = rows * t / nt, r1 = rows * (t + 1) / nt;
        for (int64_t r = r0; r < r1; ++r) {
            const uint8_t* row = mask + r * d.nx;
            int64_t x = 0;
            while (x < d.nx) {
                if (x + 8 <= d.nx && word_empty(row + x)) { x += 8; continue; }
                if (!row[x]) { ++x; continue; }
                const int64_t x0 = x;
                while (x < d.nx && row[x]) ++x;
                ts[t].push_back(r * d.nx + x0);
                tl[t].push_back(x - x0);
            }
        }
    }
    for (int t = 0; t < nthreads; ++t) {
        starts.insert(starts.end(), ts[t].begin(), ts[t].end());
        lengths.insert(lengths.end(), tl[t].begin(), tl[t].end());
    }
}

}  // namespace airtp
