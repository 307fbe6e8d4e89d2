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
