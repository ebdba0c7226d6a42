// NU-Conv (paper 004 §2.2, docs/design.md §1.1; papers: docs/references.md): non-uniform convolution with a filter bank.
//
// Both modes and all their gradients reduce to three primitives on a "grid" that carries the filter
// field (idx, w) and a "window image" that each grid point reads or writes through its kh x kw
// window, whose top-left corner is at (gy + oy, gx + ox) (positions outside the window image are
// zero and never touched):
//   pull:       out(g)            = sum_k w_k(g) sum_t bankX[idx_k(g)][t] win(g + o + t)
//   push:       dst(g + o + t)   += sum_k w_k(g) bankX[idx_k(g)][t] src(g)          (pull's adjoint)
//   field_grad: P_g(t) = sum_c src_c(g) win_c(g + o + t); gw_k(g) = <bankX[idx_k(g)], P_g>;
//               gbankX[idx_k(g)] += w_k(g) P_g
// gather: grid = image, window image = padded x, o = 0, bankX = flipped bank.
// scatter: grid = padded image (the field padded like x), window image = y, o = -2r, bankX = bank.
// Backends implement the primitives; nu_conv.cpp does padding, folding and the bookkeeping once.
#pragma once
#include <ATen/core/Tensor.h>

#include <array>
#include <tuple>

namespace deblur_ops {

// How the kernels walk the field. kRuns: along each grid row in runs of pixels that share one filter
// index, one axpy per non-zero tap (smooth motion fields, PSF grids). kPixels: pixel by pixel,
// forming the local filter h_p (dense) once and reading its window (per-pixel filter fields).
// kByFilter: one convolution per distinct filter in use, then a per-pixel pick (dense banks with
// few distinct filters; backend independent, in nu_conv.cpp). kAuto lets choose_nu_conv_path decide.
enum class NuConvPath { kAuto, kRuns, kPixels, kByFilter };

struct NuConvGeometry {
  int64_t B, C, Bf, K, F, kh, kw;
  int64_t Hg, Wg;  // grid (field, pull output, push/field_grad source)
  int64_t Hw, Ww;  // window image
  int64_t oy, ox;  // window origin relative to the grid point
  NuConvPath path;  // kRuns or kPixels for the CPU loops; the CUDA kernels have one loop for both
};

// All tensors contiguous, one dtype (idx int64, values in [0, F)); outputs preallocated:
// pull fills out (B,C,Hg,Wg); push accumulates into a zeroed dst (B,C,Hw,Ww); field_grad fills
// gw (B,K,Hg,Wg) and accumulates into a zeroed gbank (F,kh,kw).
struct NuConvPrimitives {
  void (*pull)(const NuConvGeometry&, const at::Tensor& idx, const at::Tensor& w,
               const at::Tensor& bank, const at::Tensor& win, const at::Tensor& out);
  void (*push)(const NuConvGeometry&, const at::Tensor& idx, const at::Tensor& w,
               const at::Tensor& bank, const at::Tensor& src, const at::Tensor& dst);
  void (*field_grad)(const NuConvGeometry&, const at::Tensor& idx, const at::Tensor& w,
                     const at::Tensor& bank, const at::Tensor& src, const at::Tensor& win,
                     const at::Tensor& gw, const at::Tensor& gbank);
};

// The kByFilter primitives (nu_conv_by_filter.cpp); they ignore geometry.path.
const NuConvPrimitives& nu_conv_by_filter_primitives();

at::Tensor nu_conv_forward(const at::Tensor& x, const at::Tensor& bank, const at::Tensor& idx,
                           const at::Tensor& weights, c10::string_view mode,
                           c10::string_view padding, const NuConvPrimitives& prims);

std::tuple<at::Tensor, at::Tensor, at::Tensor> nu_conv_backward(
    const at::Tensor& grad, const at::Tensor& x, const at::Tensor& bank, const at::Tensor& idx,
    const at::Tensor& weights, c10::string_view mode, c10::string_view padding,
    std::array<bool, 3> output_mask, const NuConvPrimitives& prims);

}  // namespace deblur_ops
