// NuConvPath::kByFilter: NU-Conv's three primitives (nu_conv.h) as one convolution per distinct
// filter in use, written with ATen operators so that every backend has it. When a dense bank is used
// through few distinct filters (a grid of measured PSFs), U convolutions by the BLAS-backed conv2d
// cost less than forming a dense local filter at every pixel.
#include <ATen/ops/arange.h>
#include <ATen/ops/bincount.h>
#include <ATen/ops/constant_pad_nd.h>
#include <ATen/ops/conv2d.h>
#include <ATen/ops/conv_transpose2d.h>
#include <ATen/ops/convolution_backward.h>
#include <ATen/ops/nonzero.h>
#include <ATen/ops/zeros.h>

#include <tuple>

#include "nu_conv.h"

namespace deblur_ops {
namespace {

// The distinct filters of the field and the field re-indexed into them.
struct FilterSet {
  at::Tensor used;     // (U) bank indices, ascending
  at::Tensor inverse;  // field shape, values in [0, U)
  at::Tensor filters;  // (U, 1, kh, kw) = bank[used]
};

FilterSet filter_set(const at::Tensor& idx, const at::Tensor& bank) {
  const at::Tensor used = at::nonzero(at::bincount(idx.flatten(), {}, bank.size(0))).flatten();
  at::Tensor lut = at::zeros({bank.size(0)}, idx.options());
  lut.index_copy_(0, used, at::arange(used.size(0), idx.options()));
  return {used, lut.index_select(0, idx.flatten()).view_as(idx),
          bank.index_select(0, used).unsqueeze(1)};
}

// (B*C, 1, Hg + kh - 1, Wg + kw - 1): the window image shifted so that grid point g's window starts
// at g, zero outside (negative pads crop).
at::Tensor window_canvas(const NuConvGeometry& g, const at::Tensor& win) {
  return at::constant_pad_nd(win,
                             {-g.ox, g.Wg + g.kw - 1 + g.ox - g.Ww, -g.oy,
                              g.Hg + g.kh - 1 + g.oy - g.Hw},
                             0)
      .reshape({g.B * g.C, 1, g.Hg + g.kh - 1, g.Wg + g.kw - 1});
}

// (B, C, U, Hg, Wg): every distinct filter correlated with every window.
at::Tensor responses(const NuConvGeometry& g, const FilterSet& fs, const at::Tensor& win) {
  return at::conv2d(window_canvas(g, win), fs.filters)
      .view({g.B, g.C, fs.used.size(0), g.Hg, g.Wg});
}

// (B, C, Hg, Wg): at each grid point, the response of its k-th filter.
at::Tensor pick(const NuConvGeometry& g, const at::Tensor& resp, const FilterSet& fs, int64_t k) {
  const at::Tensor which =
      fs.inverse.select(1, k).unsqueeze(1).unsqueeze(2).expand({g.B, g.C, 1, g.Hg, g.Wg});
  return resp.gather(2, which).squeeze(2);
}

// (B, C, U, Hg, Wg) -> (B*C, U, Hg, Wg): src spread over the filters with its field weights.
at::Tensor masked_source(const NuConvGeometry& g, const FilterSet& fs, const at::Tensor& w,
                         const at::Tensor& src) {
  const int64_t U = fs.used.size(0);
  const at::Tensor masks =
      at::zeros({g.Bf, U, g.Hg, g.Wg}, w.options()).scatter_add_(1, fs.inverse, w);
  return src.unsqueeze(2).mul(masks.unsqueeze(1)).reshape({g.B * g.C, U, g.Hg, g.Wg});
}

void pull_by_filter(const NuConvGeometry& g, const at::Tensor& idx, const at::Tensor& w,
                    const at::Tensor& bank, const at::Tensor& win, const at::Tensor& out) {
  const FilterSet fs = filter_set(idx, bank);
  const at::Tensor resp = responses(g, fs, win);
  at::Tensor acc = w.select(1, 0).unsqueeze(1).mul(pick(g, resp, fs, 0));
  for (int64_t k = 1; k < g.K; ++k) acc.addcmul_(w.select(1, k).unsqueeze(1), pick(g, resp, fs, k));
  out.copy_(acc);
}

void push_by_filter(const NuConvGeometry& g, const at::Tensor& idx, const at::Tensor& w,
                    const at::Tensor& bank, const at::Tensor& src, const at::Tensor& dst) {
  const FilterSet fs = filter_set(idx, bank);
  // Grid point g adds to window positions g + t: a transposed convolution, then shifted by o.
  const at::Tensor full = at::conv_transpose2d(masked_source(g, fs, w, src), fs.filters);
  dst.add_(at::constant_pad_nd(full,
                               {g.ox, g.Ww - g.ox - (g.Wg + g.kw - 1), g.oy,
                                g.Hw - g.oy - (g.Hg + g.kh - 1)},
                               0)
               .view(dst.sizes()));
}

void field_grad_by_filter(const NuConvGeometry& g, const at::Tensor& idx, const at::Tensor& w,
                          const at::Tensor& bank, const at::Tensor& src, const at::Tensor& win,
                          const at::Tensor& gw, const at::Tensor& gbank) {
  const FilterSet fs = filter_set(idx, bank);
  const at::Tensor canvas = window_canvas(g, win);
  const at::Tensor resp =
      at::conv2d(canvas, fs.filters).view({g.B, g.C, fs.used.size(0), g.Hg, g.Wg});
  for (int64_t k = 0; k < g.K; ++k) gw.select(1, k).copy_(src.mul(pick(g, resp, fs, k)).sum(1));
  // gbank[f](t) = sum over the points using f of w_k src win(g + o + t): the weight gradient of
  // the convolution above with the masked source as its output gradient.
  const at::Tensor per_filter = std::get<1>(at::convolution_backward(
      masked_source(g, fs, w, src), canvas, fs.filters, c10::nullopt, {1, 1}, {0, 0}, {1, 1},
      false, {0, 0}, 1, {false, true, false}));
  gbank.index_add_(0, fs.used, per_filter.squeeze(1));
}

}  // namespace

const NuConvPrimitives& nu_conv_by_filter_primitives() {
  static const NuConvPrimitives prims{&pull_by_filter, &push_by_filter, &field_grad_by_filter};
  return prims;
}

}  // namespace deblur_ops
