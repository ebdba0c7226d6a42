// CUDA kernels of Richardson-Lucy's element-wise steps: grid-stride loops, one pass over memory
// each, the operations in the order of the unfused torch code.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <optional>

#include "../checks.h"
#include "../richardson_lucy.h"
#include "cuda_utils.cuh"

namespace deblur_ops {
namespace {

template <typename T>
__global__ void ratio_kernel(T* __restrict__ h, const T* __restrict__ y, const T* __restrict__ b,
                             int64_t n, T lo) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    h[i] = richardson_lucy_ratio(y[i], b == nullptr ? h[i] : static_cast<T>(h[i] + b[i]), lo);
  }
}

template <typename T>
__global__ void update_kernel(T* __restrict__ u, const T* __restrict__ x, const T* __restrict__ f,
                              int64_t n, int64_t C, int64_t S, bool per_item) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    if (f == nullptr) {
      u[i] = richardson_lucy_update(u[i], x[i]);
    } else {
      const int64_t row = i / S;
      u[i] = richardson_lucy_update(u[i], x[i], f[(per_item ? row / C : 0) * S + i % S]);
    }
  }
}

void richardson_lucy_ratio_cuda(const at::Tensor& blurred, const at::Tensor& observed,
                                const std::optional<at::Tensor>& background, double floor) {
  const at::Tensor none;
  const at::Tensor& back = background.has_value() ? *background : none;
  check_richardson_lucy_inputs(blurred, "blurred", observed, "observed", back, "background", none, "");
  const int64_t n = blurred.numel();
  if (n == 0) return;
  const c10::cuda::CUDAGuard guard(blurred.device());
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(blurred.scalar_type(), "richardson_lucy_ratio_cuda", [&] {
    ratio_kernel<scalar_t><<<grid_for(n), kThreads, 0, stream>>>(
        blurred.mutable_data_ptr<scalar_t>(), observed.const_data_ptr<scalar_t>(),
        back.defined() ? back.const_data_ptr<scalar_t>() : nullptr, n, static_cast<scalar_t>(floor));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

void richardson_lucy_update_cuda(const at::Tensor& correction, const at::Tensor& estimate,
                                 const std::optional<at::Tensor>& factor) {
  const at::Tensor none;
  const at::Tensor& f = factor.has_value() ? *factor : none;
  check_richardson_lucy_inputs(correction, "correction", estimate, "estimate", none, "", f, "factor");
  const int64_t n = correction.numel();
  if (n == 0) return;
  const int64_t C = correction.size(1), S = n / (correction.size(0) * C);
  const c10::cuda::CUDAGuard guard(correction.device());
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(correction.scalar_type(), "richardson_lucy_update_cuda", [&] {
    update_kernel<scalar_t><<<grid_for(n), kThreads, 0, stream>>>(
        correction.mutable_data_ptr<scalar_t>(), estimate.const_data_ptr<scalar_t>(),
        f.defined() ? f.const_data_ptr<scalar_t>() : nullptr, n, C, S, f.defined() && f.size(0) > 1);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(deblur_ops, CUDA, m) {
  m.impl("richardson_lucy_ratio_", &richardson_lucy_ratio_cuda);
  m.impl("richardson_lucy_update_", &richardson_lucy_update_cuda);
}

}  // namespace deblur_ops
