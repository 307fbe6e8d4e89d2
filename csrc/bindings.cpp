// pybind11 module airtp._core: argument checking and array plumbing only.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <array>
#include <stdexcept>

#include <omp.h>

#include "dvh.h"
#include "edt.h"
#include "gamma.h"  // gamma: also <cmath>, <optional>
#include <cmath>
#include <optional>
// dose engine
#include <functional>
#include <memory>
#include "pencilbeam.h"
#include "spmv.h"
// end dose engine
#ifdef AIRTP_WITH_CUDA
#include "cuda_api.h"
#endif

namespace py = pybind11;
using airtp::Dims;

namespace {

using Mask = py::array_t<uint8_t, py::array::c_style | py::array::forcecast>;

Dims dims_of(const py::array& a) {
    if (a.ndim() != 3) throw std::invalid_argument("expected a 3D (z, y, x) array");
    return {a.shape(0), a.shape(1), a.shape(2)};
}

std::array<double, 3> spacing_of(const std::array<double, 3>& s) {
    for (double v : s)
        if (!(v > 0)) throw std::invalid_argument("spacing must be positive");
    return s;
}

py::array_t<double> edt_sq(const Mask& mask, const std::array<double, 3>& spacing, bool use_cuda) {
    const Dims d = dims_of(mask);
    const auto sp = spacing_of(spacing);
    py::array_t<double> out({d.nz, d.ny, d.nx});
    {
        py::gil_scoped_release release;
#ifdef AIRTP_WITH_CUDA
        if (use_cuda) airtp::edt_sq_cuda(mask.data(), d, sp.data(), out.mutable_data());
        else
#endif
            airtp::edt_sq(mask.data(), d, sp.data(), out.mutable_data());
    }
    (void)use_cuda;
    return out;
}

py::array_t<uint8_t> margin(const Mask& mask, const std::array<double, 3>& spacing, double mm, bool use_cuda) {
    const Dims d = dims_of(mask);
    const auto sp = spacing_of(spacing);
    py::array_t<uint8_t> out({d.nz, d.ny, d.nx});
    {
        py::gil_scoped_release release;
#ifdef AIRTP_WITH_CUDA
        if (use_cuda) airtp::margin_cuda(mask.data(), d, sp.data(), mm, out.mutable_data());
        else
#endif
            airtp::margin(mask.data(), d, sp.data(), mm, out.mutable_data());
    }
    (void)use_cuda;
    return out;
}

py::array_t<uint8_t> asymmetric_expand(const Mask& mask, const std::array<double, 3>& spacing,
                                       const std::array<double, 6>& radii) {
    const Dims d = dims_of(mask);
    const auto sp = spacing_of(spacing);
    for (double r : radii)
        if (!(r >= 0)) throw std::invalid_argument("asymmetric radii must be >= 0");
    py::array_t<uint8_t> out({d.nz, d.ny, d.nx});
    {
        py::gil_scoped_release release;
        airtp::asymmetric_expand(mask.data(), d, sp.data(), radii.data(), out.mutable_data());
    }
    return out;
}

// ---- dvh ------------------------------------------------------------------

using Dose = py::array_t<float, py::array::c_style | py::array::forcecast>;

py::array_t<double> stats_array(const std::vector<airtp::DvhStats>& st) {
    const py::ssize_t ns = static_cast<py::ssize_t>(st.size());
    py::array_t<double> out({ns, py::ssize_t(5)});
    auto o = out.mutable_unchecked<2>();
    for (py::ssize_t s = 0; s < ns; ++s) {
        o(s, 0) = st[s].volume;
        o(s, 1) = st[s].dose_sum;
        o(s, 2) = st[s].min;
        o(s, 3) = st[s].max;
        o(s, 4) = static_cast<double>(st[s].voxels);
    }
    return out;
}

// members: list of C-contiguous (z, y, x) arrays of `shape`, dtype bool/uint8
// (masks) or float32 (weights in [0, 1]); read once, not kept.
std::unique_ptr<airtp::DvhIndex> make_dvh_index(const py::list& members, const std::array<int64_t, 3>& shape,
                                                int64_t item_voxels) {
    if (item_voxels < 1) throw std::invalid_argument("item_voxels must be >= 1");
    for (int64_t v : shape)
        if (v < 0) throw std::invalid_argument("shape must be non-negative");
    const Dims d{shape[0], shape[1], shape[2]};
    std::vector<py::array> keep;
    std::vector<airtp::DvhStructure> structures;
    for (py::ssize_t i = 0; i < static_cast<py::ssize_t>(members.size()); ++i) {
        py::array a = py::reinterpret_borrow<py::array>(members[i]);
        if (a.ndim() != 3 || a.shape(0) != d.nz || a.shape(1) != d.ny || a.shape(2) != d.nx)
            throw std::invalid_argument("structure " + std::to_string(i) + ": shape does not match the grid");
        if (!(a.flags() & py::array::c_style))
            throw std::invalid_argument("structure " + std::to_string(i) + ": array must be C-contiguous");
        const char kind = a.dtype().kind();
        airtp::DvhStructure st;
        if ((kind == 'b' || kind == 'u') && a.itemsize() == 1) st.mask = static_cast<const uint8_t*>(a.data());
        else if (kind == 'f' && a.itemsize() == 4) st.weight = static_cast<const float*>(a.data());
        else throw std::invalid_argument("structure " + std::to_string(i) + ": dtype must be bool, uint8 or float32");
        structures.push_back(st);
        keep.push_back(a);
    }
    py::gil_scoped_release release;
    return std::make_unique<airtp::DvhIndex>(structures, d, item_voxels);
}

py::tuple dose_scan(const Dose& dose) {
    airtp::DoseScan r;
    {
        py::gil_scoped_release release;
        r = airtp::dose_scan(dose.data(), dose.size());
    }
    return py::make_tuple(r.nonfinite, r.min, r.max);
}

// (diff (n, n_bins) scaled, cum (n, n_bins + 1) scaled, stats (n, 5) unscaled)
py::tuple dvh_index_histograms(const airtp::DvhIndex& ix, const Dose& dose, double bin_width, int64_t n_bins,
                               double scale, bool use_cuda) {
    const Dims& d = ix.dims;
    if (dose.ndim() != 3 || dose.shape(0) != d.nz || dose.shape(1) != d.ny || dose.shape(2) != d.nx)
        throw std::invalid_argument("dose shape does not match the prepared structures");
    if (!(bin_width > 0)) throw std::invalid_argument("bin_width must be positive");
    if (n_bins < 1 || n_bins > (int64_t(1) << 30)) throw std::invalid_argument("n_bins must be in [1, 2^30]");
    const py::ssize_t ns = static_cast<py::ssize_t>(ix.n_structures()), nb = static_cast<py::ssize_t>(n_bins);
    py::array_t<double> diff({ns, nb}), cum({ns, nb + 1});
    std::vector<airtp::DvhStats> st(ns);
    {
        py::gil_scoped_release release;
#ifdef AIRTP_WITH_CUDA
        if (use_cuda)
            airtp::dvh_histograms_cuda(dose.data(), ix, bin_width, n_bins, scale, diff.mutable_data(),
                                       cum.mutable_data(), st.data());
        else
#endif
            airtp::dvh_histograms(dose.data(), ix, bin_width, n_bins, scale, diff.mutable_data(), cum.mutable_data(),
                                  st.data());
    }
    (void)use_cuda;
    return py::make_tuple(diff, cum, stats_array(st));
}

template <class T>
py::array_t<T> to_array(const T* p, int64_t n) {
    py::array_t<T> out(static_cast<py::ssize_t>(n));
    if (n > 0) std::copy(p, p + n, out.mutable_data());
    return out;
}

void def_dvh(py::module_& m) {
    py::class_<airtp::DvhIndex>(m, "DvhIndex",
                                "Structures encoded once as runs along x (weights kept) for many DVH evaluations.")
        .def(py::init(&make_dvh_index), py::arg("members"), py::arg("shape"),
             py::arg("item_voxels") = airtp::kDvhItemVoxels)
        .def_property_readonly("shape", [](const airtp::DvhIndex& ix) {
            return py::make_tuple(ix.dims.nz, ix.dims.ny, ix.dims.nx);
        })
        .def_property_readonly("n_structures", &airtp::DvhIndex::n_structures)
        .def_property_readonly("n_runs", &airtp::DvhIndex::n_runs)
        .def_property_readonly("n_items", &airtp::DvhIndex::n_items)
        .def_property_readonly("nbytes", &airtp::DvhIndex::nbytes)
        .def_property_readonly("voxels", [](const airtp::DvhIndex& ix) {
            return to_array(ix.voxels.data(), static_cast<int64_t>(ix.voxels.size()));
        })
        .def("runs", [](const airtp::DvhIndex& ix, int64_t s) {
                if (s < 0 || s >= ix.n_structures()) throw py::index_error("structure index out of range");
                const int64_t r0 = ix.offsets[s], n = ix.offsets[s + 1] - r0;
                return py::make_tuple(to_array(ix.starts.data() + r0, n), to_array(ix.lengths.data() + r0, n));
            }, py::arg("s"), "(flat starts, lengths) of the runs of structure s, in flat order.")
        .def("histograms", &dvh_index_histograms, py::arg("dose"), py::arg("bin_width"), py::arg("n_bins"),
             py::arg("scale") = 1.0, py::arg("use_cuda") = false,
             "(diff (n, n_bins) * scale, cumulative (n, n_bins + 1) * scale, stats (n, 5: volume, dose_sum, min, "
             "max, voxels)); the dose must be finite and >= 0 (see dose_scan).");
    m.def("dose_scan", &dose_scan, py::arg("dose"),
          "(count of NaN/inf values, exact min, exact max) of a float32 array in one parallel pass; min/max are 0 "
          "when the count is not 0.");
}

// ---- end dvh --------------------------------------------------------------

// ---- dose engine (raytrace, pencilbeam, spmv) -------------------------------

using PbI64 = py::array_t<int64_t, py::array::c_style | py::array::forcecast>;
using F32 = py::array_t<float, py::array::c_style | py::array::forcecast>;
using F64 = py::array_t<double, py::array::c_style | py::array::forcecast>;
using I32 = py::array_t<int32_t, py::array::c_style | py::array::forcecast>;

airtp::VoxelGrid voxel_grid(const std::array<int64_t, 3>& shape, const std::array<double, 3>& origin,
                            const std::array<double, 3>& spacing) {
    airtp::VoxelGrid g;
    g.d = {shape[0], shape[1], shape[2]};
    for (int k = 0; k < 3; ++k) {
        if (shape[k] < 1) throw std::invalid_argument("grid shape must be positive");
        g.origin[k] = origin[k];
        g.spacing[k] = spacing_of(spacing)[k];
    }
    return g;
}

// Arrays of one pencil-beam problem, kept alive while the native code runs.
struct Problem {
    F32 rho, amp, sigma;
    PbI64 voxels;
    I32 column_map;
    std::vector<airtp::BeamGeometry> beams;
    airtp::InfluenceProblem P;
};

// problem: dict with density (z, y, x float32), ct_origin, ct_spacing,
// dose_shape, dose_origin, dose_spacing, voxels (int64 sorted flat dose-grid
// indices), beams (nb, 20 float64: source[3], u[3], v[3], w[3], sad, x0, y0,
// sx, sy, nx, ny, map_offset), column_map (int32), ncols, amp and sigma
// ((n_depth, n_comp) float32), depth_step, cutoff_mm.
std::unique_ptr<Problem> make_problem(const py::dict& d) {
    auto pr = std::make_unique<Problem>();
    pr->rho = d["density"].cast<F32>();
    const Dims cd = dims_of(pr->rho);
    airtp::InfluenceProblem& P = pr->P;
    P.rho = pr->rho.data();
    P.ct = voxel_grid({cd.nz, cd.ny, cd.nx}, d["ct_origin"].cast<std::array<double, 3>>(),
                      d["ct_spacing"].cast<std::array<double, 3>>());
    P.dose = voxel_grid(d["dose_shape"].cast<std::array<int64_t, 3>>(), d["dose_origin"].cast<std::array<double, 3>>(),
                        d["dose_spacing"].cast<std::array<double, 3>>());
    pr->voxels = d["voxels"].cast<PbI64>();
    P.voxels = pr->voxels.data();
    P.nvox = pr->voxels.size();
    const int64_t ndose = P.dose.d.size();
    for (int64_t i = 0; i < P.nvox; ++i)
        if (P.voxels[i] < 0 || P.voxels[i] >= ndose || (i && P.voxels[i] <= P.voxels[i - 1]))
            throw std::invalid_argument("voxels must be increasing flat indices into the dose grid");
    if (P.nvox >= (int64_t(1) << 31)) throw std::invalid_argument("too many voxels for int32 rows");
    pr->column_map = d["column_map"].cast<I32>();
    P.column_map = pr->column_map.data();
    P.ncols = d["ncols"].cast<int64_t>();
    const F64 beams = d["beams"].cast<F64>();
    if (beams.ndim() != 2 || beams.shape(1) != 20) throw std::invalid_argument("beams must be (n, 20)");
    auto B = beams.unchecked<2>();
    for (py::ssize_t b = 0; b < beams.shape(0); ++b) {
        airtp::BeamGeometry g;
        for (int k = 0; k < 3; ++k) {
            g.source[k] = B(b, k);
            g.u[k] = B(b, 3 + k);
            g.v[k] = B(b, 6 + k);
            g.w[k] = B(b, 9 + k);
        }
        g.sad = B(b, 12);
        g.x0 = B(b, 13);
        g.y0 = B(b, 14);
        g.sx = B(b, 15);
        g.sy = B(b, 16);
        g.nx = int32_t(B(b, 17));
        g.ny = int32_t(B(b, 18));
        g.map_offset = int64_t(B(b, 19));
        if (!(g.sad > 0 && g.sx > 0 && g.sy > 0) || g.nx < 1 || g.ny < 1 || g.map_offset < 0 ||
            g.map_offset + int64_t(g.nx) * g.ny > pr->column_map.size())
            throw std::invalid_argument("beam " + std::to_string(b) + ": bad geometry or beamlet grid");
        for (int64_t k = 0; k < int64_t(g.nx) * g.ny; ++k) {
            const int32_t c = P.column_map[g.map_offset + k];
            if (c < -1 || c >= P.ncols) throw std::invalid_argument("column map entry out of range");
        }
        pr->beams.push_back(g);
    }
    P.beams = pr->beams.data();
    P.nbeams = int32_t(pr->beams.size());
    pr->amp = d["amp"].cast<F32>();
    pr->sigma = d["sigma"].cast<F32>();
    if (pr->amp.ndim() != 2 || pr->sigma.ndim() != 2 || pr->amp.shape(0) != pr->sigma.shape(0) ||
        pr->amp.shape(1) != pr->sigma.shape(1) || pr->amp.shape(1) < 1 || pr->amp.shape(1) > airtp::kMaxComponents ||
        pr->amp.shape(0) < 2)
        throw std::invalid_argument("amp and sigma must be equal (n_depth >= 2, 1..4 components) arrays");
    for (py::ssize_t k = 0; k < pr->sigma.size(); ++k)
        if (!(pr->sigma.data()[k] > 0)) throw std::invalid_argument("kernel sigmas must be positive");
    P.kernel.n_depth = int32_t(pr->amp.shape(0));
    P.kernel.n_comp = int32_t(pr->amp.shape(1));
    P.kernel.amp = pr->amp.data();
    P.kernel.sigma = pr->sigma.data();
    P.kernel.depth_step = d["depth_step"].cast<double>();
    P.kernel.cutoff_mm = d["cutoff_mm"].cast<double>();
    if (!(P.kernel.depth_step > 0) || !(P.kernel.cutoff_mm > 0))
        throw std::invalid_argument("depth_step and cutoff_mm must be positive");
    return pr;
}

py::array_t<float> pencil_depths(const py::dict& problem, bool use_cuda) {
    auto pr = make_problem(problem);
    py::array_t<float> out({py::ssize_t(pr->P.nbeams), py::ssize_t(pr->P.nvox)});
    {
        py::gil_scoped_release release;
#ifdef AIRTP_WITH_CUDA
        if (use_cuda) airtp::beam_depths_cuda(pr->P, out.mutable_data());
        else
#endif
            airtp::beam_depths(pr->P, out.mutable_data());
    }
    (void)use_cuda;
    return out;
}

// (colptr int64, rows int32, vals float32) of the CSC dose-influence matrix.
py::tuple pencil_influence(const py::dict& problem, bool use_cuda) {
    auto pr = make_problem(problem);
    const airtp::InfluenceProblem& P = pr->P;
    py::array_t<int64_t> colptr(P.ncols + 1);
    py::array_t<int32_t> rows;
    py::array_t<float> vals;
#ifdef AIRTP_WITH_CUDA
    if (use_cuda) {
        int64_t nnz = 0;
        py::gil_scoped_release release;
        airtp::influence_cuda(P, colptr.mutable_data(), [&](int64_t n, int32_t** r, float** v) {
            py::gil_scoped_acquire acquire;
            nnz = n;
            rows = py::array_t<int32_t>(n);
            vals = py::array_t<float>(n);
            *r = rows.mutable_data();
            *v = vals.mutable_data();
        });
        (void)nnz;
    } else
#endif
    {
        airtp::CscPlan plan;
        {
            py::gil_scoped_release release;
            plan = airtp::influence_count(P);
        }
        const int64_t nnz = plan.colptr[P.ncols];
        rows = py::array_t<int32_t>(nnz);
        vals = py::array_t<float>(nnz);
        std::copy(plan.colptr.begin(), plan.colptr.end(), colptr.mutable_data());
        {
            int32_t* r = rows.mutable_data();
            float* v = vals.mutable_data();
            py::gil_scoped_release release;
            airtp::influence_fill(P, plan, r, v);
        }
    }
    (void)use_cuda;
    return py::make_tuple(colptr, rows, vals);
}

py::array_t<float> pencil_fluence_dose(const py::dict& problem, const F32& weights, bool use_cuda) {
    auto pr = make_problem(problem);
    const airtp::InfluenceProblem& P = pr->P;
    if (weights.ndim() != 1 || weights.size() != P.ncols) throw std::invalid_argument("weights must have ncols entries");
    py::array_t<float> out(P.nvox);
    {
        py::gil_scoped_release release;
#ifdef AIRTP_WITH_CUDA
        if (use_cuda) airtp::fluence_dose_cuda(P, weights.data(), out.mutable_data());
        else
#endif
        {
            std::vector<float> depth(size_t(P.nbeams) * P.nvox);
            airtp::beam_depths(P, depth.data());
            airtp::fluence_dose(P, depth.data(), weights.data(), out.mutable_data());
        }
    }
    (void)use_cuda;
    return out;
}

py::array_t<double> radiological_path(const F32& density, const std::array<double, 3>& origin,
                                      const std::array<double, 3>& spacing, const std::array<double, 3>& source,
                                      const F64& points) {
    const Dims d = dims_of(density);
    const airtp::VoxelGrid g = voxel_grid({d.nz, d.ny, d.nx}, origin, spacing);
    if (points.ndim() != 2 || points.shape(1) != 3) throw std::invalid_argument("points must be (n, 3)");
    py::array_t<double> out(points.shape(0));
    {
        py::gil_scoped_release release;
        airtp::radiological_path(density.data(), g, source.data(), points.data(), points.shape(0), out.mutable_data());
    }
    return out;
}

airtp::CscView csc_view(const PbI64& colptr, const I32& rows, const F32& vals, int64_t nrows) {
    if (colptr.ndim() != 1 || colptr.size() < 1) throw std::invalid_argument("colptr must be 1D, length ncols + 1");
    const int64_t nc = colptr.size() - 1;
    const int64_t* cp = colptr.data();
    if (cp[0] != 0 || cp[nc] != rows.size() || rows.size() != vals.size())
        throw std::invalid_argument("colptr, rows and vals do not agree");
    return {nrows, nc, cp, rows.data(), vals.data()};
}

py::array_t<float> csc_matvec(const PbI64& colptr, const I32& rows, const F32& vals, int64_t nrows, const F32& x,
                              bool use_cuda) {
    const airtp::CscView D = csc_view(colptr, rows, vals, nrows);
    if (x.size() != D.ncols) throw std::invalid_argument("x must have ncols entries");
    py::array_t<float> y(nrows);
    {
        py::gil_scoped_release release;
#ifdef AIRTP_WITH_CUDA
        if (use_cuda) airtp::csc_matvec_cuda(D, x.data(), y.mutable_data());
        else
#endif
            airtp::csc_matvec(D, x.data(), y.mutable_data());
    }
    (void)use_cuda;
    return y;
}

py::array_t<float> csc_rmatvec(const PbI64& colptr, const I32& rows, const F32& vals, int64_t nrows, const F32& g,
                               bool use_cuda) {
    const airtp::CscView D = csc_view(colptr, rows, vals, nrows);
    if (g.size() != nrows) throw std::invalid_argument("g must have nrows entries");
    py::array_t<float> out(D.ncols);
    {
        py::gil_scoped_release release;
#ifdef AIRTP_WITH_CUDA
        if (use_cuda) airtp::csc_rmatvec_cuda(D, g.data(), out.mutable_data());
        else
#endif
            airtp::csc_rmatvec(D, g.data(), out.mutable_data());
    }
    (void)use_cuda;
    return out;
}

// Core and tail of a CSC matrix split by value (see spmv.h): six arrays.
py::tuple csc_split(const PbI64& colptr, const I32& rows, const F32& vals, int64_t nrows, float rel) {
    const airtp::CscView D = csc_view(colptr, rows, vals, nrows);
    py::array_t<int64_t> core_ptr(D.ncols + 1), tail_ptr(D.ncols + 1);
    std::vector<int64_t> count(D.ncols);
    {
        py::gil_scoped_release release;
        airtp::csc_split_count(D, rel, count.data());
    }
    int64_t* cp = core_ptr.mutable_data();
    int64_t* tp = tail_ptr.mutable_data();
    cp[0] = tp[0] = 0;
    for (int64_t c = 0; c < D.ncols; ++c) {
        cp[c + 1] = cp[c] + count[c];
        tp[c + 1] = tp[c] + (D.colptr[c + 1] - D.colptr[c] - count[c]);
    }
    py::array_t<int32_t> core_rows(cp[D.ncols]), tail_rows(tp[D.ncols]);
    py::array_t<float> core_vals(cp[D.ncols]), tail_vals(tp[D.ncols]);
    {
        py::gil_scoped_release release;
        airtp::csc_split_fill(D, rel, cp, core_rows.mutable_data(), core_vals.mutable_data(), tp,
                              tail_rows.mutable_data(), tail_vals.mutable_data());
    }
    return py::make_tuple(core_ptr, core_rows, core_vals, tail_ptr, tail_rows, tail_vals);
}

// ---- end dose engine --------------------------------------------------------

// ---- gamma --------------------------------------------------------------------

using GammaArray = py::array_t<float, py::array::c_style | py::array::forcecast>;

void gamma_check(double dd, double dta_mm, double max_gamma, double step_mm) {
    if (!(dd > 0) || !std::isfinite(dd)) throw std::invalid_argument("dose criterion must be positive");
    if (!(dta_mm > 0) || !std::isfinite(dta_mm)) throw std::invalid_argument("distance criterion must be positive");
    if (!(max_gamma > 0) || !std::isfinite(max_gamma)) throw std::invalid_argument("max_gamma must be positive");
    if (!(step_mm > 0) || !std::isfinite(step_mm)) throw std::invalid_argument("search step must be positive");
    if (max_gamma * dta_mm / step_mm > 100) throw std::invalid_argument("search radius / step exceeds 100");
}

// (r2 (n,), k (n, 3) int32, w (n, 3)) of the search table (gamma.h).
py::tuple gamma_table(const std::array<int64_t, 3>& shape, const std::array<double, 3>& spacing, double dta_mm,
                      double max_gamma, double step_mm) {
    gamma_check(1.0, dta_mm, max_gamma, step_mm);
    const auto sp = spacing_of(spacing);
    const airtp::GammaTable t =
        airtp::gamma_table({shape[0], shape[1], shape[2]}, sp.data(), dta_mm, max_gamma * dta_mm, step_mm);
    const py::ssize_t n = static_cast<py::ssize_t>(t.size());
    py::array_t<float> r2(n), w({n, py::ssize_t(3)});
    py::array_t<int32_t> k({n, py::ssize_t(3)});
    std::copy(t.r2.begin(), t.r2.end(), r2.mutable_data());
    std::copy(t.k.begin(), t.k.end(), k.mutable_data());
    std::copy(t.w.begin(), t.w.end(), w.mutable_data());
    return py::make_tuple(r2, k, w);
}

py::array_t<float> gamma_index(const GammaArray& ref, const GammaArray& ev, const std::array<double, 3>& spacing,
                               double dd, double dta_mm, double threshold, double max_gamma, double step_mm,
                               std::optional<Mask> mask, bool use_cuda) {
    const Dims d = dims_of(ref);
    if (ev.ndim() != 3 || ev.shape(0) != d.nz || ev.shape(1) != d.ny || ev.shape(2) != d.nx)
        throw std::invalid_argument("evaluated dose shape does not match the reference");
    if (mask && (mask->ndim() != 3 || mask->shape(0) != d.nz || mask->shape(1) != d.ny || mask->shape(2) != d.nx))
        throw std::invalid_argument("mask shape does not match the reference");
    gamma_check(dd, dta_mm, max_gamma, step_mm);
    const auto sp = spacing_of(spacing);
    py::array_t<float> out({d.nz, d.ny, d.nx});
    {
        py::gil_scoped_release release;
        const airtp::GammaTable t = airtp::gamma_table(d, sp.data(), dta_mm, max_gamma * dta_mm, step_mm);
        airtp::GammaParams p;
        p.inv_dd2 = static_cast<float>(1.0 / (dd * dd));
        p.threshold = static_cast<float>(threshold);
        p.max_gamma2 = static_cast<float>(max_gamma * max_gamma);
        const uint8_t* m = mask ? mask->data() : nullptr;
#ifdef AIRTP_WITH_CUDA
        if (use_cuda) airtp::gamma_index_cuda(ref.data(), ev.data(), m, d, t, p, out.mutable_data());
        else
#endif
            airtp::gamma_index(ref.data(), ev.data(), m, d, t, p, out.mutable_data());
    }
    (void)use_cuda;
    return out;
}

// ---- end gamma ----------------------------------------------------------------

int cuda_device_count() {
#ifdef AIRTP_WITH_CUDA
    return airtp::cuda_device_count();
#else
    return 0;
#endif
}

}  // namespace

PYBIND11_MODULE(_core, m) {
    m.doc() = "AIRTP native core (C++17/OpenMP, optional CUDA)";
#ifdef AIRTP_WITH_CUDA
    m.attr("cuda_compiled") = true;
#else
    m.attr("cuda_compiled") = false;
#endif
    m.attr("within_rel_tol") = airtp::kWithinRelTol;
    m.def("cuda_device_count", &cuda_device_count);
    m.def("max_threads", []() { return omp_get_max_threads(); });
    m.def("edt_sq", &edt_sq, py::arg("mask"), py::arg("spacing"), py::arg("use_cuda") = false,
          "Squared distance (mm^2) from each voxel centre to the nearest mask centre.");
    m.def("margin", &margin, py::arg("mask"), py::arg("spacing"), py::arg("mm"), py::arg("use_cuda") = false,
          "Expand (mm > 0) or contract (mm < 0) a mask by a 3D Euclidean margin.");
    m.def("asymmetric_expand", &asymmetric_expand, py::arg("mask"), py::arg("spacing"), py::arg("radii"),
          "Expand by six radii (x-, x+, y-, y+, z-, z+) in mm.");
    // dvh
    def_dvh(m);
    // gamma
    m.def("gamma_index", &gamma_index, py::arg("reference"), py::arg("evaluated"), py::arg("spacing"), py::arg("dd"),
          py::arg("dta_mm"), py::arg("threshold"), py::arg("max_gamma"), py::arg("step_mm"),
          py::arg("mask") = py::none(), py::arg("use_cuda") = false,
          "Global gamma index (float32, NaN where not evaluated, capped at max_gamma); see gamma.h.");
    m.def("gamma_table", &gamma_table, py::arg("shape"), py::arg("spacing"), py::arg("dta_mm"), py::arg("max_gamma"),
          py::arg("step_mm"), "(r2, k, w) of the gamma search table, nearest offsets first.");
    // dose engine
    m.def("pencil_depths", &pencil_depths, py::arg("problem"), py::arg("use_cuda") = false,
          "Radiological depth (mm) of each listed voxel in each beam (nbeams, nvox); NaN out of reach.");
    m.def("pencil_influence", &pencil_influence, py::arg("problem"), py::arg("use_cuda") = false,
          "CSC dose-influence arrays (colptr int64, rows int32, vals float32).");
    m.def("pencil_fluence_dose", &pencil_fluence_dose, py::arg("problem"), py::arg("weights"),
          py::arg("use_cuda") = false, "Dose of beamlet weights at the listed voxels, without the matrix.");
    m.def("radiological_path", &radiological_path, py::arg("density"), py::arg("origin"), py::arg("spacing"),
          py::arg("source"), py::arg("points"), "Siddon radiological path (mm) from source to each point.");
    m.def("csc_split", &csc_split, py::arg("colptr"), py::arg("rows"), py::arg("vals"), py::arg("nrows"),
          py::arg("rel"), "Split a CSC matrix into entries >= rel * column max (core) and the rest (tail).");
    m.def("csc_matvec", &csc_matvec, py::arg("colptr"), py::arg("rows"), py::arg("vals"), py::arg("nrows"),
          py::arg("x"), py::arg("use_cuda") = false, "D x for a float32 CSC matrix.");
    m.def("csc_rmatvec", &csc_rmatvec, py::arg("colptr"), py::arg("rows"), py::arg("vals"), py::arg("nrows"),
          py::arg("g"), py::arg("use_cuda") = false, "D^T g for a float32 CSC matrix.");
}
