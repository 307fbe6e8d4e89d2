// CUDA Siddon radiological path: one thread per point, the same inline tracer
// as the CPU (raytrace.h).
//
// Status: compiled with nvcc 13 (CUDA AUTO build); not yet run on a GPU.
// tests/test_dose.py::test_cuda_equals_cpu checks it against the CPU when a
// device is present (tolerance airtp.dose.CPU_GPU_RTOL).
#include <cuda_runtime.h>

#include "cuda_api.h"
#include "cuda_check.h"
#include "raytrace.h"

namespace airtp {
namespace {

__global__ void path_kernel(const float* rho, VoxelGrid g, double s0, double s1, double s2, const double* points,
                            int64_t n, double* out) {
    const int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
    if (i >= n) return;
    const double src[3] = {s0, s1, s2};
    out[i] = siddon_path(rho, g, src, points + 3 * i);
}

}  // namespace

void radiological_path_cuda(const float* rho, const VoxelGrid& g, const double source[3], const double* points,
                            int64_t n, double* out) {
    if (n == 0) return;
    const int64_t nv = g.d.size();
    DeviceBuffer<float> d_rho(nv);
    DeviceBuffer<double> d_pts(3 * n), d_out(n);
    AIRTP_CUDA_CHECK(cudaMemcpy(d_rho.ptr, rho, nv * sizeof(float), cudaMemcpyHostToDevice));
    AIRTP_CUDA_CHECK(cudaMemcpy(d_pts.ptr, points, 3 * n * sizeof(double), cudaMemcpyHostToDevice));
    const int threads = 256;
    path_kernel<<<unsigned((n + threads - 1) / threads), threads>>>(d_rho.ptr, g, source[0], source[1], source[2],
                                                                    d_pts.ptr, n, d_out.ptr);
    AIRTP_CUDA_CHECK(cudaGetLastError());
    AIRTP_CUDA_CHECK(cudaMemcpy(out, d_out.ptr, n * sizeof(double), cudaMemcpyDeviceToHost));
}

}  // namespace airtp
