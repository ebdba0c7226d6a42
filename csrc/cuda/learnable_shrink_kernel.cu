// CUDA kernels of the learnable shrinkage. Blocks walk (batch, channel) planes along grid.y so a
// block serves one channel at a time: its knot table is staged in shared memory and the values
// gradient is accumulated in a block-local shared histogram, flushed with one global atomicAdd per
// knot and block.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros_like.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>

#include "../checks.h"
#include "../shrink.h"
#include "cuda_utils.cuh"

namespace deblur_ops {
namespace {

// Tables larger than this are read from global memory (read-only cache) instead of shared memory.
constexpr int64_t kMaxSharedKnots = 2048;
constexpr int64_t kItemsPerThread = 16;

struct Launch {
  dim3 grid;
  bool shared;
  size_t shared_bytes;
};

Launch launch_for(const at::Tensor& x, int64_t n, size_t bytes_per_knot) {
  const int64_t planes = x.size(0) * x.size(1);
  const int64_t S = x.numel() / std::max<int64_t>(1, planes);
  const int64_t gx = std::min<int64_t>((S + kThreads * kItemsPerThread - 1) / (kThreads * kItemsPerThread), 1024);
  const int64_t gy = std::min<int64_t>(planes, 65535);
  const bool shared = n <= kMaxSharedKnots;
  return {dim3(static_cast<unsigned>(std::max<int64_t>(gx, 1)), static_cast<unsigned>(gy)), shared,
          shared ? static_cast<size_t>(n) * bytes_per_knot : 0};
}

template <typename T>
__global__ void shrink_forward_kernel(const T* __restrict__ x, const T* __restrict__ values,
                                      T* __restrict__ out, int64_t planes, int64_t C, int64_t S,
                                      int64_t n, T xmin, T xmax, T inv_step, bool shared) {
  extern __shared__ unsigned char smem[];
  T* table = reinterpret_cast<T*>(smem);
  for (int64_t plane = blockIdx.y; plane < planes; plane += gridDim.y) {
    const T* channel_values = values + (plane % C) * n;
    if (shared) {
      for (int64_t i = threadIdx.x; i < n; i += blockDim.x) table[i] = channel_values[i];
      __syncthreads();
    }
    const ShrinkTable<T> t{shared ? table : channel_values, n, xmin, xmax, inv_step};
    const int64_t base = plane * S;
    for (int64_t s = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; s < S;
         s += static_cast<int64_t>(blockDim.x) * gridDim.x) {
      out[base + s] = t.value(x[base + s]);
    }
    __syncthreads();
  }
}

template <typename T>
__global__ void shrink_backward_kernel(const T* __restrict__ grad, const T* __restrict__ x,
                                       const T* __restrict__ values, T* __restrict__ grad_x,
                                       T* __restrict__ grad_values, int64_t planes, int64_t C,
                                       int64_t S, int64_t n, T xmin, T xmax, T inv_step,
                                       bool shared) {
  extern __shared__ unsigned char smem[];
  T* table = reinterpret_cast<T*>(smem);
  T* hist = table + n;
  for (int64_t plane = blockIdx.y; plane < planes; plane += gridDim.y) {
    const int64_t c = plane % C;
    const T* channel_values = values + c * n;
    if (shared) {
      for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
        table[i] = channel_values[i];
        hist[i] = T(0);
      }
      __syncthreads();
    }
    const ShrinkTable<T> t{shared ? table : channel_values, n, xmin, xmax, inv_step};
    T* h = shared ? hist : grad_values + c * n;
    const int64_t base = plane * S;
    for (int64_t s = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; s < S;
         s += static_cast<int64_t>(blockDim.x) * gridDim.x) {
      const T xv = x[base + s], g = grad[base + s];
      if (xv >= xmin && xv <= xmax) {
        T frac;
        const int64_t k = t.segment(xv, &frac);
        grad_x[base + s] = g * (t.values[k + 1] - t.values[k]) * inv_step;
        atomicAdd(h + k, g * (T(1) - frac));
        atomicAdd(h + k + 1, g * frac);
      } else {
        grad_x[base + s] = g;
        atomicAdd(h + (xv > xmax ? n - 1 : 0), g);
      }
    }
    __syncthreads();
    if (shared) {
      for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
        if (hist[i] != T(0)) atomicAdd(grad_values + c * n + i, hist[i]);
      }
      __syncthreads();
    }
  }
}

at::Tensor learnable_shrink_cuda(const at::Tensor& x_in, const at::Tensor& values_in, double xmin,
                                 double xmax) {
  check_shrink_inputs(x_in, values_in, xmin, xmax);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor x = x_in.contiguous();
  const at::Tensor values = values_in.contiguous();
  at::Tensor out = at::empty_like(x);
  if (x.numel() == 0) return out;
  const int64_t C = values.size(0), n = values.size(1), planes = x.size(0) * x.size(1);
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "learnable_shrink_cuda", [&] {
    const Launch l = launch_for(x, n, sizeof(scalar_t));
    shrink_forward_kernel<scalar_t><<<l.grid, kThreads, l.shared_bytes, stream>>>(
        x.const_data_ptr<scalar_t>(), values.const_data_ptr<scalar_t>(),
        out.mutable_data_ptr<scalar_t>(), planes, C, x.numel() / planes, n,
        static_cast<scalar_t>(xmin), static_cast<scalar_t>(xmax),
        static_cast<scalar_t>((n - 1) / (xmax - xmin)), l.shared);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> learnable_shrink_backward_cuda(const at::Tensor& grad_in,
                                                                  const at::Tensor& x_in,
                                                                  const at::Tensor& values_in,
                                                                  double xmin, double xmax) {
  check_shrink_backward_inputs(grad_in, x_in, values_in, xmin, xmax);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor x = x_in.contiguous();
  const at::Tensor grad = grad_in.contiguous();
  const at::Tensor values = values_in.contiguous();
  at::Tensor grad_x = at::empty_like(x);
  at::Tensor grad_values = at::zeros_like(values);
  if (x.numel() == 0) return {grad_x, grad_values};
  const int64_t C = values.size(0), n = values.size(1), planes = x.size(0) * x.size(1);
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "learnable_shrink_backward_cuda", [&] {
    const Launch l = launch_for(x, n, 2 * sizeof(scalar_t));
    shrink_backward_kernel<scalar_t><<<l.grid, kThreads, l.shared_bytes, stream>>>(
        grad.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(),
        values.const_data_ptr<scalar_t>(), grad_x.mutable_data_ptr<scalar_t>(),
        grad_values.mutable_data_ptr<scalar_t>(), planes, C, x.numel() / planes, n,
        static_cast<scalar_t>(xmin), static_cast<scalar_t>(xmax),
        static_cast<scalar_t>((n - 1) / (xmax - xmin)), l.shared);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {grad_x, grad_values};
}

}  // namespace

TORCH_LIBRARY_IMPL(deblur_ops, CUDA, m) {
  m.impl("learnable_shrink", &learnable_shrink_cuda);
  m.impl("learnable_shrink_backward", &learnable_shrink_backward_cuda);
}

}  // namespace deblur_ops
