// Siddon radiological path lengths from one source to many points, in parallel.
#include "raytrace.h"

#include <omp.h>

namespace airtp {

void radiological_path(const float* rho, const VoxelGrid& g, const double source[3], const double* points,
                       int64_t n, double* out) {
#pragma omp parallel for schedule(dynamic, 256)
    for (int64_t i = 0; i < n; ++i) out[i] = siddon_path(rho, g, source, points + 3 * i);
}

}  // namespace airtp
