// CPU kernels of Richardson-Lucy's element-wise steps: one pass over memory each, the operations
// in the order of the unfused torch code (so the results are bit-identical to it).
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include <optional>

#include "../checks.h"
#include "../richardson_lucy.h"
#include "parallel.h"

namespace deblur_ops {
namespace {

// The extension is compiled for baseline x86-64 (SSE2), where a division or a multiply of a
// 13 MB array is slower than ATen's AVX2/AVX-512 loops; GCC clones these loops per instruction
// set and picks one at load time. No FMA is formed (no multiply feeds an add), so every clone
// rounds exactly as the torch code it replaces.
#define DEBLUR_VECTOR_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))

template <typename T>
inline void ratio_span(T* h, const T* y, const T* b, int64_t n, T lo) {
  if (b == nullptr) {
    for (int64_t i = 0; i < n; ++i) h[i] = richardson_lucy_ratio(y[i], h[i], lo);
  } else {
    for (int64_t i = 0; i < n; ++i) h[i] = richardson_lucy_ratio(y[i], static_cast<T>(h[i] + b[i]), lo);
  }
}

// max(u, 0) * f first, then times x: the order of the torch code it replaces.
template <typename T>
inline void update_span(T* u, const T* x, const T* f, int64_t n) {
  if (f == nullptr) {
    for (int64_t i = 0; i < n; ++i) u[i] = richardson_lucy_update(u[i], x[i]);
  } else {
    for (int64_t i = 0; i < n; ++i) u[i] = richardson_lucy_update(u[i], x[i], f[i]);
  }
}

DEBLUR_VECTOR_CLONES void ratio_span_cloned(float* h, const float* y, const float* b, int64_t n, float lo) {
  ratio_span(h, y, b, n, lo);
}
DEBLUR_VECTOR_CLONES void ratio_span_cloned(double* h, const double* y, const double* b, int64_t n, double lo) {
  ratio_span(h, y, b, n, lo);
}
DEBLUR_VECTOR_CLONES void update_span_cloned(float* u, const float* x, const float* f, int64_t n) {
  update_span(u, x, f, n);
}
DEBLUR_VECTOR_CLONES void update_span_cloned(double* u, const double* x, const double* f, int64_t n) {
  update_span(u, x, f, n);
}

void richardson_lucy_ratio_cpu(const at::Tensor& blurred, const at::Tensor& observed,
                               const std::optional<at::Tensor>& background, double floor) {
  const at::Tensor none;
  const at::Tensor& back = background.has_value() ? *background : none;
  check_richardson_lucy_inputs(blurred, "blurred", observed, "observed", back, "background", none, "");
  const int64_t n = blurred.numel();
  AT_DISPATCH_FLOATING_TYPES(blurred.scalar_type(), "richardson_lucy_ratio_cpu", [&] {
    scalar_t* h = blurred.mutable_data_ptr<scalar_t>();
    const scalar_t* y = observed.const_data_ptr<scalar_t>();
    const scalar_t* b = back.defined() ? back.const_data_ptr<scalar_t>() : nullptr;
    const scalar_t lo = static_cast<scalar_t>(floor);
    at::parallel_for(0, n, kGrainOps, [&](int64_t begin, int64_t end) {
      ratio_span_cloned(h + begin, y + begin, b == nullptr ? nullptr : b + begin, end - begin, lo);
    });
  });
}

void richardson_lucy_update_cpu(const at::Tensor& correction, const at::Tensor& estimate,
                                const std::optional<at::Tensor>& factor) {
  const at::Tensor none;
  const at::Tensor& f = factor.has_value() ? *factor : none;
  check_richardson_lucy_inputs(correction, "correction", estimate, "estimate", none, "", f, "factor");
  const int64_t n = correction.numel();
  if (n == 0) return;
  const int64_t B = correction.size(0), C = correction.size(1);
  const int64_t S = n / (B * C);
  const bool per_item = f.defined() && f.size(0) > 1;
  AT_DISPATCH_FLOATING_TYPES(correction.scalar_type(), "richardson_lucy_update_cpu", [&] {
    scalar_t* u = correction.mutable_data_ptr<scalar_t>();
    const scalar_t* x = estimate.const_data_ptr<scalar_t>();
    const scalar_t* fp = f.defined() ? f.const_data_ptr<scalar_t>() : nullptr;
    at::parallel_for(0, n, kGrainOps, [&](int64_t begin, int64_t end) {
      // Walk [begin, end) one (item, channel) row at a time: the factor row is that item's.
      for (int64_t i = begin; i < end;) {
        const int64_t row = i / S, row_end = std::min(end, (row + 1) * S);
        const scalar_t* f_row = fp == nullptr ? nullptr : fp + (per_item ? row / C : 0) * S + (i - row * S);
        update_span_cloned(u + i, x + i, f_row, row_end - i);
        i = row_end;
      }
    });
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(deblur_ops, CPU, m) {
  m.impl("richardson_lucy_ratio_", &richardson_lucy_ratio_cpu);
  m.impl("richardson_lucy_update_", &richardson_lucy_update_cpu);
}

}  // namespace deblur_ops
