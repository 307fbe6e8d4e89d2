// CUDA version of dvh_histograms (dvh.cpp) over the same prepared runs.
//
// The runs of a DvhIndex (starts, lengths, weight positions, their structure
// and the prefix sum of their lengths) are copied to the device on the first
// call and kept with the index; each call then copies only the dose. Voxels
// of all runs are numbered 0 .. total; a block takes 4096 consecutive ones,
// finds its runs by binary search on the prefix sums, and every thread adds
// its voxels to the structure's histogram row with atomicAdd (global
// memory), keeping the statistics of the current structure in registers and
// flushing them with atomics when the structure changes. Bins use dvh_bin,
// the same double-precision rule as the CPU, so mask counts are identical.
// The host finishes the rows (scale, cumulative) as the CPU path does.
#include <cuda_runtime.h>

#include <cstring>

#include "cuda_check.h"
#include "dvh.h"

namespace airtp {
namespace {

constexpr int kThreads = 256;
constexpr int kPerThread = 16;
constexpr unsigned long long kPosInfBits = 0x7ff0000000000000ULL;

struct DvhDevice {
    int64_t n_runs, total;
    DeviceBuffer<int64_t> starts, wpos, vpos;
    DeviceBuffer<int32_t> lengths, run_s;
    DeviceBuffer<float> weights;
    DvhDevice(int64_t nr, int64_t nw)
        : n_runs(nr), total(0), starts(nr), wpos(nr), vpos(nr + 1), lengths(nr), run_s(nr), weights(nw) {}
};

// Last r in [lo, hi] with vpos[r] <= g (vpos[lo] <= g assumed).
__device__ inline int64_t run_of(const int64_t* vpos, int64_t lo, int64_t hi, int64_t g) {
    while (lo < hi) {
        const int64_t mid = lo + (hi - lo + 1) / 2;
        if (vpos[mid] <= g) lo = mid;
        else hi = mid - 1;
    }
    return lo;
}

struct Local {
    double vol = 0.0, dsum = 0.0;
    unsigned long long cnt = 0ULL, mn = kPosInfBits, mx = 0ULL;
};

// sums per structure: volume, dose_sum; counts: voxels; minmax: bits of min, max
__device__ inline void flush(int s, Local& l, double* sums, unsigned long long* counts, unsigned long long* minmax) {
    if (s < 0 || l.cnt == 0ULL) return;
    atomicAdd(sums + 2 * s, l.vol);
    atomicAdd(sums + 2 * s + 1, l.dsum);
    atomicAdd(counts + s, l.cnt);
    atomicMin(minmax + 2 * s, l.mn);
    atomicMax(minmax + 2 * s + 1, l.mx);
    l = Local{};
}

__global__ void dvh_runs_kernel(const float* dose, const int64_t* starts, const int32_t* run_s, const int64_t* wpos,
                                const float* weights, const int64_t* vpos, int64_t n_runs, int64_t total,
                                double width, double inv_width, int64_t n_bins, double* hist, double* sums,
                                unsigned long long* counts, unsigned long long* minmax) {
    const int64_t g0 = int64_t(blockIdx.x) * kThreads * kPerThread;
    if (g0 >= total) return;
    const int64_t g1 = min(total, g0 + int64_t(kThreads) * kPerThread);
    __shared__ int64_t r_lo, r_hi;
    if (threadIdx.x == 0) {
        r_lo = run_of(vpos, 0, n_runs - 1, g0);
        r_hi = run_of(vpos, r_lo, n_runs - 1, g1 - 1);
    }
    __syncthreads();
    Local l;
    int cur = -1;
    for (int k = 0; k < kPerThread; ++k) {
        const int64_t g = g0 + int64_t(k) * kThreads + threadIdx.x;
        if (g >= g1) break;
        const int64_t r = run_of(vpos, r_lo, r_hi, g);
        const int s = run_s[r];
        const int64_t off = g - vpos[r];
        const double v = static_cast<double>(dose[starts[r] + off]) + 0.0;  // -0.0 -> +0.0
        const double w = wpos[r] < 0 ? 1.0 : static_cast<double>(weights[wpos[r] + off]);
        if (s != cur) {
            flush(cur, l, sums, counts, minmax);
            cur = s;
        }
        atomicAdd(hist + int64_t(s) * n_bins + dvh_bin(v, width, inv_width, n_bins), w);
        l.vol += w;
        l.dsum += w * v;
        ++l.cnt;
        unsigned long long bits;
        memcpy(&bits, &v, sizeof(bits));
        l.mn = bits < l.mn ? bits : l.mn;
        l.mx = bits > l.mx ? bits : l.mx;
    }
    flush(cur, l, sums, counts, minmax);
}

// The device copy of the runs, made once per index.
DvhDevice& device_runs(const DvhIndex& ix) {
    std::lock_guard<std::mutex> lock(ix.device_mutex);
    if (!ix.device) {
        const int64_t nr = ix.n_runs(), ns = ix.n_structures();
        auto dev = std::make_shared<DvhDevice>(nr, static_cast<int64_t>(ix.weights.size()));
        std::vector<int32_t> run_s(nr);
        std::vector<int64_t> vpos(nr + 1, 0);
        for (int64_t s = 0; s < ns; ++s)
            for (int64_t r = ix.offsets[s]; r < ix.offsets[s + 1]; ++r) run_s[r] = static_cast<int32_t>(s);
        for (int64_t r = 0; r < nr; ++r) vpos[r + 1] = vpos[r] + ix.lengths[r];
        dev->total = vpos[nr];
        if (nr > 0) {
            AIRTP_CUDA_CHECK(cudaMemcpy(dev->starts.ptr, ix.starts.data(), nr * sizeof(int64_t), cudaMemcpyHostToDevice));
            AIRTP_CUDA_CHECK(cudaMemcpy(dev->wpos.ptr, ix.wpos.data(), nr * sizeof(int64_t), cudaMemcpyHostToDevice));
            AIRTP_CUDA_CHECK(cudaMemcpy(dev->lengths.ptr, ix.lengths.data(), nr * sizeof(int32_t), cudaMemcpyHostToDevice));
            AIRTP_CUDA_CHECK(cudaMemcpy(dev->run_s.ptr, run_s.data(), nr * sizeof(int32_t), cudaMemcpyHostToDevice));
        }
        AIRTP_CUDA_CHECK(cudaMemcpy(dev->vpos.ptr, vpos.data(), (nr + 1) * sizeof(int64_t), cudaMemcpyHostToDevice));
        if (!ix.weights.empty())
            AIRTP_CUDA_CHECK(cudaMemcpy(dev->weights.ptr, ix.weights.data(), ix.weights.size() * sizeof(float),
                                        cudaMemcpyHostToDevice));
        ix.device = dev;
    }
    return *static_cast<DvhDevice*>(ix.device.get());
}

}  // namespace

void dvh_histograms_cuda(const float* dose, const DvhIndex& ix, double bin_width, int64_t n_bins, double scale,
                         double* diff, double* cum, DvhStats* stats) {
    const int64_t ns = ix.n_structures(), n = ix.dims.size();
    DvhDevice& dev = device_runs(ix);
    const int64_t nsafe = ns > 0 ? ns : 1;
    DeviceBuffer<double> dhist(ns * n_bins > 0 ? ns * n_bins : 1);
    DeviceBuffer<double> dsums(2 * nsafe);
    DeviceBuffer<unsigned long long> dcounts(nsafe), dminmax(2 * nsafe);
    AIRTP_CUDA_CHECK(cudaMemset(dhist.ptr, 0, ns * n_bins * sizeof(double)));
    AIRTP_CUDA_CHECK(cudaMemset(dsums.ptr, 0, 2 * nsafe * sizeof(double)));
    AIRTP_CUDA_CHECK(cudaMemset(dcounts.ptr, 0, nsafe * sizeof(unsigned long long)));
    std::vector<unsigned long long> minmax(2 * nsafe);
    for (int64_t s = 0; s < nsafe; ++s) {
        minmax[2 * s] = kPosInfBits;
        minmax[2 * s + 1] = 0ULL;
    }
    AIRTP_CUDA_CHECK(cudaMemcpy(dminmax.ptr, minmax.data(), 2 * nsafe * sizeof(unsigned long long),
                                cudaMemcpyHostToDevice));
    if (dev.total > 0) {
        DeviceBuffer<float> ddose(n > 0 ? n : 1);
        AIRTP_CUDA_CHECK(cudaMemcpy(ddose.ptr, dose, n * sizeof(float), cudaMemcpyHostToDevice));
        const int64_t per_block = int64_t(kThreads) * kPerThread;
        const int64_t blocks = (dev.total + per_block - 1) / per_block;
        dvh_runs_kernel<<<static_cast<unsigned>(blocks), kThreads>>>(
            ddose.ptr, dev.starts.ptr, dev.run_s.ptr, dev.wpos.ptr, dev.weights.ptr, dev.vpos.ptr, dev.n_runs,
            dev.total, bin_width, 1.0 / bin_width, n_bins, dhist.ptr, dsums.ptr, dcounts.ptr, dminmax.ptr);
        AIRTP_CUDA_CHECK(cudaGetLastError());
        AIRTP_CUDA_CHECK(cudaDeviceSynchronize());
    }
    std::vector<double> sums(2 * nsafe);
    std::vector<unsigned long long> counts(nsafe);
    AIRTP_CUDA_CHECK(cudaMemcpy(diff, dhist.ptr, ns * n_bins * sizeof(double), cudaMemcpyDeviceToHost));
    AIRTP_CUDA_CHECK(cudaMemcpy(sums.data(), dsums.ptr, 2 * nsafe * sizeof(double), cudaMemcpyDeviceToHost));
    AIRTP_CUDA_CHECK(cudaMemcpy(counts.data(), dcounts.ptr, nsafe * sizeof(unsigned long long), cudaMemcpyDeviceToHost));
    AIRTP_CUDA_CHECK(cudaMemcpy(minmax.data(), dminmax.ptr, 2 * nsafe * sizeof(unsigned long long),
                                cudaMemcpyDeviceToHost));
    for (int64_t s = 0; s < ns; ++s) {
        DvhStats st;
        st.voxels = static_cast<int64_t>(counts[s]);
        if (st.voxels > 0) {
            st.volume = sums[2 * s];
            st.dose_sum = sums[2 * s + 1];
            std::memcpy(&st.min, &minmax[2 * s], sizeof(double));
            std::memcpy(&st.max, &minmax[2 * s + 1], sizeof(double));
        }
        stats[s] = st;
    }
    dvh_finish_rows(diff, cum, stats, ix, bin_width, n_bins, scale);
}

}  // namespace airtp
