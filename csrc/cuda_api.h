// Host entry points of the CUDA kernels (built only with AIRTP_WITH_CUDA).
// Each mirrors a CPU function of the same name without the _cuda suffix and
// gives the same answer; errors are thrown as std::runtime_error.
#pragma once
#include <cstdint>

#include "edt.h"

namespace airtp {

// Number of usable CUDA devices; 0 when there is no driver or no device.
int cuda_device_count();

void edt_sq_cuda(const uint8_t* mask, Dims d, const double spacing[3], double* out);
void margin_cuda(const uint8_t* mask, Dims d, const double spacing[3], double mm, uint8_t* out);

}  // namespace airtp

// ---- dvh (dvh.cu) ----
// dvh_histograms_cuda is declared in dvh.h, next to its CPU twin.
#include "dvh.h"

// ---- dose engine (raytrace.cu, pencilbeam.cu, spmv.cu) ----
#include <functional>

#include "pencilbeam.h"
#include "spmv.h"

namespace airtp {

// Same as radiological_path (raytrace.h); double precision, same tracer.
void radiological_path_cuda(const float* rho, const VoxelGrid& g, const double source[3], const double* points,
                            int64_t n, double* out);

// Same as beam_depths (pencilbeam.h); P holds host pointers.
void beam_depths_cuda(const InfluenceProblem& P, float* depth);

// The CSC matrix of influence_count + influence_fill: colptr (ncols + 1) is
// written to host memory; alloc(nnz, &rows, &vals) is called once to get the
// host arrays for the rows and values. Rows are sorted within every column.
// Values agree with the CPU ones to float32 rounding plus the CPU's
// tabulated erf (|error| < 3e-8); see airtp.dose.engine.CPU_GPU_RTOL.
void influence_cuda(const InfluenceProblem& P, int64_t* colptr,
                    const std::function<void(int64_t, int32_t**, float**)>& alloc);

// Same as fluence_dose (depths computed on the device).
void fluence_dose_cuda(const InfluenceProblem& P, const float* weights, float* out);

// Same as csc_matvec / csc_rmatvec; sums in double, D x with atomics (order
// of additions differs from the CPU: agreement to float32 rounding).
void csc_matvec_cuda(const CscView& D, const float* x, float* y);
void csc_rmatvec_cuda(const CscView& D, const float* g, float* out);

}  // namespace airtp
