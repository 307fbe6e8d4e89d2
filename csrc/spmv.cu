// CUDA products with a float32 CSC matrix: D^T g one thread per column
// (double sum, same order as the CPU), D x one thread per column with
// atomic double adds into the rows.
//
// Status: compiled with nvcc 13 (CUDA AUTO build); not yet run on a GPU.
// tests/test_dose.py::test_cuda_equals_cpu checks it against the CPU when a
// device is present (tolerance airtp.dose.CPU_GPU_RTOL).
#include <cuda_runtime.h>

#include "cuda_api.h"
#include "cuda_check.h"
#include "spmv.h"

namespace airtp {
namespace {

__global__ void rmatvec_kernel(int64_t ncols, const int64_t* colptr, const int32_t* rows, const float* vals,
                               const float* g, float* out) {
    const int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
    if (c >= ncols) return;
    double s = 0.0;
    for (int64_t k = colptr[c]; k < colptr[c + 1]; ++k) s += double(vals[k]) * double(g[rows[k]]);
    out[c] = float(s);
}

// One warp per column: lanes stride over the column's nonzeros.
__global__ void matvec_kernel(int64_t ncols, const int64_t* colptr, const int32_t* rows, const float* vals,
                              const float* x, double* acc) {
    const int64_t c = (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) / 32;
    const int lane = threadIdx.x % 32;
    if (c >= ncols) return;
    const double xc = x[c];
    if (xc == 0.0) return;
    for (int64_t k = colptr[c] + lane; k < colptr[c + 1]; k += 32) atomicAdd(acc + rows[k], xc * double(vals[k]));
}

__global__ void to_float(const double* a, int64_t n, float* out) {
    const int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
    if (i < n) out[i] = float(a[i]);
}

struct DeviceCsc {
    DeviceBuffer<int64_t> colptr;
    DeviceBuffer<int32_t> rows;
    DeviceBuffer<float> vals;
    explicit DeviceCsc(const CscView& D)
        : colptr(D.ncols + 1), rows(D.colptr[D.ncols]), vals(D.colptr[D.ncols]) {
        const int64_t nnz = D.colptr[D.ncols];
        AIRTP_CUDA_CHECK(cudaMemcpy(colptr.ptr, D.colptr, (D.ncols + 1) * sizeof(int64_t), cudaMemcpyHostToDevice));
        AIRTP_CUDA_CHECK(cudaMemcpy(rows.ptr, D.rows, nnz * sizeof(int32_t), cudaMemcpyHostToDevice));
        AIRTP_CUDA_CHECK(cudaMemcpy(vals.ptr, D.vals, nnz * sizeof(float), cudaMemcpyHostToDevice));
    }
};

}  // namespace

void csc_rmatvec_cuda(const CscView& D, const float* g, float* out) {
    if (D.ncols == 0) return;
    DeviceCsc M(D);
    DeviceBuffer<float> d_g(D.nrows), d_out(D.ncols);
    AIRTP_CUDA_CHECK(cudaMemcpy(d_g.ptr, g, D.nrows * sizeof(float), cudaMemcpyHostToDevice));
    const int threads = 256;
    rmatvec_kernel<<<unsigned((D.ncols + threads - 1) / threads), threads>>>(D.ncols, M.colptr.ptr, M.rows.ptr,
                                                                             M.vals.ptr, d_g.ptr, d_out.ptr);
    AIRTP_CUDA_CHECK(cudaGetLastError());
    AIRTP_CUDA_CHECK(cudaMemcpy(out, d_out.ptr, D.ncols * sizeof(float), cudaMemcpyDeviceToHost));
}

void csc_matvec_cuda(const CscView& D, const float* x, float* y) {
    if (D.nrows == 0) return;
    DeviceCsc M(D);
    DeviceBuffer<float> d_x(D.ncols), d_y(D.nrows);
    DeviceBuffer<double> acc(D.nrows);
    AIRTP_CUDA_CHECK(cudaMemcpy(d_x.ptr, x, D.ncols * sizeof(float), cudaMemcpyHostToDevice));
    AIRTP_CUDA_CHECK(cudaMemset(acc.ptr, 0, D.nrows * sizeof(double)));
    const int threads = 256;
    if (D.ncols > 0)
        matvec_kernel<<<unsigned((D.ncols * 32 + threads - 1) / threads), threads>>>(
            D.ncols, M.colptr.ptr, M.rows.ptr, M.vals.ptr, d_x.ptr, acc.ptr);
    AIRTP_CUDA_CHECK(cudaGetLastError());
    to_float<<<unsigned((D.nrows + threads - 1) / threads), threads>>>(acc.ptr, D.nrows, d_y.ptr);
    AIRTP_CUDA_CHECK(cudaGetLastError());
    AIRTP_CUDA_CHECK(cudaMemcpy(y, d_y.ptr, D.nrows * sizeof(float), cudaMemcpyDeviceToHost));
}

}  // namespace airtp
