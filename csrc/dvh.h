// Dose-volume histograms of many structures from one dose. Dose is float32 Gy,
// (z, y, x) C order; no policy here: bin width and bin count come from Python.
//
// The structures are prepared once (DvhIndex: runs of voxels along x, weights
// kept for partial volumes) and reused for every dose, as in a planning loop
// that evaluates the same structures for many doses.
//
// Binning: bin k holds the doses in [k * width, (k + 1) * width), the edges
// computed as k * width in double precision (so the bins match NumPy's
// np.histogram with those edges); doses at or above the last edge go to the
// last bin. Doses must be finite and >= 0 (dose_scan checks; the histogram
// functions assume it).
#pragma once
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "edt.h"  // Dims

namespace airtp {

// One structure: a 0/1 mask, or float weights in [0, 1] (partial volumes).
// Exactly one of the two is non-null; a voxel belongs when mask != 0 or
// weight > 0, and counts with weight 1 (mask) or its weight.
struct DvhStructure {
    const uint8_t* mask = nullptr;
    const float* weight = nullptr;
};

// Exact per-structure statistics over the voxels that belong to it.
struct DvhStats {
    double volume = 0.0;  // sum of weights (voxel count for masks)
    double dose_sum = 0.0;  // sum of weight * dose
    double min = 0.0, max = 0.0;  // over voxels that belong; 0 when empty
    int64_t voxels = 0;  // number of voxels that belong
};

// Voxels per work item: a structure larger than this is split into items of
// consecutive runs, histogrammed in parallel and merged.
constexpr int64_t kDvhItemVoxels = 65536;

// Structures encoded once: every structure is a list of runs (flat index of
// the first voxel, length) of voxels that belong, along x (a run never
// crosses a row); runs of weighted structures point to their weights.
class DvhIndex {
public:
    DvhIndex(const std::vector<DvhStructure>& structures, Dims d, int64_t item_voxels = kDvhItemVoxels);
    DvhIndex(const DvhIndex&) = delete;
    DvhIndex& operator=(const DvhIndex&) = delete;

    int64_t n_structures() const { return static_cast<int64_t>(offsets.size()) - 1; }
    int64_t n_runs() const { return static_cast<int64_t>(starts.size()); }
    int64_t n_items() const { return static_cast<int64_t>(item_s.size()); }
    int64_t nbytes() const;

    Dims dims;
    std::vector<int64_t> offsets;  // n_structures + 1: runs of structure s are [offsets[s], offsets[s + 1])
    std::vector<int64_t> starts;   // flat index of the first voxel of each run
    std::vector<int32_t> lengths;  // voxels of each run (>= 1)
    std::vector<int64_t> wpos;     // per run: index of its first weight in `weights`, -1 for mask runs
    std::vector<float> weights;    // weights of the voxels of weighted runs, in run order
    std::vector<int64_t> voxels;   // per structure: voxels that belong
    // Work items, largest first: runs [item_r0[i], item_r1[i]) of structure item_s[i].
    std::vector<int64_t> item_r0, item_r1;
    std::vector<int32_t> item_s;
    std::vector<uint8_t> split;  // per structure: 1 when it has more than one item
    int64_t max_item_voxels = 0;

    // A copy of the runs on the GPU, made by the first CUDA call (dvh.cu).
    mutable std::mutex device_mutex;
    mutable std::shared_ptr<void> device;
};

// One parallel pass over the dose: count of NaN/inf values and, when there
// are none, the exact minimum and maximum (-0.0 counts as 0).
struct DoseScan {
    int64_t nonfinite = 0;
    double min = 0.0, max = 0.0;
};
DoseScan dose_scan(const float* dose, int64_t n);

// Histograms and statistics of every structure of `ix` (dose finite, >= 0).
// diff: n_structures x n_bins, the differential histogram times `scale`
// (weight * scale per voxel); cum: n_structures x (n_bins + 1), cum[k] =
// scale * (sum of the unscaled histogram from bin k up; exact for masks),
// cum[n_bins] = 0; stats unscaled. All three are overwritten. Parallel over work items (OpenMP).
void dvh_histograms(const float* dose, const DvhIndex& ix, double bin_width, int64_t n_bins, double scale,
                    double* diff, double* cum, DvhStats* stats);

// The same on the GPU (dvh.cu, built with AIRTP_WITH_CUDA only): the runs are
// copied to the device once per index; counts of masks are identical to the
// CPU ones, weighted sums agree to rounding (atomic adds in any order).
void dvh_histograms_cuda(const float* dose, const DvhIndex& ix, double bin_width, int64_t n_bins, double scale,
                         double* diff, double* cum, DvhStats* stats);

// Finishes the rows of one structure from the raw sums in diff[lo..hi] (zero
// elsewhere): cum[k] = scale * (sum of the raw diff[k..]) and diff *= scale.
// `integer`: the sums are counts (integer-valued), added in any order
// (exact); otherwise from the last bin down. Used by both back ends.
void dvh_finish_row(double* diff, double* cum, int64_t n_bins, int64_t lo, int64_t hi, double scale, bool integer);

// dvh_finish_row for every structure of ix, lo/hi the bins of
// stats[s].min/max (rows of empty structures zeroed); OpenMP over structures.
void dvh_finish_rows(double* diff, double* cum, const DvhStats* stats, const DvhIndex& ix, double bin_width,
                     int64_t n_bins, double scale);

#ifdef __CUDACC__
#define AIRTP_HOST_DEVICE __host__ __device__
#else
#define AIRTP_HOST_DEVICE
#endif

// Bin of a dose value: floor(v / width) corrected against the double edges.
// Shared by the CPU and CUDA kernels, so both bin every dose alike.
AIRTP_HOST_DEVICE inline int64_t dvh_bin(double v, double width, double inv_width, int64_t n_bins) {
    int64_t b = static_cast<int64_t>(v * inv_width);
    if (b < 0) b = 0;
    if (b >= n_bins) return n_bins - 1;
    if (v < static_cast<double>(b) * width) --b;
    else if (v >= static_cast<double>(b + 1) * width) ++b;
    if (b < 0) b = 0;
    if (b >= n_bins) b = n_bins - 1;
    return b;
}

}  // namespace airtp
