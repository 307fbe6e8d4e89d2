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

}  // namespace airtp
