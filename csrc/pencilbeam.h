// Pencil-beam dose of rectangular beamlets into a sparse dose-influence
// matrix (CSC: one column per beamlet, one row per listed dose voxel).
//
// Model (all numbers come from Python; no policy here): a beamlet j of size
// sx x sy on the isocentre plane gives a voxel at radiological depth d
//   D = (SAD / z)^2 * sum_i A_i(d) * Fx_i * Fy_i,
//   Fx_i = 1/2 [erf((a - xj + sx/2) / (sqrt2 s_i)) - erf((a - xj - sx/2) / (sqrt2 s_i))]
// where z is the voxel's distance from the source along the beam axis,
// (a, b) its projection on the isocentre plane, s_i = sigma_i(d) * SAD / z the
// Gaussian width of component i projected to that plane, and A_i(d), sigma_i(d)
// tables on a uniform grid of radiological depth. Pairs whose projected
// distance to the beamlet's central ray exceeds cutoff * SAD / z are dropped
// (the cut-off is `cutoff` mm at the voxel's depth).
#pragma once
#include <cstdint>
#include <vector>

#include "raytrace.h"

namespace airtp {

constexpr int kMaxComponents = 4;

struct BeamGeometry {
    double source[3];      // (z, y, x) patient mm
    double u[3], v[3];     // beam's-eye-view x and y axes (unit, patient z, y, x)
    double w[3];           // beam axis, source -> isocentre (unit)
    double sad;            // source-axis distance, mm
    double x0, y0;         // BEV position (mm, isocentre plane) of beamlet (0, 0)'s centre
    double sx, sy;         // beamlet size = pitch, mm at the isocentre plane
    int32_t nx, ny;        // beamlet grid
    int64_t map_offset;    // start of this beam's (ny, nx) column map in the shared map
};

struct PencilKernel {
    int32_t n_comp;        // <= kMaxComponents
    int32_t n_depth;       // samples of the tables
    double depth_step;     // mm of radiological depth between samples (first at 0)
    const float* amp;      // (n_depth, n_comp): broad-beam dose per unit fluence of component i
    const float* sigma;    // (n_depth, n_comp): Gaussian sigma (mm, at depth) of component i
    double cutoff_mm;      // lateral cut-off at the voxel's depth
};

// Where a voxel lies in a beam: projection on the isocentre plane and the
// range of beamlet indices within the cut-off.
struct BeamProjection {
    double a, b;           // BEV mm on the isocentre plane
    double scale;          // z / SAD
    double rc2;            // (cut-off projected to the isocentre plane)^2
    int32_t ixlo, ixhi, iylo, iyhi;  // inclusive; empty when lo > hi
};

AIRTP_HD inline double dot3(const double* p, const double* q) { return p[0] * q[0] + p[1] * q[1] + p[2] * q[2]; }

AIRTP_HD inline bool project_voxel(const BeamGeometry& bm, const double p[3], double cutoff, BeamProjection& o) {
    const double rel[3] = {p[0] - bm.source[0], p[1] - bm.source[1], p[2] - bm.source[2]};
    const double z = dot3(rel, bm.w);
    if (!(z > 1e-6 * bm.sad)) return false;
    o.scale = z / bm.sad;
    o.a = dot3(rel, bm.u) / o.scale;
    o.b = dot3(rel, bm.v) / o.scale;
    const double rc = cutoff / o.scale;
    o.rc2 = rc * rc;
    double lo = ceil((o.a - rc - bm.x0) / bm.sx), hi = floor((o.a + rc - bm.x0) / bm.sx);
    lo = dmax(lo, 0.0);
    hi = dmin(hi, double(bm.nx - 1));
    if (lo > hi) return false;
    o.ixlo = int32_t(lo);
    o.ixhi = int32_t(hi);
    lo = ceil((o.b - rc - bm.y0) / bm.sy);
    hi = floor((o.b + rc - bm.y0) / bm.sy);
    lo = dmax(lo, 0.0);
    hi = dmin(hi, double(bm.ny - 1));
    if (lo > hi) return false;
    o.iylo = int32_t(lo);
    o.iyhi = int32_t(hi);
    return true;
}

AIRTP_HD inline bool within_cutoff(const BeamGeometry& bm, const BeamProjection& o, int32_t ix, int32_t iy) {
    const double dx = o.a - (bm.x0 + ix * bm.sx), dy = o.b - (bm.y0 + iy * bm.sy);
    return dx * dx + dy * dy <= o.rc2;
}

// Amplitudes (times the inverse square) and projected widths at a depth.
AIRTP_HD inline void kernel_at(const PencilKernel& k, double depth, double scale, double amp[kMaxComponents],
                               double inv_sig_iso[kMaxComponents]) {
    double t = depth / k.depth_step;
    if (t < 0) t = 0;
    int64_t i0 = int64_t(floor(t));
    double f = t - double(i0);
    if (i0 >= k.n_depth - 1) {
        i0 = k.n_depth - 1;
        f = 0.0;
    }
    const int64_t i1 = i0 + 1 < k.n_depth ? i0 + 1 : i0;
    const double invsq = 1.0 / (scale * scale);
    for (int c = 0; c < k.n_comp; ++c) {
        const double a = (1.0 - f) * k.amp[i0 * k.n_comp + c] + f * k.amp[i1 * k.n_comp + c];
        const double s = (1.0 - f) * k.sigma[i0 * k.n_comp + c] + f * k.sigma[i1 * k.n_comp + c];
        amp[c] = a * invsq;
        // 1 / (sqrt(2) * sigma projected to the isocentre plane)
        inv_sig_iso[c] = scale / (1.4142135623730951 * s);
    }
}

// 1D beamlet factor: erf difference over [centre - half, centre + half].
AIRTP_HD inline double edge_factor(double offset, double half, double inv) {
    return 0.5 * (erf((offset + half) * inv) - erf((offset - half) * inv));
}

// Voxel centre (z, y, x) mm of flat index v of grid g.
AIRTP_HD inline void voxel_centre(const VoxelGrid& g, int64_t v, double p[3]) {
    const int64_t x = v % g.d.nx, y = (v / g.d.nx) % g.d.ny, z = v / (g.d.nx * g.d.ny);
    p[0] = g.origin[0] + double(z) * g.spacing[0];
    p[1] = g.origin[1] + double(y) * g.spacing[1];
    p[2] = g.origin[2] + double(x) * g.spacing[2];
}

// The shared inputs of every pencil-beam call.
struct InfluenceProblem {
    const float* rho;          // density on ct grid
    VoxelGrid ct;
    VoxelGrid dose;
    const int64_t* voxels;     // sorted flat indices into the dose grid (matrix rows)
    int64_t nvox;
    const BeamGeometry* beams;
    int32_t nbeams;
    const int32_t* column_map; // per beam (ny, nx) column index or -1
    int64_t ncols;
    PencilKernel kernel;
};

// Whether an active beamlet of the beam reaches point p within the cut-off.
AIRTP_HD inline bool reaches_any(const InfluenceProblem& P, const BeamGeometry& bm, const double p[3]) {
    BeamProjection o;
    if (!project_voxel(bm, p, P.kernel.cutoff_mm, o)) return false;
    const int32_t* map = P.column_map + bm.map_offset;
    for (int32_t iy = o.iylo; iy <= o.iyhi; ++iy)
        for (int32_t ix = o.ixlo; ix <= o.ixhi; ++ix)
            if (map[int64_t(iy) * bm.nx + ix] >= 0 && within_cutoff(bm, o, ix, iy)) return true;
    return false;
}

// Radiological depth (mm) of each voxel in each beam, (nbeams, nvox); NaN
// where no active beamlet reaches the voxel within the cut-off.
void beam_depths(const InfluenceProblem& P, float* depth);

// Counting pass (geometry only): column pointers (ncols + 1), the per-chunk
// positions within each column that make the fill pass write every column's
// rows in increasing order, and which (voxel, beam) pairs any active beamlet
// reaches within the cut-off.
struct CscPlan {
    std::vector<int64_t> colptr;        // ncols + 1
    std::vector<int64_t> chunk_begin;   // nchunks + 1 voxel positions
    std::vector<int32_t> offsets;       // (nchunks, ncols) first position within the column
    std::vector<uint8_t> reached;       // (nvox, nbeams)
    int64_t max_chunk_pairs = 0;        // pairs of the largest chunk
};
CscPlan influence_count(const InfluenceProblem& P);

// Filling pass: rows (voxel positions) and float32 values of every pair; the
// radiological depth of each reached (voxel, beam) is traced here, so no
// depth array is held beside the matrix.
void influence_fill(const InfluenceProblem& P, const CscPlan& plan, int32_t* rows, float* vals);

// Dose (nvox) of beamlet weights (ncols) without storing the matrix.
void fluence_dose(const InfluenceProblem& P, const float* depth, const float* weights, float* out);

}  // namespace airtp
