// Dose-volume histograms of many structures in one call. Dose is float32 Gy,
// (z, y, x) C order; no policy here: bin width and bin count come from Python.
//
// Binning: bin k holds the doses in [k * width, (k + 1) * width), the edges
// computed as k * width in double precision (so the bins match NumPy's
// np.histogram with those edges); doses at or above the last edge go to the
// last bin. Doses are expected finite and >= 0 (checked in Python).
#pragma once
#include <cstdint>
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

// hist: n_structures x n_bins, overwritten; stats: n_structures, overwritten.
// Parallel over (structure, slab of z-slices) with OpenMP; each work item
// reads only its structure's mask rows, skipping eight empty voxels at once.
void dvh_histograms(const float* dose, Dims d, const std::vector<DvhStructure>& structures,
                    double bin_width, int64_t n_bins, double* hist, DvhStats* stats);

// The same from run-length encoded masks: runs of structure s are
// starts[offsets[s] .. offsets[s+1]) with lengths `lengths` (flat voxel
// indices); every voxel of a run counts with weight 1.
void dvh_histograms_runs(const float* dose, int64_t n_voxels, int64_t n_structures,
                         const int64_t* offsets, const int64_t* starts, const int64_t* lengths,
                         double bin_width, int64_t n_bins, double* hist, DvhStats* stats);

// Run-length encode a 0/1 mask along the flat index: appends (start, length)
// of every run of nonzero voxels. Runs never cross a row (x line) boundary.
void mask_runs(const uint8_t* mask, Dims d, std::vector<int64_t>& starts, std::vector<int64_t>& lengths);

// Bin of a dose value: floor(v / width) corrected against the double edges.
inline int64_t dvh_bin(double v, double width, double inv_width, int64_t n_bins) {
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
