// pybind11 module airtp._core: argument checking and array plumbing only.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <array>
#include <stdexcept>

#include <omp.h>

#include "edt.h"
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
}
