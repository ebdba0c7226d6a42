#include "checks.h"

#include <cmath>
#include <limits>

namespace deblur_ops {
namespace {

// The kernels convert xmin, xmax and the knot density (n - 1) / (xmax - xmin) to T and compute
// x - xmin in T: each must be finite (a double beyond T's range converted to T is undefined
// behaviour), and the range must not collapse or overflow in T.
template <typename T>
bool range_representable(double xmin, double xmax, int64_t n) {
  const double limit = static_cast<double>(std::numeric_limits<T>::max());
  if (!(std::abs(xmin) <= limit && std::abs(xmax) <= limit)) return false;
  const T lo = static_cast<T>(xmin), hi = static_cast<T>(xmax);
  const double inv_step = static_cast<double>(n - 1) / (xmax - xmin);
  return lo < hi && std::isfinite(hi - lo) && inv_step <= limit && static_cast<T>(inv_step) > T(0);
}

}  // namespace

namespace {
// at::isFloatingType also admits half, bfloat16 and the float8 types, for which no kernel is
// compiled: without this check they would pass here and fail later inside the dtype dispatch with
// a message that names neither the argument nor the fix.
bool is_float32_or_float64(at::ScalarType t) { return t == at::kFloat || t == at::kDouble; }
}  // namespace

void check_wiener_inputs(const at::Tensor& image, const at::Tensor& psf, const at::Tensor& snr_db,
                         const char* image_name, int64_t leading_dims) {
  const int64_t nd = image.dim();
  TORCH_CHECK(nd == leading_dims + 2 || nd == leading_dims + 3, image_name, " must have ",
              leading_dims, " leading dims followed by 2 or 3 spatial dims, got shape ",
              image.sizes());
  TORCH_CHECK(is_float32_or_float64(image.scalar_type()), image_name,
              " must be float32 or float64, got ", image.scalar_type(), "; convert with .float()");
  const int64_t spatial = nd - leading_dims;
  TORCH_CHECK(psf.dim() == spatial + 1, "psf must have shape (P, ", spatial,
              " kernel dims) with P = 1 or the batch size, got shape ", psf.sizes());
  TORCH_CHECK(psf.scalar_type() == image.scalar_type(), "psf dtype ", psf.scalar_type(),
              " must match ", image_name, " dtype ", image.scalar_type());
  TORCH_CHECK(psf.device() == image.device(), "psf is on ", psf.device(), " but ", image_name,
              " is on ", image.device());
  TORCH_CHECK(psf.size(0) == 1 || psf.size(0) == image.size(0), "psf batch size ", psf.size(0),
              " must be 1 or the batch size ", image.size(0));
  for (int64_t d = 0; d < spatial; ++d) {
    const int64_t k = psf.size(d + 1);
    const int64_t n = image.size(leading_dims + d);
    TORCH_CHECK(k % 2 == 1, "psf sizes must be odd so that the centre is a pixel, got ",
                psf.sizes());
    TORCH_CHECK(k <= n, "psf size ", k, " exceeds the ", image_name, " size ", n,
                " along spatial dim ", d);
  }
  TORCH_CHECK(snr_db.dim() == 1 && snr_db.numel() >= 1,
              "snr_db must be a non-empty 1-D tensor, got shape ", snr_db.sizes());
  TORCH_CHECK(at::isFloatingType(snr_db.scalar_type()), "snr_db must be floating point, got ",
              snr_db.scalar_type());
  TORCH_CHECK(snr_db.device() == image.device(), "snr_db is on ", snr_db.device(), " but ",
              image_name, " is on ", image.device());
}

void check_shrink_inputs(const at::Tensor& x, const at::Tensor& values, double xmin, double xmax) {
  TORCH_CHECK(x.dim() >= 2, "x must have shape (B, C, ...), got ", x.sizes());
  TORCH_CHECK(is_float32_or_float64(x.scalar_type()), "x must be float32 or float64, got ",
              x.scalar_type(), "; convert with .float()");
  TORCH_CHECK(values.dim() == 2 && values.size(0) == x.size(1) && values.size(1) >= 2,
              "values must have shape (C, n_knots) = (", x.size(1), ", n>=2), got ",
              values.sizes());
  TORCH_CHECK(values.scalar_type() == x.scalar_type(), "values dtype ", values.scalar_type(),
              " must match x dtype ", x.scalar_type());
  TORCH_CHECK(values.device() == x.device(), "values is on ", values.device(), " but x is on ",
              x.device());
  TORCH_CHECK(std::isfinite(xmin) && std::isfinite(xmax) && xmax > xmin,
              "value_range must be finite with xmin < xmax, got (", xmin, ", ", xmax, ")");
  const bool representable = x.scalar_type() == at::kDouble
                                  ? range_representable<double>(xmin, xmax, values.size(1))
                                  : range_representable<float>(xmin, xmax, values.size(1));
  TORCH_CHECK(representable, "value_range (", xmin, ", ", xmax, ") with ", values.size(1),
              " knots is not representable in ", x.scalar_type(),
              ": xmin, xmax, the width xmax - xmin and the knot density (n_knots - 1) / width must "
              "be finite and non-zero in x's dtype; rescale x and the range, or use float64");
}

void check_shrink_backward_inputs(const at::Tensor& grad, const at::Tensor& x,
                                  const at::Tensor& values, double xmin, double xmax) {
  check_shrink_inputs(x, values, xmin, xmax);
  TORCH_CHECK(grad.sizes() == x.sizes(), "grad must have the shape of x ", x.sizes(), ", got ",
              grad.sizes());
  TORCH_CHECK(grad.scalar_type() == x.scalar_type(), "grad dtype ", grad.scalar_type(),
              " must match x dtype ", x.scalar_type());
}

void check_richardson_lucy_inputs(const at::Tensor& target, const char* target_name,
                                  const at::Tensor& same, const char* same_name,
                                  const at::Tensor& optional, const char* optional_name,
                                  const at::Tensor& per_item, const char* per_item_name) {
  TORCH_CHECK(target.dim() >= 2, target_name, " must have shape (B, C, *S), got shape ",
              target.sizes());
  TORCH_CHECK(is_float32_or_float64(target.scalar_type()), target_name,
              " must be float32 or float64, got ", target.scalar_type());
  TORCH_CHECK(target.is_contiguous(), target_name,
              " is written in place and must be contiguous; pass target.contiguous() and use the result");
  auto check_like = [&](const at::Tensor& t, const char* name) {
    if (!t.defined()) return;
    TORCH_CHECK(t.sizes() == target.sizes(), name, " must have the shape of ", target_name, " ",
                target.sizes(), ", got ", t.sizes());
    TORCH_CHECK(t.scalar_type() == target.scalar_type(), name, " must have dtype ",
                target.scalar_type(), " like ", target_name, ", got ", t.scalar_type());
    TORCH_CHECK(t.device() == target.device(), name, " must be on ", target.device(), " like ",
                target_name, ", got ", t.device());
    TORCH_CHECK(t.is_contiguous(), name, " must be contiguous; pass ", name, ".contiguous()");
  };
  check_like(same, same_name);
  check_like(optional, optional_name);
  if (per_item.defined()) {
    const int64_t B = target.size(0);
    const bool shape_ok = per_item.dim() == target.dim() && (per_item.size(0) == 1 || per_item.size(0) == B) &&
                          per_item.size(1) == 1 && per_item.sizes().slice(2) == target.sizes().slice(2);
    TORCH_CHECK(shape_ok, per_item_name, " must have shape (P, 1, *S) with P = 1 or ", B, " for ",
                target_name, " of shape ", target.sizes(), ", got ", per_item.sizes());
    TORCH_CHECK(per_item.scalar_type() == target.scalar_type(), per_item_name, " must have dtype ",
                target.scalar_type(), ", got ", per_item.scalar_type());
    TORCH_CHECK(per_item.device() == target.device(), per_item_name, " must be on ", target.device(),
                ", got ", per_item.device());
    TORCH_CHECK(per_item.is_contiguous(), per_item_name, " must be contiguous");
  }
}

}  // namespace deblur_ops
