// CUDA kernels of the fused Wiener stack: one launch forms all N filtered spectra (forward) or
// sums the N adjoint spectra (backward); the FFTs around them are at::fft_* (cuFFT) calls made by
// the device-independent glue in csrc/wiener_stack.cpp.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../wiener_stack.h"
#include "cuda_utils.cuh"

namespace deblur_ops {
namespace {

template <typename T>
struct Filter {
  T kr, ki, k2, reg;

  // G = conj(K) / (|K|^2 + lambda |R|^2): csrc/wiener_stack.h, shared with the CPU kernel.
  __device__ inline void gain(T lambda, T* gr, T* gi) const { wiener_gain(kr, ki, k2, lambda, reg, gr, gi); }
};

template <typename T>
__device__ inline Filter<T> load_filter(const T* __restrict__ otf, const T* __restrict__ reg,
                                        int64_t kf, int64_t f) {
  using V = typename Vec2<T>::type;
  const V k = reinterpret_cast<const V*>(otf)[kf];
  return {k.x, k.y, k.x * k.x + k.y * k.y, reg ? reg[f] : T(1)};
}

template <typename T>
__global__ void wiener_forward_kernel(const T* __restrict__ y, const T* __restrict__ otf,
                                      const T* __restrict__ reg, const T* __restrict__ lam,
                                      T* __restrict__ out, int64_t B, int64_t N, int64_t C,
                                      int64_t F, int64_t P) {
  using V = typename Vec2<T>::type;
  const V* yv = reinterpret_cast<const V*>(y);
  V* ov = reinterpret_cast<V*>(out);
  const int64_t stride = static_cast<int64_t>(blockDim.x) * gridDim.x;
  for (int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; t < B * F;
       t += stride) {
    const int64_t b = t / F, f = t - b * F;
    const Filter<T> k = load_filter(otf, reg, (P == 1 ? 0 : b) * F + f, f);
    for (int64_t j = 0; j < N; ++j) {
      T gr, gi;
      k.gain(lam[j], &gr, &gi);
      for (int64_t c = 0; c < C; ++c) {
        const V v = yv[(b * C + c) * F + f];
        ov[((b * N + j) * C + c) * F + f] = V{gr * v.x - gi * v.y, gr * v.y + gi * v.x};
      }
    }
  }
}

template <typename T>
__global__ void wiener_backward_kernel(const T* __restrict__ g, const T* __restrict__ otf,
                                       const T* __restrict__ reg, const T* __restrict__ lam,
                                       T* __restrict__ out, int64_t B, int64_t N, int64_t C,
                                       int64_t F, int64_t P, bool accumulate) {
  using V = typename Vec2<T>::type;
  const V* gv = reinterpret_cast<const V*>(g);
  V* ov = reinterpret_cast<V*>(out);
  const int64_t stride = static_cast<int64_t>(blockDim.x) * gridDim.x;
  for (int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; t < B * F;
       t += stride) {
    const int64_t b = t / F, f = t - b * F;
    const Filter<T> k = load_filter(otf, reg, (P == 1 ? 0 : b) * F + f, f);
    for (int64_t c = 0; c < C; ++c) {
      V* o = ov + (b * C + c) * F + f;
      T ar = accumulate ? o->x : T(0), ai = accumulate ? o->y : T(0);
      for (int64_t j = 0; j < N; ++j) {
        T gr, gi;
        k.gain(lam[j], &gr, &gi);
        const V v = gv[((b * N + j) * C + c) * F + f];
        ar += gr * v.x + gi * v.y;  // conj(G) * grad
        ai += gr * v.y - gi * v.x;
      }
      *o = V{ar, ai};
    }
  }
}

template <typename T>
const T* optional_ptr(const at::Tensor& t) {
  return t.defined() ? static_cast<const T*>(t.const_data_ptr()) : nullptr;
}

void forward_spectra_cuda(const at::Tensor& image_f, const WienerSpectra& s, at::Tensor& out) {
  const int64_t B = image_f.size(0), C = image_f.size(1), F = image_f.size(2);
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(s.lambdas.scalar_type(), "wiener_stack_cuda", [&] {
    wiener_forward_kernel<scalar_t><<<grid_for(B * F), kThreads, 0, stream>>>(
        static_cast<const scalar_t*>(image_f.const_data_ptr()),
        static_cast<const scalar_t*>(s.otf.const_data_ptr()), optional_ptr<scalar_t>(s.reg_power),
        s.lambdas.const_data_ptr<scalar_t>(), static_cast<scalar_t*>(out.mutable_data_ptr()), B,
        s.lambdas.size(0), C, F, s.otf.size(0));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

void backward_spectra_cuda(const at::Tensor& grad_f, const WienerSpectra& s, at::Tensor& out,
                           bool accumulate) {
  const int64_t B = grad_f.size(0), N = grad_f.size(1), C = grad_f.size(2), F = grad_f.size(3);
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(s.lambdas.scalar_type(), "wiener_stack_backward_cuda", [&] {
    wiener_backward_kernel<scalar_t><<<grid_for(B * F), kThreads, 0, stream>>>(
        static_cast<const scalar_t*>(grad_f.const_data_ptr()),
        static_cast<const scalar_t*>(s.otf.const_data_ptr()), optional_ptr<scalar_t>(s.reg_power),
        s.lambdas.const_data_ptr<scalar_t>(), static_cast<scalar_t*>(out.mutable_data_ptr()), B, N,
        C, F, s.otf.size(0), accumulate);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

at::Tensor wiener_stack_cuda(const at::Tensor& image, const at::Tensor& psf,
                             const at::Tensor& snr_db, c10::string_view regularizer) {
  const c10::cuda::CUDAGuard guard(image.device());
  return wiener_stack_impl(image, psf, snr_db, as_std(regularizer), &forward_spectra_cuda);
}

at::Tensor wiener_stack_backward_cuda(const at::Tensor& grad, const at::Tensor& psf,
                                      const at::Tensor& snr_db, c10::string_view regularizer) {
  const c10::cuda::CUDAGuard guard(grad.device());
  return wiener_stack_backward_impl(grad, psf, snr_db, as_std(regularizer), &backward_spectra_cuda);
}

}  // namespace

TORCH_LIBRARY_IMPL(deblur_ops, CUDA, m) {
  m.impl("wiener_stack", &wiener_stack_cuda);
  m.impl("wiener_stack_backward", &wiener_stack_backward_cuda);
}

}  // namespace deblur_ops
