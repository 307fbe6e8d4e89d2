// CUDA version of edt.cpp: one thread per line and pass, same algorithm
// (binary sweep along x, then Felzenszwalb-Huttenlocher along y and z), so
// results are identical to the CPU ones, bit for bit in double precision.
#include <cuda_runtime.h>

#include <cmath>

#include "cuda_api.h"
#include "cuda_check.h"

namespace airtp {
namespace {

__global__ void pass_x_binary(const uint8_t* mask, int64_t rows, int64_t nx, double wx,
                              bool features_are_zero, double* W) {
    const int64_t r = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
    if (r >= rows) return;
    const uint8_t* row = mask + r * nx;
    double* o = W + r * nx;
    int64_t last = -1;
    for (int64_t x = 0; x < nx; ++x) {
        const bool feat = features_are_zero ? row[x] == 0 : row[x] != 0;
        if (feat) last = x;
        o[x] = last < 0 ? INFINITY : double(x - last);
    }
    last = -1;
    for (int64_t x = nx - 1; x >= 0; --x) {
        const bool feat = features_are_zero ? row[x] == 0 : row[x] != 0;
        if (feat) last = x;
        if (last >= 0) o[x] = fmin(o[x], double(last - x));
    }
    for (int64_t x = 0; x < nx; ++x) o[x] = isinf(o[x]) ? INFINITY : (wx * o[x]) * (wx * o[x]);
}

// Lines along an axis of length n with element stride `stride`; line l starts
// at (l / inner) * outer_stride + (l % inner). Scratch is [n][lines] so that
// neighbouring threads touch neighbouring addresses.
__global__ void pass_envelope(double* W, int64_t lines, int64_t inner, int64_t outer_stride,
                              int64_t n, int64_t stride, double w, double* f, int64_t* v,
                              double* zb) {
    const int64_t l = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
    if (l >= lines) return;
    const int64_t base = (l / inner) * outer_stride + (l % inner);
#define AT(arr, j) arr[(j) * lines + l]
    for (int64_t j = 0; j < n; ++j) AT(f, j) = W[base + j * stride];
    int64_t k = -1;
    for (int64_t q = 0; q < n; ++q) {
        const double fq = AT(f, q);
        if (isinf(fq)) continue;
        const double xq = w * double(q);
        const double hq = fq + xq * xq;
        double s = -INFINITY;
        while (k >= 0) {
            const int64_t vk = AT(v, k);
            const double xv = w * double(vk);
            s = (hq - (AT(f, vk) + xv * xv)) / (2.0 * (xq - xv));
            if (s <= AT(zb, k)) --k;
            else break;
        }
        ++k;
        AT(v, k) = q;
        AT(zb, k) = (k == 0) ? -INFINITY : s;
    }
    if (k < 0) {
        for (int64_t p = 0; p < n; ++p) W[base + p * stride] = INFINITY;
        return;
    }
    AT(zb, k + 1) = INFINITY;
    int64_t j = 0;
    for (int64_t p = 0; p < n; ++p) {
        const double xp = w * double(p);
        while (AT(zb, j + 1) < xp) ++j;
        const int64_t vj = AT(v, j);
        const double dx = xp - w * double(vj);
        W[base + p * stride] = AT(f, vj) + dx * dx;
    }
#undef AT
}

__global__ void threshold(const double* W, const uint8_t* mask, int64_t size, double lim,
                          bool contract, uint8_t* out) {
    const int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
    if (i >= size) return;
    const bool in = W[i] <= lim * (1.0 + kWithinRelTol);
    out[i] = contract ? (mask[i] && !in) : in;
}

int blocks(int64_t n, int t) { return int((n + t - 1) / t); }

// Squared distance on the device to the features (mask != 0, or == 0).
void edt_device(const uint8_t* dmask, Dims d, const double sp[3], bool features_are_zero, double* dW) {
    const int t = 128;
    pass_x_binary<<<blocks(d.nz * d.ny, t), t>>>(dmask, d.nz * d.ny, d.nx, sp[2], features_are_zero, dW);
    AIRTP_CUDA_CHECK(cudaGetLastError());
    const int64_t nmax = d.ny > d.nz ? d.ny : d.nz;
    const int64_t lines_max = d.nz * d.nx > d.ny * d.nx ? d.nz * d.nx : d.ny * d.nx;
    DeviceBuffer<double> f((nmax + 1) * lines_max), zb((nmax + 1) * lines_max);
    DeviceBuffer<int64_t> v((nmax + 1) * lines_max);
    if (d.ny > 1) {  // y lines: l = z * nx + x
        const int64_t lines = d.nz * d.nx;
        pass_envelope<<<blocks(lines, t), t>>>(dW, lines, d.nx, d.ny * d.nx, d.ny, d.nx, sp[1], f.ptr, v.ptr, zb.ptr);
        AIRTP_CUDA_CHECK(cudaGetLastError());
    }
    if (d.nz > 1) {  // z lines: l = y * nx + x
        const int64_t lines = d.ny * d.nx;
        pass_envelope<<<blocks(lines, t), t>>>(dW, lines, lines, 0, d.nz, d.ny * d.nx, sp[0], f.ptr, v.ptr, zb.ptr);
        AIRTP_CUDA_CHECK(cudaGetLastError());
    }
    AIRTP_CUDA_CHECK(cudaDeviceSynchronize());
}

}  // namespace

void edt_sq_cuda(const uint8_t* mask, Dims d, const double spacing[3], double* out) {
    const int64_t n = d.size();
    DeviceBuffer<uint8_t> dmask(n);
    DeviceBuffer<double> dW(n);
    AIRTP_CUDA_CHECK(cudaMemcpy(dmask.ptr, mask, n, cudaMemcpyHostToDevice));
    edt_device(dmask.ptr, d, spacing, false, dW.ptr);
    AIRTP_CUDA_CHECK(cudaMemcpy(out, dW.ptr, n * sizeof(double), cudaMemcpyDeviceToHost));
}

void margin_cuda(const uint8_t* mask, Dims d, const double spacing[3], double mm, uint8_t* out) {
    const int64_t n = d.size();
    DeviceBuffer<uint8_t> dmask(n), dout(n);
    DeviceBuffer<double> dW(n);
    AIRTP_CUDA_CHECK(cudaMemcpy(dmask.ptr, mask, n, cudaMemcpyHostToDevice));
    const bool contract = mm < 0;
    edt_device(dmask.ptr, d, spacing, contract, dW.ptr);
    const int t = 256;
    threshold<<<blocks(n, t), t>>>(dW.ptr, dmask.ptr, n, mm * mm, contract, dout.ptr);
    AIRTP_CUDA_CHECK(cudaGetLastError());
    AIRTP_CUDA_CHECK(cudaMemcpy(out, dout.ptr, n, cudaMemcpyDeviceToHost));
}

}  // namespace airtp
