// Products of a float32 CSC matrix (columns = beamlets) with vectors:
// D x (dose of beamlet weights) and D^T g (gradient back to the weights).
// Accumulation is in double; results are float32.
#pragma once
#include <cstdint>

namespace airtp {

// Row indices are int32 (positions in the voxel list); colptr is int64.
struct CscView {
    int64_t nrows, ncols;
    const int64_t* colptr;  // ncols + 1
    const int32_t* rows;
    const float* vals;
};

// y (nrows) = D x (ncols).
void csc_matvec(const CscView& D, const float* x, float* y);
// g_out (ncols) = D^T g (nrows).
void csc_rmatvec(const CscView& D, const float* g, float* out);

// Split by value: entries below rel * (their column's maximum) form the tail.
// Pass 1 counts the core entries of each column (core_count, ncols);
// pass 2 fills both parts (colptrs ncols + 1, computed by the caller from the
// counts), keeping each column's order.
void csc_split_count(const CscView& D, float rel, int64_t* core_count);
void csc_split_fill(const CscView& D, float rel, const int64_t* core_colptr, int32_t* core_rows, float* core_vals,
                    const int64_t* tail_colptr, int32_t* tail_rows, float* tail_vals);

}  // namespace airtp
