// Device-independent half of the fused Wiener stack (paper 001): FFTs, OTF, regulariser spectrum.
// Each backend supplies only the per-frequency kernel that forms all N filtered spectra at once.
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/macros/Macros.h>

#include <string_view>

namespace deblur_ops {

// The per-frequency Wiener gain G = conj(K) / (|K|^2 + lambda |R|^2), zero where the denominator
// vanishes; shared by the CPU and CUDA kernels so that both evaluate exactly the same arithmetic.
// kr, ki: the OTF at this frequency; k2 = kr^2 + ki^2; reg = |R|^2 there (1 for the identity).
template <typename T>
C10_HOST_DEVICE inline void wiener_gain(T kr, T ki, T k2, T lambda, T reg, T* gr, T* gi) {
  const T d = k2 + lambda * reg;
  const T inv = d > T(0) ? T(1) / d : T(0);
  *gr = kr * inv;
  *gi = -ki * inv;
}

struct WienerSpectra {
  at::Tensor otf;        // (P, F) complex, P in {1, B}
  at::Tensor reg_power;  // (F) real |R|^2, undefined for the identity regulariser
  at::Tensor lambdas;    // (N) real, lambda_j = 10^(-snr_db_j / 10)
};

// out[b,j,c,f] = conj(K[f]) Y[b,c,f] / (|K[f]|^2 + lambda_j |R[f]|^2); image_f (B,C,F), out (B,N,C,F).
using WienerForwardFn = void (*)(const at::Tensor& image_f, const WienerSpectra& spectra,
                                 at::Tensor& out);
// out[b,c,f] (+)= sum_j conj(G_j[f]) grad_f[b,j,c,f]; grad_f (B,N,C,F), out (B,C,F); adds to out
// when `accumulate`, so the filters can be processed in groups.
using WienerBackwardFn = void (*)(const at::Tensor& grad_f, const WienerSpectra& spectra,
                                  at::Tensor& out, bool accumulate);

at::Tensor wiener_stack_impl(const at::Tensor& image, const at::Tensor& psf,
                             const at::Tensor& snr_db, std::string_view regularizer,
                             WienerForwardFn spectra_fn);

at::Tensor wiener_stack_backward_impl(const at::Tensor& grad, const at::Tensor& psf,
                                      const at::Tensor& snr_db, std::string_view regularizer,
                                      WienerBackwardFn spectra_fn);

}  // namespace deblur_ops
