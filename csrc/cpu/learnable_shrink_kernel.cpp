// CPU kernels of the learnable shrinkage: element-wise forward; backward with per-chunk partial
// knot tables (a histogram-style reduction, one pass over the data).
#include <ATen/AccumulateType.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>
#include <vector>

#include "../checks.h"
#include "parallel.h"
#include "../shrink.h"

namespace deblur_ops {
namespace {

constexpr int64_t kChunk = 16384;

// Work is split into (slice, chunk) tasks, a slice being one (batch, channel) plane.
struct Tiling {
  int64_t C, S, chunks;
  explicit Tiling(const at::Tensor& x)
      : C(x.size(1)), S(x.numel() / std::max<int64_t>(1, x.size(0) * x.size(1))),
        chunks((S + kChunk - 1) / kChunk) {}
  int64_t tasks(const at::Tensor& x) const { return x.size(0) * C * chunks; }
};

template <typename T>
ShrinkTable<T> table_for(const T* values, int64_t n, double xmin, double xmax, int64_t c) {
  return {values + c * n, n, static_cast<T>(xmin), static_cast<T>(xmax),
          static_cast<T>((n - 1) / (xmax - xmin))};
}

at::Tensor learnable_shrink_cpu(const at::Tensor& x_in, const at::Tensor& values_in, double xmin,
                                double xmax) {
  check_shrink_inputs(x_in, values_in, xmin, xmax);
  const at::Tensor x = x_in.contiguous();
  const at::Tensor values = values_in.contiguous();
  at::Tensor out = at::empty_like(x);
  if (x.numel() == 0) return out;
  const Tiling tiling(x);
  const int64_t n = values.size(1);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "learnable_shrink_cpu", [&] {
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    const scalar_t* vp = values.const_data_ptr<scalar_t>();
    scalar_t* op = out.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, tiling.tasks(x), grain_for(kChunk), [&](int64_t begin, int64_t end) {
      for (int64_t task = begin; task < end; ++task) {
        const int64_t slice = task / tiling.chunks;
        const int64_t s0 = (task % tiling.chunks) * kChunk;
        const int64_t len = std::min(kChunk, tiling.S - s0);
        const ShrinkTable<scalar_t> table = table_for(vp, n, xmin, xmax, slice % tiling.C);
        const int64_t offset = slice * tiling.S + s0;
        for (int64_t i = 0; i < len; ++i) op[offset + i] = table.value(xp[offset + i]);
      }
    });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> learnable_shrink_backward_cpu(const at::Tensor& grad_in,
                                                                 const at::Tensor& x_in,
                                                                 const at::Tensor& values_in,
                                                                 double xmin, double xmax) {
  check_shrink_backward_inputs(grad_in, x_in, values_in, xmin, xmax);
  const at::Tensor x = x_in.contiguous();
  const at::Tensor grad = grad_in.contiguous();
  const at::Tensor values = values_in.contiguous();
  at::Tensor grad_x = at::empty_like(x);
  const int64_t C = values.size(0), n = values.size(1);
  if (x.numel() == 0) return {grad_x, at::zeros_like(values)};
  const Tiling tiling(x);
  at::Tensor grad_values;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "learnable_shrink_backward_cpu", [&] {
    using acc_t = at::acc_type<scalar_t, /*is_cuda=*/false>;
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    const scalar_t* gp = grad.const_data_ptr<scalar_t>();
    const scalar_t* vp = values.const_data_ptr<scalar_t>();
    scalar_t* gxp = grad_x.mutable_data_ptr<scalar_t>();
    // One (C, n) partial table per chunk: no atomics, one reduction at the end.
    const int64_t chunks = chunk_count(tiling.tasks(x), grain_for(kChunk));
    std::vector<acc_t> partial(static_cast<size_t>(chunks) * C * n, acc_t(0));
    for_each_chunk(tiling.tasks(x), chunks, [&](int64_t chunk, int64_t begin, int64_t end) {
      acc_t* mine = partial.data() + chunk * C * n;
      for (int64_t task = begin; task < end; ++task) {
        const int64_t slice = task / tiling.chunks;
        const int64_t c = slice % tiling.C;
        const int64_t s0 = (task % tiling.chunks) * kChunk;
        const int64_t len = std::min(kChunk, tiling.S - s0);
        const ShrinkTable<scalar_t> table = table_for(vp, n, xmin, xmax, c);
        acc_t* hist = mine + c * n;
        const int64_t offset = slice * tiling.S + s0;
        for (int64_t i = 0; i < len; ++i) {
          const scalar_t xv = xp[offset + i], g = gp[offset + i];
          if (xv >= table.xmin && xv <= table.xmax) {
            scalar_t frac;
            const int64_t k = table.segment(xv, &frac);
            gxp[offset + i] = g * (table.values[k + 1] - table.values[k]) * table.inv_step;
            hist[k] += static_cast<acc_t>(g * (scalar_t(1) - frac));
            hist[k + 1] += static_cast<acc_t>(g * frac);
          } else {
            gxp[offset + i] = g;
            hist[xv > table.xmax ? n - 1 : 0] += static_cast<acc_t>(g);
          }
        }
      }
    });
    at::Tensor total = at::zeros({C, n}, values.options().dtype(c10::CppTypeToScalarType<acc_t>::value));
    acc_t* tp = total.mutable_data_ptr<acc_t>();
    for (int64_t chunk = 0; chunk < chunks; ++chunk) {
      const acc_t* src = partial.data() + chunk * C * n;
      for (int64_t i = 0; i < C * n; ++i) tp[i] += src[i];
    }
    grad_values = total.to(values.scalar_type());
  });
  return {grad_x, grad_values};
}

}  // namespace

TORCH_LIBRARY_IMPL(deblur_ops, CPU, m) {
  m.impl("learnable_shrink", &learnable_shrink_cpu);
  m.impl("learnable_shrink_backward", &learnable_shrink_backward_cpu);
}

}  // namespace deblur_ops
