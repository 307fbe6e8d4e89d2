// CUDA pencil-beam dose-influence. Same model and geometry as pencilbeam.cpp
// (shared inline functions of pencilbeam.h / raytrace.h): one thread per
// voxel and beam for the radiological depths, one thread per voxel for the
// pairs, written first row by row (CSR, columns ascending within a row) and
// then stably sorted by column, so that every column's rows come out in
// increasing order as on the CPU.
//
// Status: compiled with nvcc 13 (CUDA AUTO build); not yet run on a GPU.
// tests/test_dose.py::test_cuda_equals_cpu checks it against the CPU when a
// device is present (tolerance airtp.dose.CPU_GPU_RTOL).
#include <cuda_runtime.h>
#include <thrust/binary_search.h>
#include <thrust/device_ptr.h>
#include <thrust/execution_policy.h>
#include <thrust/iterator/counting_iterator.h>
#include <thrust/iterator/zip_iterator.h>
#include <thrust/scan.h>
#include <thrust/sort.h>

#include <cmath>

#include "cuda_api.h"
#include "cuda_check.h"
#include "pencilbeam.h"

namespace airtp {
namespace {

// Device copies of a problem's arrays; the struct itself is passed by value.
struct DeviceProblem {
    DeviceBuffer<float> rho, amp, sigma;
    DeviceBuffer<int64_t> voxels;
    DeviceBuffer<int32_t> column_map;
    DeviceBuffer<BeamGeometry> beams;
    InfluenceProblem P;
    int64_t map_size;

    static int64_t map_len(const InfluenceProblem& h) {
        int64_t m = 0;
        for (int32_t b = 0; b < h.nbeams; ++b) {
            const int64_t e = h.beams[b].map_offset + int64_t(h.beams[b].nx) * h.beams[b].ny;
            m = e > m ? e : m;
        }
        return m;
    }
    explicit DeviceProblem(const InfluenceProblem& h)
        : rho(h.ct.d.size()),
          amp(size_t(h.kernel.n_depth) * h.kernel.n_comp),
          sigma(size_t(h.kernel.n_depth) * h.kernel.n_comp),
          voxels(h.nvox),
          column_map(map_len(h)),
          beams(h.nbeams),
          P(h),
          map_size(map_len(h)) {
        const size_t nk = size_t(h.kernel.n_depth) * h.kernel.n_comp;
        AIRTP_CUDA_CHECK(cudaMemcpy(rho.ptr, h.rho, h.ct.d.size() * sizeof(float), cudaMemcpyHostToDevice));
        AIRTP_CUDA_CHECK(cudaMemcpy(amp.ptr, h.kernel.amp, nk * sizeof(float), cudaMemcpyHostToDevice));
        AIRTP_CUDA_CHECK(cudaMemcpy(sigma.ptr, h.kernel.sigma, nk * sizeof(float), cudaMemcpyHostToDevice));
        AIRTP_CUDA_CHECK(cudaMemcpy(voxels.ptr, h.voxels, h.nvox * sizeof(int64_t), cudaMemcpyHostToDevice));
        AIRTP_CUDA_CHECK(cudaMemcpy(column_map.ptr, h.column_map, map_size * sizeof(int32_t), cudaMemcpyHostToDevice));
        AIRTP_CUDA_CHECK(cudaMemcpy(beams.ptr, h.beams, h.nbeams * sizeof(BeamGeometry), cudaMemcpyHostToDevice));
        P.rho = rho.ptr;
        P.kernel.amp = amp.ptr;
        P.kernel.sigma = sigma.ptr;
        P.voxels = voxels.ptr;
        P.column_map = column_map.ptr;
        P.beams = beams.ptr;
    }
};

__global__ void depths_kernel(InfluenceProblem P, float* depth) {
    const int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
    if (t >= P.nvox * P.nbeams) return;
    const int32_t b = int32_t(t / P.nvox);
    const int64_t i = t % P.nvox;
    double p[3];
    voxel_centre(P.dose, P.voxels[i], p);
    const BeamGeometry bm = P.beams[b];
    depth[t] = reaches_any(P, bm, p) ? float(siddon_path(P.rho, P.ct, bm.source, p)) : nanf("");
}

// mode 0: count pairs of voxel i into count[i]; mode 1: write them at
// rowstart[i] (cols, rows, vals); mode 2: dose of weights into out[i].
template <int Mode>
__global__ void pairs_kernel(InfluenceProblem P, const float* depth, int64_t* count, const int64_t* rowstart,
                             int32_t* cols, int32_t* rows, float* vals, const float* weights, float* out) {
    const int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
    if (i >= P.nvox) return;
    double p[3];
    voxel_centre(P.dose, P.voxels[i], p);
    int64_t n = 0, k = Mode == 1 ? rowstart[i] : 0;
    double sum = 0.0;
    for (int32_t b = 0; b < P.nbeams; ++b) {
        const float d = depth[int64_t(b) * P.nvox + i];
        if (isnan(d)) continue;
        const BeamGeometry& bm = P.beams[b];
        BeamProjection o;
        if (!project_voxel(bm, p, P.kernel.cutoff_mm, o)) continue;
        double amp[kMaxComponents], inv[kMaxComponents];
        if (Mode != 0) kernel_at(P.kernel, d, o.scale, amp, inv);
        const int32_t* map = P.column_map + bm.map_offset;
        const double hx = 0.5 * bm.sx, hy = 0.5 * bm.sy;
        for (int32_t iy = o.iylo; iy <= o.iyhi; ++iy) {
            const double dy = o.b - (bm.y0 + iy * bm.sy);
            for (int32_t ix = o.ixlo; ix <= o.ixhi; ++ix) {
                const int32_t col = map[int64_t(iy) * bm.nx + ix];
                if (col < 0 || !within_cutoff(bm, o, ix, iy)) continue;
                if (Mode == 0) {
                    ++n;
                    continue;
                }
                const double dx = o.a - (bm.x0 + ix * bm.sx);
                double val = 0.0;
                for (int c = 0; c < P.kernel.n_comp; ++c)
                    val += amp[c] * edge_factor(dy, hy, inv[c]) * edge_factor(dx, hx, inv[c]);
                if (Mode == 1) {
                    cols[k] = col;
                    rows[k] = int32_t(i);
                    vals[k] = float(val);
                    ++k;
                } else {
                    sum += double(weights[col]) * double(float(val));
                }
            }
        }
    }
    if (Mode == 0) count[i] = n;
    if (Mode == 2) out[i] = float(sum);
}

unsigned blocks(int64_t n, int threads) { return unsigned((n + threads - 1) / threads); }

void device_depths(const DeviceProblem& D, float* d_depth) {
    const int64_t n = D.P.nvox * D.P.nbeams;
    if (n == 0) return;
    depths_kernel<<<blocks(n, 128), 128>>>(D.P, d_depth);
    AIRTP_CUDA_CHECK(cudaGetLastError());
}

}  // namespace

void beam_depths_cuda(const InfluenceProblem& P, float* depth) {
    DeviceProblem D(P);
    const int64_t n = P.nvox * P.nbeams;
    DeviceBuffer<float> d_depth(n);
    device_depths(D, d_depth.ptr);
    AIRTP_CUDA_CHECK(cudaMemcpy(depth, d_depth.ptr, n * sizeof(float), cudaMemcpyDeviceToHost));
}

void influence_cuda(const InfluenceProblem& P, int64_t* colptr,
                    const std::function<void(int64_t, int32_t**, float**)>& alloc) {
    DeviceProblem D(P);
    const int64_t nvox = P.nvox;
    DeviceBuffer<float> d_depth(nvox * P.nbeams);
    device_depths(D, d_depth.ptr);
    DeviceBuffer<int64_t> start(nvox + 1);
    AIRTP_CUDA_CHECK(cudaMemset(start.ptr, 0, (nvox + 1) * sizeof(int64_t)));
    const int threads = 128;
    if (nvox > 0) {
        pairs_kernel<0><<<blocks(nvox, threads), threads>>>(D.P, d_depth.ptr, start.ptr, nullptr, nullptr, nullptr,
                                                            nullptr, nullptr, nullptr);
        AIRTP_CUDA_CHECK(cudaGetLastError());
    }
    thrust::device_ptr<int64_t> sp(start.ptr);
    thrust::exclusive_scan(thrust::device, sp, sp + nvox + 1, sp);
    int64_t nnz = 0;
    AIRTP_CUDA_CHECK(cudaMemcpy(&nnz, start.ptr + nvox, sizeof(int64_t), cudaMemcpyDeviceToHost));
    DeviceBuffer<int32_t> cols(nnz), rows(nnz);
    DeviceBuffer<float> vals(nnz);
    if (nvox > 0) {
        pairs_kernel<1><<<blocks(nvox, threads), threads>>>(D.P, d_depth.ptr, nullptr, start.ptr, cols.ptr, rows.ptr,
                                                            vals.ptr, nullptr, nullptr);
        AIRTP_CUDA_CHECK(cudaGetLastError());
    }
    thrust::device_ptr<int32_t> cp(cols.ptr), rp(rows.ptr);
    thrust::device_ptr<float> vp(vals.ptr);
    thrust::stable_sort_by_key(thrust::device, cp, cp + nnz, thrust::make_zip_iterator(thrust::make_tuple(rp, vp)));
    DeviceBuffer<int64_t> d_colptr(P.ncols + 1);
    thrust::device_ptr<int64_t> pp(d_colptr.ptr);
    thrust::lower_bound(thrust::device, cp, cp + nnz, thrust::counting_iterator<int32_t>(0),
                        thrust::counting_iterator<int32_t>(int32_t(P.ncols + 1)), pp);
    AIRTP_CUDA_CHECK(cudaDeviceSynchronize());
    AIRTP_CUDA_CHECK(cudaMemcpy(colptr, d_colptr.ptr, (P.ncols + 1) * sizeof(int64_t), cudaMemcpyDeviceToHost));
    int32_t* h_rows = nullptr;
    float* h_vals = nullptr;
    alloc(nnz, &h_rows, &h_vals);
    AIRTP_CUDA_CHECK(cudaMemcpy(h_rows, rows.ptr, nnz * sizeof(int32_t), cudaMemcpyDeviceToHost));
    AIRTP_CUDA_CHECK(cudaMemcpy(h_vals, vals.ptr, nnz * sizeof(float), cudaMemcpyDeviceToHost));
}

void fluence_dose_cuda(const InfluenceProblem& P, const float* weights, float* out) {
    DeviceProblem D(P);
    const int64_t nvox = P.nvox;
    if (nvox == 0) return;
    DeviceBuffer<float> d_depth(nvox * P.nbeams), d_w(P.ncols), d_out(nvox);
    device_depths(D, d_depth.ptr);
    AIRTP_CUDA_CHECK(cudaMemcpy(d_w.ptr, weights, P.ncols * sizeof(float), cudaMemcpyHostToDevice));
    const int threads = 128;
    pairs_kernel<2><<<blocks(nvox, threads), threads>>>(D.P, d_depth.ptr, nullptr, nullptr, nullptr, nullptr, nullptr,
                                                        d_w.ptr, d_out.ptr);
    AIRTP_CUDA_CHECK(cudaGetLastError());
    AIRTP_CUDA_CHECK(cudaMemcpy(out, d_out.ptr, nvox * sizeof(float), cudaMemcpyDeviceToHost));
}

}  // namespace airtp
