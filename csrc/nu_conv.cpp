// Device-independent part of NU-Conv: checks, padding of x (and of the field in scatter mode),
// folding of padded gradients back onto the image, and the mapping of both modes onto the
// pull/push/field_grad primitives described in nu_conv.h.
#include "nu_conv.h"

#include <ATen/ops/aminmax.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/bincount.h>
#include <ATen/ops/constant_pad_nd.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/flip.h>
#include <ATen/ops/where.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>
#include <ATen/ops/empty_like.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdlib>
#include <string>

namespace deblur_ops {
namespace {

enum class Padding { kZeros, kReflect, kReplicate, kCircular };

bool parse_scatter(c10::string_view mode) {
  if (mode == "gather") return false;
  if (mode == "scatter") return true;
  TORCH_CHECK(false, "mode must be 'gather' or 'scatter', got '", std::string(mode), "'");
}

Padding parse_padding(c10::string_view padding) {
  if (padding == "zeros") return Padding::kZeros;
  if (padding == "reflect") return Padding::kReflect;
  if (padding == "replicate") return Padding::kReplicate;
  if (padding == "circular") return Padding::kCircular;
  TORCH_CHECK(false, "padding must be 'zeros', 'reflect', 'replicate' or 'circular', got '",
              std::string(padding), "'");
}

void check_inputs(const at::Tensor& x, const at::Tensor& bank, const at::Tensor& idx,
                  const at::Tensor& weights) {
  TORCH_CHECK(x.dim() == 4, "x must have shape (B, C, H, W), got ", x.sizes());
  TORCH_CHECK(at::isFloatingType(x.scalar_type()) && x.element_size() >= 4,
              "x must be float32 or float64, got ", x.scalar_type());
  TORCH_CHECK(bank.dim() == 3 && bank.size(0) >= 1 && bank.size(1) % 2 == 1 &&
                  bank.size(2) % 2 == 1,
              "bank must have shape (F, kh, kw) with F >= 1 and odd kh, kw, got ", bank.sizes());
  TORCH_CHECK(bank.scalar_type() == x.scalar_type(), "bank dtype ", bank.scalar_type(),
              " must match x dtype ", x.scalar_type());
  TORCH_CHECK(weights.scalar_type() == x.scalar_type(), "weights dtype ", weights.scalar_type(),
              " must match x dtype ", x.scalar_type());
  TORCH_CHECK(idx.scalar_type() == at::kInt || idx.scalar_type() == at::kLong,
              "idx must be int32 or int64, got ", idx.scalar_type());
  for (const at::Tensor* t : {&bank, &idx, &weights}) {
    TORCH_CHECK(t->device() == x.device(), "bank, idx and weights must be on x's device ",
                x.device(), ", got ", t->device());
  }
  for (const auto& [t, name] : {std::pair{&idx, "idx"}, std::pair{&weights, "weights"}}) {
    TORCH_CHECK(t->dim() == 4 && (t->size(0) == 1 || t->size(0) == x.size(0)) &&
                    t->size(1) >= 1 && t->size(2) == x.size(2) && t->size(3) == x.size(3),
                name, " must have shape (B or 1, K, H, W) with B, H, W of x ", x.sizes(), ", got ",
                t->sizes());
  }
  // The batch sizes of idx and weights are independent (each 1 or B), as in the reference.
  TORCH_CHECK(idx.size(1) == weights.size(1), "idx and weights must have the same K, got shapes ",
              idx.sizes(), " and ", weights.sizes());
  if (idx.numel() > 0) {
    // Kernels index the bank with these values unchecked: reject them here, never read out of bounds.
    const auto [lo, hi] = at::aminmax(idx);
    const int64_t lo_v = lo.item<int64_t>(), hi_v = hi.item<int64_t>();
    TORCH_CHECK(lo_v >= 0 && hi_v < bank.size(0), "idx values must lie in [0, ", bank.size(0) - 1,
                "] (the bank has ", bank.size(0), " filters), got range [", lo_v, ", ", hi_v, "]");
  }
}

// Source index along one axis for each position of [-r, n + r), as in deblur_ops.reference.pad_index.
at::Tensor axis_map(int64_t n, int64_t r, Padding padding, const at::Device& device) {
  at::Tensor pos = at::arange(-r, n + r, at::TensorOptions().dtype(at::kLong));
  at::Tensor src;
  switch (padding) {
    case Padding::kZeros:
    case Padding::kReplicate:
      src = pos.clamp(0, n - 1);
      break;
    case Padding::kCircular:
      src = pos.remainder(n);
      break;
    case Padding::kReflect:
      if (n == 1) {
        src = at::zeros_like(pos);
      } else {
        const int64_t period = 2 * (n - 1);
        const at::Tensor m = pos.remainder(period);
        src = at::where(m.ge(n), m.neg().add(period), m);
      }
      break;
  }
  return src.to(device);
}

struct Layout {
  bool scatter;
  Padding padding;
  int64_t B, C, H, W, rh, rw;
  at::Tensor rows, cols;  // axis maps of the padded canvas (H + 2rh, W + 2rw)

  Layout(const at::Tensor& x, const at::Tensor& bank, c10::string_view mode,
         c10::string_view pad)
      : scatter(parse_scatter(mode)), padding(parse_padding(pad)), B(x.size(0)), C(x.size(1)),
        H(x.size(2)), W(x.size(3)), rh(bank.size(1) / 2), rw(bank.size(2) / 2),
        rows(axis_map(H, rh, padding, x.device())), cols(axis_map(W, rw, padding, x.device())) {}

  // t (N, M, H, W) read on the padded canvas; zeros padding reads 0 outside.
  at::Tensor pad(const at::Tensor& t) const {
    if (padding == Padding::kZeros) return at::constant_pad_nd(t, {rw, rw, rh, rh}, 0);
    return t.index_select(2, rows).index_select(3, cols).contiguous();
  }

  // Adjoint of pad: every padded position adds its value to the pixel it copies.
  at::Tensor fold(const at::Tensor& t) const {
    if (padding == Padding::kZeros) return t.narrow(2, rh, H).narrow(3, rw, W).contiguous();
    at::Tensor by_rows = at::zeros({t.size(0), t.size(1), H, t.size(3)}, t.options());
    by_rows.index_add_(2, rows, t);
    at::Tensor out = at::zeros({t.size(0), t.size(1), H, W}, t.options());
    return out.index_add_(3, cols, by_rows);
  }

  // field: the grid field's idx (batch 1 or B once idx and weights are expanded to one batch).
  NuConvGeometry geometry(const at::Tensor& bank, const at::Tensor& field) const {
    const int64_t kh = bank.size(1), kw = bank.size(2), Hp = H + 2 * rh, Wp = W + 2 * rw;
    if (scatter) {
      return {B, C, field.size(0), field.size(1), bank.size(0), kh, kw, Hp, Wp, H, W, -2 * rh, -2 * rw,
              NuConvPath::kAuto};
    }
    return {B, C, field.size(0), field.size(1), bank.size(0), kh, kw, H, W, Hp, Wp, 0, 0, NuConvPath::kAuto};
  }
};

// The field on the primitives' grid: as given for gather, padded like x for scatter so that a
// padded source pixel blurs with the filter of the image pixel whose value it copies. The
// primitives take one field batch size for both tensors: a batch-1 idx or weights next to a
// batch-B other is expanded to B.
std::pair<at::Tensor, at::Tensor> grid_field(const Layout& L, const at::Tensor& idx,
                                             const at::Tensor& weights) {
  const int64_t Bf = std::max(idx.size(0), weights.size(0));
  at::Tensor i = idx.to(at::kLong).expand({Bf, -1, -1, -1}).contiguous();
  at::Tensor w = weights.expand({Bf, -1, -1, -1}).contiguous();
  if (!L.scatter) return {i, w};
  return {L.pad(i), L.pad(w)};
}

at::Tensor bank_for(const Layout& L, const at::Tensor& bank) {
  return L.scatter ? bank.contiguous() : at::flip(bank, {1, 2}).contiguous();
}

// DEBLUR_NU_CONV_PATH=runs|pixels|filters forces a path (tests and `deblur bench` compare them);
// unset or "auto" leaves the choice to the cost model.
NuConvPath requested_path() {
  const char* env = std::getenv("DEBLUR_NU_CONV_PATH");
  const std::string v = env == nullptr ? "" : env;
  if (v.empty() || v == "auto") return NuConvPath::kAuto;
  if (v == "runs") return NuConvPath::kRuns;
  if (v == "pixels") return NuConvPath::kPixels;
  if (v == "filters") return NuConvPath::kByFilter;
  TORCH_CHECK(false, "DEBLUR_NU_CONV_PATH must be 'auto', 'runs', 'pixels' or 'filters', got '", v,
              "'; unset it to let nu_conv choose");
}

// Cost model: predicted nanoseconds on one core, with constants fitted to CPU-time measurements of
// the three paths on this project's AVX-512 CPU (float32; motion fields, 2x2..5x5 PSF grids with
// 7x7..31x31 PSFs, per-pixel random indices; benchmarks/results/2026-12-02_*_nu_conv_perpixel.md):
//   runs:    one axpy per non-zero tap across each run, ~2 ns to set up per tap and run, and a scan
//            of the whole bank for its non-zero taps;
//   pixels:  per grid point, K contiguous filter axpys and C row-wise window passes (vectors of
//            `lanes` elements, tails masked), plus ~57 ns of bookkeeping;
//   filters: oneDNN's conv2d with U single-channel filters is ~0.24 ns per vector of taps per filter
//            plus a fixed share worth ~19 filters, and the per-pixel pick ~70 ns. Measured, it never
//            beat the pixel path here, so auto chooses it only where the model says it would
//            (float64 conv2d is far slower on the CPU: never in float64).
// The CUDA kernel has one loop for every field: auto means kPixels there.
NuConvPath choose_path(const NuConvGeometry& g, const at::Tensor& gi, const at::Tensor& bank) {
  const NuConvPath forced = requested_path();
  if (forced != NuConvPath::kAuto) return forced;
  if (gi.numel() == 0) return NuConvPath::kRuns;
  if (bank.device().type() != at::kCPU) return NuConvPath::kPixels;
  // Statistics from at most ~kSampleRows rows of the field: a motion field's forward takes a few
  // milliseconds at 512^2, and full-field reductions would add a large share of that.
  constexpr int64_t kSampleRows = 16;
  const int64_t step = std::max<int64_t>(1, g.Hg / kSampleRows);
  const at::Tensor sample = gi.slice(2, 0, g.Hg, step);
  const double sampled_rows = static_cast<double>(sample.size(2));
  const at::Tensor counts = at::bincount(sample.flatten(), {}, g.F);
  const double nnz = counts.mul(bank.ne(0).sum({1, 2})).sum().item<double>() /
                     static_cast<double>(sample.numel());
  const double changes =
      g.Wg > 1 ? sample.narrow(3, 1, g.Wg - 1).ne(sample.narrow(3, 0, g.Wg - 1)).sum().item<double>() *
                     static_cast<double>(g.Hg) / sampled_rows
               : 0.0;
  const double B = static_cast<double>(g.B), C = static_cast<double>(g.C);
  const double K = static_cast<double>(g.K), P = static_cast<double>(g.Hg * g.Wg);
  const int64_t lanes = 64 / bank.element_size();
  const double taps = static_cast<double>(g.kh * g.kw);
  const double taps_vectors = static_cast<double>((g.kh * g.kw + lanes - 1) / lanes);
  const double window_vectors = static_cast<double>(g.kh * ((g.kw + lanes - 1) / lanes));
  // Runs along grid rows, per image of the batch.
  const double runs = (static_cast<double>(g.Bf * g.K * g.Hg) + changes) / static_cast<double>(g.Bf);
  const double cost_runs = B * C * (K * P * nnz / static_cast<double>(lanes) + 2.0 * runs * nnz) +
                           2.0 * static_cast<double>(g.F) * taps;
  const double cost_pixels = 0.6 * B * P * (K * taps_vectors + C * window_vectors + 95.0);
  NuConvPath best = cost_runs <= cost_pixels ? NuConvPath::kRuns : NuConvPath::kPixels;
  if (bank.scalar_type() == at::kFloat) {
    const double distinct = counts.gt(0).sum().item<double>();  // of the sample: a lower bound
    const double cost_filters =
        B * C * P * (0.24 * (distinct + 19.0) * taps / static_cast<double>(lanes) + 70.0);
    if (cost_filters < std::min(cost_runs, cost_pixels)) best = NuConvPath::kByFilter;
  }
  return best;
}

const NuConvPrimitives& primitives_for(NuConvGeometry* g, const at::Tensor& gi,
                                       const at::Tensor& bank, const NuConvPrimitives& backend) {
  g->path = choose_path(*g, gi, bank);
  return g->path == NuConvPath::kByFilter ? nu_conv_by_filter_primitives() : backend;
}

const char* path_name(NuConvPath path) {
  switch (path) {
    case NuConvPath::kRuns: return "runs";
    case NuConvPath::kPixels: return "pixels";
    case NuConvPath::kByFilter: return "filters";
    case NuConvPath::kAuto: break;
  }
  return "auto";
}

// The path nu_conv takes for these inputs (what the forward and backward would run).
std::string nu_conv_path(const at::Tensor& x, const at::Tensor& bank, const at::Tensor& idx,
                         const at::Tensor& weights, c10::string_view mode,
                         c10::string_view padding) {
  check_inputs(x, bank, idx, weights);
  const Layout L(x, bank, mode, padding);
  const at::Tensor gi = grid_field(L, idx, weights).first;
  NuConvGeometry g = L.geometry(bank, gi);
  return path_name(choose_path(g, gi, bank));
}

}  // namespace

TORCH_LIBRARY_IMPL(deblur_ops, CompositeExplicitAutograd, m) {
  m.impl("nu_conv_path", &nu_conv_path);
}

at::Tensor nu_conv_forward(const at::Tensor& x_in, const at::Tensor& bank, const at::Tensor& idx,
                           const at::Tensor& weights, c10::string_view mode,
                           c10::string_view padding, const NuConvPrimitives& backend) {
  check_inputs(x_in, bank, idx, weights);
  const Layout L(x_in, bank, mode, padding);
  const at::Tensor x = x_in.contiguous();
  if (x.numel() == 0) return at::zeros_like(x);
  const auto [gi, gw] = grid_field(L, idx, weights);
  NuConvGeometry g = L.geometry(bank, gi);
  const NuConvPrimitives& prims = primitives_for(&g, gi, bank, backend);
  const at::Tensor bk = bank_for(L, bank);
  const at::Tensor xp = L.pad(x);
  if (L.scatter) {
    at::Tensor y = at::zeros_like(x);
    prims.push(g, gi, gw, bk, xp, y);
    return y;
  }
  at::Tensor y = at::empty_like(x);
  prims.pull(g, gi, gw, bk, xp, y);
  return y;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> nu_conv_backward(
    const at::Tensor& grad_in, const at::Tensor& x_in, const at::Tensor& bank,
    const at::Tensor& idx, const at::Tensor& weights, c10::string_view mode,
    c10::string_view padding, std::array<bool, 3> output_mask, const NuConvPrimitives& backend) {
  check_inputs(x_in, bank, idx, weights);
  TORCH_CHECK(grad_in.sizes() == x_in.sizes() && grad_in.scalar_type() == x_in.scalar_type() &&
                  grad_in.device() == x_in.device(),
              "grad must match x in shape, dtype and device: x ", x_in.sizes(), " ",
              x_in.scalar_type(), ", got ", grad_in.sizes(), " ", grad_in.scalar_type());
  const Layout L(x_in, bank, mode, padding);
  const at::Tensor x = x_in.contiguous(), grad = grad_in.contiguous();
  at::Tensor grad_x = at::zeros_like(x);
  at::Tensor grad_bank = at::zeros_like(bank);
  at::Tensor grad_w = at::zeros_like(weights);
  if (x.numel() == 0) return {grad_x, grad_bank, grad_w};
  const auto [gi, gw] = grid_field(L, idx, weights);
  NuConvGeometry g = L.geometry(bank, gi);
  const NuConvPrimitives& prims = primitives_for(&g, gi, bank, backend);
  const at::Tensor bk = bank_for(L, bank);
  const at::Tensor xp = L.pad(x);
  const at::Tensor grid_src = L.scatter ? xp : grad;  // the value carried by each grid point
  const at::Tensor window = L.scatter ? grad : xp;    // the image its window covers
  if (output_mask[0]) {
    // The x-gradient of gather is a push of grad onto the padded canvas, of scatter a pull from
    // grad onto the padded grid; either way it is then folded back like the padding.
    at::Tensor padded = at::zeros({L.B, L.C, L.H + 2 * L.rh, L.W + 2 * L.rw}, x.options());
    if (L.scatter) {
      prims.pull(g, gi, gw, bk, window, padded);
    } else {
      prims.push(g, gi, gw, bk, grid_src, padded);
    }
    grad_x = L.fold(padded);
  }
  if (output_mask[1] || output_mask[2]) {
    at::Tensor gfield = at::empty({L.B, g.K, g.Hg, g.Wg}, x.options());
    at::Tensor gbank = at::zeros_like(bk);
    prims.field_grad(g, gi, gw, bk, grid_src, window, gfield, gbank);
    if (output_mask[1]) grad_bank = L.scatter ? gbank : at::flip(gbank, {1, 2});
    if (output_mask[2]) {
      if (weights.size(0) == 1 && L.B > 1) gfield = gfield.sum(0, /*keepdim=*/true);
      grad_w = L.scatter ? L.fold(gfield) : gfield;
    }
  }
  return {grad_x, grad_bank, grad_w};
}

}  // namespace deblur_ops
