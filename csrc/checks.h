// Input checks shared by every backend, so that CPU and CUDA reject bad input with the same words.
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <string_view>

namespace deblur_ops {

enum class Regularizer { kIdentity, kLaplacian };

inline Regularizer parse_regularizer(std::string_view name) {
  if (name == "identity") return Regularizer::kIdentity;
  if (name == "laplacian") return Regularizer::kLaplacian;
  TORCH_CHECK(false, "regularizer must be 'identity' or 'laplacian', got '", std::string(name), "'");
}

// image (B,C,*S) with S of 2 or 3 dims; psf (P,*k) with P in {1,B}, each k odd and <= S.
void check_wiener_inputs(const at::Tensor& image, const at::Tensor& psf, const at::Tensor& snr_db,
                         const char* image_name, int64_t leading_dims);

void check_shrink_inputs(const at::Tensor& x, const at::Tensor& values, double xmin, double xmax);

void check_shrink_backward_inputs(const at::Tensor& grad, const at::Tensor& x,
                                  const at::Tensor& values, double xmin, double xmax);

// The Richardson-Lucy steps: float32/float64 contiguous tensors of one dtype and device; the
// mutated tensor `target` and `same` have one shape (`same` and `optional` may be undefined);
// `per_item`, if defined, has shape (P, 1, *S) with P in {1, B} for a target of shape (B, C, *S).
void check_richardson_lucy_inputs(const at::Tensor& target, const char* target_name,
                                  const at::Tensor& same, const char* same_name,
                                  const at::Tensor& optional, const char* optional_name,
                                  const at::Tensor& per_item, const char* per_item_name);

}  // namespace deblur_ops
