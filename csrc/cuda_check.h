// Turn CUDA errors into exceptions naming the call.
#pragma once
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#define AIRTP_CUDA_CHECK(call)                                                        \
    do {                                                                              \
        cudaError_t err_ = (call);                                                    \
        if (err_ != cudaSuccess)                                                      \
            throw std::runtime_error(std::string("CUDA error in ") + #call + ": " +   \
                                     cudaGetErrorString(err_));                       \
    } while (0)

namespace airtp {

// Device buffer freed on scope exit, so that an exception leaks nothing.
template <class T>
struct DeviceBuffer {
    T* ptr = nullptr;
    explicit DeviceBuffer(size_t n) { AIRTP_CUDA_CHECK(cudaMalloc(&ptr, n * sizeof(T) + 1)); }
    ~DeviceBuffer() { cudaFree(ptr); }
    DeviceBuffer(const DeviceBuffer&) = delete;
    DeviceBuffer& operator=(const DeviceBuffer&) = delete;
};

}  // namespace airtp
