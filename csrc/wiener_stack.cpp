#include "wiener_stack.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "checks.h"

namespace deblur_ops {
namespace {

std::vector<int64_t> range_dims(int64_t first, int64_t count) {
  std::vector<int64_t> dims(count);
  for (int64_t d = 0; d < count; ++d) dims[d] = first + d;
  return dims;
}

// The PSF centre (k//2 along each dim) goes to the origin, so a centred PSF causes no shift.
at::Tensor otf_of(const at::Tensor& psf, at::IntArrayRef spatial) {
  std::vector<int64_t> shape{psf.size(0)};
  shape.insert(shape.end(), spatial.begin(), spatial.end());
  at::Tensor padded = at::zeros(shape, psf.options());
  at::Tensor corner = padded;
  std::vector<int64_t> shifts, dims;
  for (int64_t d = 0; d < static_cast<int64_t>(spatial.size()); ++d) {
    corner = corner.narrow(d + 1, 0, psf.size(d + 1));
    shifts.push_back(-(psf.size(d + 1) / 2));
    dims.push_back(d + 1);
  }
  corner.copy_(psf);
  return at::fft_rfftn(at::roll(padded, shifts, dims), c10::nullopt, dims);
}

// |R|^2 of the discrete Laplacian (2*ndim+1 point stencil) on the rfft grid:
// R(w) = sum_d (2 cos w_d - 2), so |R|^2 = (sum_d (2 - 2 cos w_d))^2.
at::Tensor laplacian_power(at::IntArrayRef spatial, const at::TensorOptions& real_options) {
  const int64_t nd = static_cast<int64_t>(spatial.size());
  at::Tensor acc;
  for (int64_t d = 0; d < nd; ++d) {
    const int64_t n = spatial[d];
    const int64_t m = d == nd - 1 ? n / 2 + 1 : n;
    at::Tensor w = at::arange(m, real_options.dtype(at::kDouble)) * (2.0 * M_PI / n);
    std::vector<int64_t> view(nd, 1);
    view[d] = m;
    at::Tensor term = (2.0 - 2.0 * at::cos(w)).view(view);
    acc = acc.defined() ? acc + term : term;
  }
  return (acc * acc).to(real_options.dtype()).reshape(-1).contiguous();
}

WienerSpectra make_spectra(const at::Tensor& psf, const at::Tensor& snr_db,
                           at::IntArrayRef spatial, Regularizer reg,
                           const at::TensorOptions& real_options) {
  WienerSpectra s;
  at::Tensor otf = otf_of(psf, spatial);
  s.otf = otf.reshape({psf.size(0), -1}).contiguous();
  if (reg == Regularizer::kLaplacian) s.reg_power = laplacian_power(spatial, real_options);
  s.lambdas = at::exp(snr_db.to(real_options.dtype()) * (-std::log(10.0) / 10.0)).contiguous();
  return s;
}

// On the CPU the N filters are formed and inverse-transformed a few at a time, so that a group's
// spectra are still in the last-level cache when the inverse FFT reads them and the temporary
// buffers are small and reused; measured at 1024^2 with 2 threads, groups of 4-5 planes cost
// 30-40% less CPU time than one batched transform of all 15. On CUDA one batched cuFFT call wins.
int64_t filters_per_group(const at::Tensor& like, int64_t N, int64_t spectrum_elems) {
  constexpr int64_t kGroupBytes = int64_t(24) << 20;
  if (!like.is_cpu()) return N;
  const int64_t plane_bytes = spectrum_elems * 2 * static_cast<int64_t>(like.element_size());
  return std::max<int64_t>(1, std::min<int64_t>(N, kGroupBytes / std::max<int64_t>(1, plane_bytes)));
}

WienerSpectra with_lambdas(const WienerSpectra& s, int64_t first, int64_t count) {
  WienerSpectra group = s;
  group.lambdas = s.lambdas.narrow(0, first, count);
  return group;
}

std::vector<int64_t> spectrum_shape(at::IntArrayRef leading, at::IntArrayRef spatial) {
  std::vector<int64_t> shape(leading.begin(), leading.end());
  shape.insert(shape.end(), spatial.begin(), spatial.end());
  shape.back() = spatial.back() / 2 + 1;
  return shape;
}

}  // namespace

at::Tensor wiener_stack_impl(const at::Tensor& image, const at::Tensor& psf,
                             const at::Tensor& snr_db, std::string_view regularizer,
                             WienerForwardFn spectra_fn) {
  check_wiener_inputs(image, psf, snr_db, "image", 2);
  const Regularizer reg = parse_regularizer(regularizer);
  const int64_t B = image.size(0), C = image.size(1), N = snr_db.size(0);
  const at::IntArrayRef spatial = image.sizes().slice(2);
  const int64_t nd = static_cast<int64_t>(spatial.size());
  std::vector<int64_t> out_shape{B, N, C};
  out_shape.insert(out_shape.end(), spatial.begin(), spatial.end());
  at::Tensor out = at::empty(out_shape, image.options());
  if (B == 0 || C == 0) return out;

  const at::Tensor image_f = at::fft_rfftn(image, c10::nullopt, range_dims(2, nd)).contiguous();
  const WienerSpectra spectra = make_spectra(psf, snr_db, spatial, reg, image.options());
  const int64_t F = image_f.numel() / (B * C);
  const int64_t group = filters_per_group(image, N, B * C * F);
  at::Tensor out_f = at::empty({B, group, C, F}, image_f.options());
  for (int64_t j0 = 0; j0 < N; j0 += group) {
    const int64_t g = std::min(group, N - j0);
    at::Tensor group_f = out_f.narrow(1, 0, g);
    spectra_fn(image_f.view({B, C, F}), with_lambdas(spectra, j0, g), group_f);
    at::Tensor out_group = out.narrow(1, j0, g);
    at::fft_irfftn_out(out_group, group_f.view(spectrum_shape({B, g, C}, spatial)), spatial,
                       range_dims(3, nd));
  }
  return out;
}

at::Tensor wiener_stack_backward_impl(const at::Tensor& grad, const at::Tensor& psf,
                                      const at::Tensor& snr_db, std::string_view regularizer,
                                      WienerBackwardFn spectra_fn) {
  check_wiener_inputs(grad, psf, snr_db, "grad", 3);
  const Regularizer reg = parse_regularizer(regularizer);
  const int64_t B = grad.size(0), N = grad.size(1), C = grad.size(2);
  TORCH_CHECK(N == snr_db.size(0), "grad has ", N, " filters along dim 1 but snr_db has ",
              snr_db.size(0));
  const at::IntArrayRef spatial = grad.sizes().slice(3);
  const int64_t nd = static_cast<int64_t>(spatial.size());
  std::vector<int64_t> out_shape{B, C};
  out_shape.insert(out_shape.end(), spatial.begin(), spatial.end());
  if (B == 0 || C == 0) return at::zeros(out_shape, grad.options());

  const WienerSpectra spectra = make_spectra(psf, snr_db, spatial, reg, grad.options());
  const std::vector<int64_t> f_shape = spectrum_shape({B, C}, spatial);
  const int64_t F = c10::multiply_integers(f_shape.begin() + 2, f_shape.end());
  const int64_t group = filters_per_group(grad, N, B * C * F);
  at::Tensor out_f = at::empty({B, C, F}, spectra.otf.options());
  for (int64_t j0 = 0; j0 < N; j0 += group) {
    const int64_t g = std::min(group, N - j0);
    const at::Tensor grad_f =
        at::fft_rfftn(grad.narrow(1, j0, g), c10::nullopt, range_dims(3, nd)).contiguous();
    spectra_fn(grad_f.view({B, g, C, F}), with_lambdas(spectra, j0, g), out_f, j0 > 0);
  }
  return at::fft_irfftn(out_f.view(f_shape), spatial, range_dims(2, nd));
}

}  // namespace deblur_ops
