// CPU products with a CSC matrix. D^T g is a gather per column (parallel over
// columns). D x scatters into rows: each thread accumulates a block of
// columns into its own double buffer and the buffers are summed in a fixed
// order, so the result does not depend on scheduling.
#include "spmv.h"

#include <algorithm>
#include <vector>

#include <omp.h>

namespace airtp {

void csc_rmatvec(const CscView& D, const float* g, float* out) {
#pragma omp parallel for schedule(dynamic, 16)
    for (int64_t c = 0; c < D.ncols; ++c) {
        double s = 0.0;
        for (int64_t k = D.colptr[c]; k < D.colptr[c + 1]; ++k) s += double(D.vals[k]) * double(g[D.rows[k]]);
        out[c] = float(s);
    }
}

void csc_matvec(const CscView& D, const float* x, float* y) {
    std::vector<int64_t> cut;
    std::vector<std::vector<double>> part;
    int nt = 1;
#pragma omp parallel
    {
#pragma omp single
        {
            // one block of columns per thread, balanced by nonzeros
            nt = omp_get_num_threads();
            cut.assign(nt + 1, D.ncols);
            cut[0] = 0;
            const int64_t nnz = D.colptr[D.ncols];
            int64_t c = 0;
            for (int t = 1; t < nt; ++t) {
                const int64_t target = nnz * t / nt;
                while (c < D.ncols && D.colptr[c] < target) ++c;
                cut[t] = c;
            }
            part.resize(nt);
        }
        const int t = omp_get_thread_num();
        std::vector<double>& acc = part[t];
        acc.assign(D.nrows, 0.0);
        for (int64_t c = cut[t]; c < cut[t + 1]; ++c) {
            const double xc = x[c];
            if (xc == 0.0) continue;
            for (int64_t k = D.colptr[c]; k < D.colptr[c + 1]; ++k) acc[D.rows[k]] += xc * double(D.vals[k]);
        }
#pragma omp barrier
#pragma omp for schedule(static)
        for (int64_t r = 0; r < D.nrows; ++r) {
            double s = 0.0;
            for (int u = 0; u < nt; ++u) s += part[u][r];
            y[r] = float(s);
        }
    }
}

namespace {
float column_limit(const CscView& D, int64_t c, float rel) {
    float mx = 0.0f;
    for (int64_t k = D.colptr[c]; k < D.colptr[c + 1]; ++k) mx = std::max(mx, D.vals[k]);
    return mx * rel;
}
}  // namespace

void csc_split_count(const CscView& D, float rel, int64_t* core_count) {
#pragma omp parallel for schedule(dynamic, 16)
    for (int64_t c = 0; c < D.ncols; ++c) {
        const float lim = column_limit(D, c, rel);
        int64_t n = 0;
        for (int64_t k = D.colptr[c]; k < D.colptr[c + 1]; ++k) n += D.vals[k] >= lim;
        core_count[c] = n;
    }
}

void csc_split_fill(const CscView& D, float rel, const int64_t* core_colptr, int32_t* core_rows, float* core_vals,
                    const int64_t* tail_colptr, int32_t* tail_rows, float* tail_vals) {
#pragma omp parallel for schedule(dynamic, 16)
    for (int64_t c = 0; c < D.ncols; ++c) {
        const float lim = column_limit(D, c, rel);
        int64_t a = core_colptr[c], b = tail_colptr[c];
        for (int64_t k = D.colptr[c]; k < D.colptr[c + 1]; ++k) {
            if (D.vals[k] >= lim) {
                core_rows[a] = D.rows[k];
                core_vals[a++] = D.vals[k];
            } else {
                tail_rows[b] = D.rows[k];
                tail_vals[b++] = D.vals[k];
            }
        }
    }
}

}  // namespace airtp
