// Device discovery shared by every kernel family.
#include <cuda_runtime.h>

#include "cuda_api.h"

namespace airtp {

int cuda_device_count() {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError();  // clear the sticky "no driver" error
        return 0;
    }
    return n;
}

}  // namespace airtp
