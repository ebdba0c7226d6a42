// CPU kernel of the fused Wiener stack: all N filtered spectra in one pass over the frequencies.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "../wiener_stack.h"
#include "parallel.h"

namespace deblur_ops {
namespace {

// Frequencies are processed in blocks small enough for the per-block filter to stay in L1;
// complex numbers are interleaved (re, im) pairs, which the compiler vectorises in the simd loops.
constexpr int64_t kBlock = 256;

template <typename T>
struct BlockFilter {
  T kr[kBlock], ki[kBlock], k2[kBlock];

  void load(const T* otf, int64_t f0, int64_t n) {
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) {
      kr[i] = otf[2 * (f0 + i)];
      ki[i] = otf[2 * (f0 + i) + 1];
      k2[i] = kr[i] * kr[i] + ki[i] * ki[i];
    }
  }

  // G = conj(K) / (|K|^2 + lambda |R|^2); a zero denominator (PSF and regulariser both blind to
  // that frequency) gives G = 0 instead of NaN.
  void filter(T lambda, const T* reg, int64_t f0, int64_t n, T* gr, T* gi) const {
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) {
      wiener_gain(kr[i], ki[i], k2[i], lambda, reg ? reg[f0 + i] : T(1), &gr[i], &gi[i]);
    }
  }
};

template <typename T>
inline void forward_range(const T* y, const T* otf, const T* reg, const T* lam, T* out, int64_t N,
                          int64_t C, int64_t F, int64_t P, int64_t blocks, int64_t begin, int64_t end) {
  BlockFilter<T> k;
  T gr[kBlock], gi[kBlock];
  for (int64_t task = begin; task < end; ++task) {
    const int64_t b = task / blocks, f0 = (task % blocks) * kBlock;
    const int64_t n = std::min(kBlock, F - f0);
    k.load(otf + 2 * (P == 1 ? 0 : b) * F, f0, n);
    for (int64_t j = 0; j < N; ++j) {
      k.filter(lam[j], reg, f0, n, gr, gi);
      for (int64_t c = 0; c < C; ++c) {
        const T* yp = y + 2 * ((b * C + c) * F + f0);
        T* op = out + 2 * (((b * N + j) * C + c) * F + f0);
#pragma omp simd
        for (int64_t i = 0; i < n; ++i) {
          const T yr = yp[2 * i], yi = yp[2 * i + 1];
          op[2 * i] = gr[i] * yr - gi[i] * yi;
          op[2 * i + 1] = gr[i] * yi + gi[i] * yr;
        }
      }
    }
  }
}

template <typename T>
inline void backward_range(const T* g, const T* otf, const T* reg, const T* lam, T* out, int64_t N,
                           int64_t C, int64_t F, int64_t P, bool accumulate, int64_t blocks,
                           int64_t begin, int64_t end) {
  BlockFilter<T> k;
  std::vector<T> gr(N * kBlock), gi(N * kBlock);
  T acc_r[kBlock], acc_i[kBlock];
  for (int64_t task = begin; task < end; ++task) {
    const int64_t b = task / blocks, f0 = (task % blocks) * kBlock;
    const int64_t n = std::min(kBlock, F - f0);
    k.load(otf + 2 * (P == 1 ? 0 : b) * F, f0, n);
    for (int64_t j = 0; j < N; ++j) k.filter(lam[j], reg, f0, n, &gr[j * kBlock], &gi[j * kBlock]);
    for (int64_t c = 0; c < C; ++c) {
      T* op = out + 2 * ((b * C + c) * F + f0);
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) {
        acc_r[i] = accumulate ? op[2 * i] : T(0);
        acc_i[i] = accumulate ? op[2 * i + 1] : T(0);
      }
      for (int64_t j = 0; j < N; ++j) {
        const T* gp = g + 2 * (((b * N + j) * C + c) * F + f0);
        const T* fr = &gr[j * kBlock];
        const T* fi = &gi[j * kBlock];
#pragma omp simd
        for (int64_t i = 0; i < n; ++i) {
          // conj(G) * grad
          const T xr = gp[2 * i], xi = gp[2 * i + 1];
          acc_r[i] += fr[i] * xr + fi[i] * xi;
          acc_i[i] += fr[i] * xi - fi[i] * xr;
        }
      }
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) {
        op[2 * i] = acc_r[i];
        op[2 * i + 1] = acc_i[i];
      }
    }
  }
}

// The extension is compiled for baseline x86-64 (SSE2); GCC clones the frequency loops for
// AVX-512 and AVX2 and picks one at load time (the division of the filter and the complex products
// run 2-4x wider; there FMAs round the products once instead of twice, well within the tests'
// tolerances against the reference).
#define DEBLUR_VECTOR_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#define DEBLUR_CLONED_RANGES(T)                                                                      \
  DEBLUR_VECTOR_CLONES void forward_range_cloned(const T* y, const T* otf, const T* reg,             \
                                                 const T* lam, T* out, int64_t N, int64_t C,        \
                                                 int64_t F, int64_t P, int64_t blocks,              \
                                                 int64_t begin, int64_t end) {                      \
    forward_range(y, otf, reg, lam, out, N, C, F, P, blocks, begin, end);                          \
  }                                                                                                  \
  DEBLUR_VECTOR_CLONES void backward_range_cloned(const T* g, const T* otf, const T* reg,            \
                                                  const T* lam, T* out, int64_t N, int64_t C,       \
                                                  int64_t F, int64_t P, bool accumulate,            \
                                                  int64_t blocks, int64_t begin, int64_t end) {     \
    backward_range(g, otf, reg, lam, out, N, C, F, P, accumulate, blocks, begin, end);             \
  }
DEBLUR_CLONED_RANGES(float)
DEBLUR_CLONED_RANGES(double)

template <typename T>
void forward_cpu(const T* y, const T* otf, const T* reg, const T* lam, T* out, int64_t B, int64_t N,
                 int64_t C, int64_t F, int64_t P) {
  const int64_t blocks = (F + kBlock - 1) / kBlock;
  at::parallel_for(0, B * blocks, grain_for(kBlock * N * C), [&](int64_t begin, int64_t end) {
    forward_range_cloned(y, otf, reg, lam, out, N, C, F, P, blocks, begin, end);
  });
}

template <typename T>
void backward_cpu(const T* g, const T* otf, const T* reg, const T* lam, T* out, int64_t B, int64_t N,
                  int64_t C, int64_t F, int64_t P, bool accumulate) {
  const int64_t blocks = (F + kBlock - 1) / kBlock;
  at::parallel_for(0, B * blocks, grain_for(kBlock * N * C), [&](int64_t begin, int64_t end) {
    backward_range_cloned(g, otf, reg, lam, out, N, C, F, P, accumulate, blocks, begin, end);
  });
}

const void* maybe_data(const at::Tensor& t) { return t.defined() ? t.const_data_ptr() : nullptr; }

void forward_spectra(const at::Tensor& image_f, const WienerSpectra& s, at::Tensor& out) {
  const int64_t B = image_f.size(0), C = image_f.size(1), F = image_f.size(2);
  AT_DISPATCH_FLOATING_TYPES(s.lambdas.scalar_type(), "wiener_stack_cpu", [&] {
    forward_cpu<scalar_t>(static_cast<const scalar_t*>(image_f.const_data_ptr()),
                          static_cast<const scalar_t*>(s.otf.const_data_ptr()),
                          static_cast<const scalar_t*>(maybe_data(s.reg_power)),
                          s.lambdas.const_data_ptr<scalar_t>(),
                          static_cast<scalar_t*>(out.mutable_data_ptr()), B, s.lambdas.size(0), C, F,
                          s.otf.size(0));
  });
}

void backward_spectra(const at::Tensor& grad_f, const WienerSpectra& s, at::Tensor& out,
                      bool accumulate) {
  const int64_t B = grad_f.size(0), N = grad_f.size(1), C = grad_f.size(2), F = grad_f.size(3);
  AT_DISPATCH_FLOATING_TYPES(s.lambdas.scalar_type(), "wiener_stack_backward_cpu", [&] {
    backward_cpu<scalar_t>(static_cast<const scalar_t*>(grad_f.const_data_ptr()),
                           static_cast<const scalar_t*>(s.otf.const_data_ptr()),
                           static_cast<const scalar_t*>(maybe_data(s.reg_power)),
                           s.lambdas.const_data_ptr<scalar_t>(),
                           static_cast<scalar_t*>(out.mutable_data_ptr()), B, N, C, F,
                           s.otf.size(0), accumulate);
  });
}

at::Tensor wiener_stack_cpu(const at::Tensor& image, const at::Tensor& psf, const at::Tensor& snr_db,
                            c10::string_view regularizer) {
  return wiener_stack_impl(image, psf, snr_db, std::string_view(regularizer.data(), regularizer.size()),
                           &forward_spectra);
}

at::Tensor wiener_stack_backward_cpu(const at::Tensor& grad, const at::Tensor& psf,
                                     const at::Tensor& snr_db, c10::string_view regularizer) {
  return wiener_stack_backward_impl(grad, psf, snr_db,
                                    std::string_view(regularizer.data(), regularizer.size()),
                                    &backward_spectra);
}

}  // namespace

TORCH_LIBRARY_IMPL(deblur_ops, CPU, m) {
  m.impl("wiener_stack", &wiener_stack_cpu);
  m.impl("wiener_stack_backward", &wiener_stack_backward_cpu);
}

}  // namespace deblur_ops
