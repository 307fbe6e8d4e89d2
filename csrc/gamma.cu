// CUDA version of gamma_index (gamma.cpp) with the same offset table and the
// same per-voxel search (gamma_voxel in gamma.h).
//
// One thread per reference voxel, in flat order, so the threads of a warp are
// neighbours along x: they read neighbouring evaluated doses and walk the
// offset table in step (every offset is one broadcast read) until their
// searches end. Voxels below the threshold or outside the mask return at once.
#include <cuda_runtime.h>

#include <cmath>

#include "cuda_check.h"
#include "gamma.h"

namespace airtp {
namespace {

constexpr int kThreads = 128;

__global__ void gamma_kernel(const float* __restrict__ ref, const float* __restrict__ ev,
                             const uint8_t* __restrict__ mask, Dims d, const float* __restrict__ r2,
                             const int32_t* __restrict__ k, const float* __restrict__ w, int64_t n, GammaParams p,
                             float* __restrict__ out) {
    const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i >= d.nz * d.ny * d.nx) return;  // Dims::size is host-only
    const float r = ref[i];
    if (!(r >= p.threshold) || (mask && !mask[i])) {
        out[i] = __int_as_float(0x7fc00000);  // quiet NaN
        return;
    }
    const int64_t ix = i % d.nx, row = i / d.nx;
    const int64_t iy = row % d.ny, iz = row / d.ny;
    out[i] = __fsqrt_rn(gamma_voxel(ev, d, iz, iy, ix, r, r2, k, w, n, p));
}

template <class T>
void upload(DeviceBuffer<T>& dst, const T* src, size_t n) {
    if (n > 0) AIRTP_CUDA_CHECK(cudaMemcpy(dst.ptr, src, n * sizeof(T), cudaMemcpyHostToDevice));
}

}  // namespace

void gamma_index_cuda(const float* ref, const float* ev, const uint8_t* mask, Dims d, const GammaTable& t,
                      const GammaParams& p, float* out) {
    const int64_t nv = d.size(), n = t.size();
    if (nv == 0) return;
    DeviceBuffer<float> dref(nv), dev(nv), dout(nv), dr2(n > 0 ? n : 1), dw(n > 0 ? 3 * n : 1);
    DeviceBuffer<int32_t> dk(n > 0 ? 3 * n : 1);
    DeviceBuffer<uint8_t> dmask(mask ? nv : 1);
    upload(dref, ref, nv);
    upload(dev, ev, nv);
    upload(dr2, t.r2.data(), n);
    upload(dk, t.k.data(), 3 * n);
    upload(dw, t.w.data(), 3 * n);
    if (mask) upload(dmask, mask, nv);
    const int64_t blocks = (nv + kThreads - 1) / kThreads;
    gamma_kernel<<<static_cast<unsigned>(blocks), kThreads>>>(dref.ptr, dev.ptr, mask ? dmask.ptr : nullptr, d,
                                                               dr2.ptr, dk.ptr, dw.ptr, n, p, dout.ptr);
    AIRTP_CUDA_CHECK(cudaGetLastError());
    AIRTP_CUDA_CHECK(cudaDeviceSynchronize());
    AIRTP_CUDA_CHECK(cudaMemcpy(out, dout.ptr, nv * sizeof(float), cudaMemcpyDeviceToHost));
}

}  // namespace airtp
