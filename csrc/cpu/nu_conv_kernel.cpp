// CPU kernels of NU-Conv's three primitives (nu_conv.h). Work is split by rows of the grid (pull,
// field_grad) or by bands of the destination (push), so no two threads write the same element;
// every inner loop runs along one contiguous filter row and image row and is vectorised.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <tuple>
#include <vector>

#include "../nu_conv.h"
#include "parallel.h"

namespace deblur_ops {
namespace {

// Rows of the destination handled by one push task: small enough to balance the threads, the
// filters of the grid points above and below are then formed only for the rows that land here.
constexpr int64_t kPushBand = 16;

template <typename T>
inline T row_dot(const T* a, const T* b, int64_t n) {
  T s = T(0);
#pragma omp simd reduction(+ : s)
  for (int64_t j = 0; j < n; ++j) s += a[j] * b[j];
  return s;
}

template <typename T>
inline void row_axpy(T alpha, const T* a, T* y, int64_t n) {
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) y[j] += alpha * a[j];
}

// The taps of grid point (gy, gx) whose window position lies inside the window image.
struct Taps {
  int64_t wy, wx, i0, i1, j0, j1;
  Taps(const NuConvGeometry& g, int64_t gy, int64_t gx)
      : wy(gy + g.oy), wx(gx + g.ox), i0(std::max<int64_t>(0, -wy)),
        i1(std::min<int64_t>(g.kh, g.Hw - wy)), j0(std::max<int64_t>(0, -wx)),
        j1(std::min<int64_t>(g.kw, g.Ww - wx)) {}
  bool empty() const { return i0 >= i1 || j0 >= j1; }
  // Offset of tap (i, j0) in a window-image plane.
  int64_t offset(const NuConvGeometry& g, int64_t i) const { return (wy + i) * g.Ww + wx + j0; }
};

// Forming the local filter h = sum_k w_k bank[idx_k] first costs (K + C) filter passes per pixel,
// K dot products per channel cost K * C; forming still wins at C = 1 (measured 184 vs 201 ms for
// gather, 208 vs 284 ms for scatter at 512x512, K = 4, 31x31) because its passes are plain axpys
// without a horizontal reduction per filter row, so only K = 1 takes the direct route.
inline bool form_filter(const NuConvGeometry& g) { return g.K > 1; }

template <typename T>
void form_rows(const NuConvGeometry& g, const int64_t* idx, const T* w, int64_t field_stride,
               const T* bank, int64_t i0, int64_t i1, int64_t j0, int64_t n, T* h) {
  for (int64_t i = i0; i < i1; ++i) std::fill_n(h + i * g.kw + j0, n, T(0));
  for (int64_t k = 0; k < g.K; ++k) {
    const T wk = w[k * field_stride];
    if (wk == T(0)) continue;
    const T* bk = bank + idx[k * field_stride] * g.kh * g.kw;
    for (int64_t i = i0; i < i1; ++i) row_axpy(wk, bk + i * g.kw + j0, h + i * g.kw + j0, n);
  }
}

void pull_cpu(const NuConvGeometry& g, const at::Tensor& idx_t, const at::Tensor& w_t,
              const at::Tensor& bank_t, const at::Tensor& win_t, const at::Tensor& out_t) {
  AT_DISPATCH_FLOATING_TYPES(win_t.scalar_type(), "nu_conv_pull_cpu", [&] {
    using T = scalar_t;
    const int64_t* idx = idx_t.const_data_ptr<int64_t>();
    const T* w = w_t.const_data_ptr<T>();
    const T* bank = bank_t.const_data_ptr<T>();
    const T* win = win_t.const_data_ptr<T>();
    T* out = out_t.mutable_data_ptr<T>();
    const int64_t T_ = g.kh * g.kw, grid_plane = g.Hg * g.Wg, win_plane = g.Hw * g.Ww;
    const bool form = form_filter(g);
    at::parallel_for(0, g.B * g.Hg, grain_for(g.Wg * g.kh * g.kw * (g.K + g.C)), [&](int64_t begin, int64_t end) {
      std::vector<T> h(form ? T_ : 0);
      for (int64_t task = begin; task < end; ++task) {
        const int64_t b = task / g.Hg, gy = task % g.Hg, fb = g.Bf == 1 ? 0 : b;
        for (int64_t gx = 0; gx < g.Wg; ++gx) {
          const int64_t f0 = fb * g.K * grid_plane + gy * g.Wg + gx;
          T* o = out + b * g.C * grid_plane + gy * g.Wg + gx;
          const Taps tp(g, gy, gx);
          if (tp.empty()) {
            for (int64_t c = 0; c < g.C; ++c) o[c * grid_plane] = T(0);
            continue;
          }
          const int64_t n = tp.j1 - tp.j0;
          if (form) {
            form_rows(g, idx + f0, w + f0, grid_plane, bank, tp.i0, tp.i1, tp.j0, n, h.data());
            for (int64_t c = 0; c < g.C; ++c) {
              const T* wc = win + (b * g.C + c) * win_plane;
              T acc = T(0);
              for (int64_t i = tp.i0; i < tp.i1; ++i) {
                acc += row_dot(h.data() + i * g.kw + tp.j0, wc + tp.offset(g, i), n);
              }
              o[c * grid_plane] = acc;
            }
            continue;
          }
          for (int64_t c = 0; c < g.C; ++c) {
            const T* wc = win + (b * g.C + c) * win_plane;
            T acc = T(0);
            for (int64_t k = 0; k < g.K; ++k) {
              const T wk = w[f0 + k * grid_plane];
              if (wk == T(0)) continue;
              const T* bk = bank + idx[f0 + k * grid_plane] * T_;
              T s = T(0);
              for (int64_t i = tp.i0; i < tp.i1; ++i) {
                s += row_dot(bk + i * g.kw + tp.j0, wc + tp.offset(g, i), n);
              }
              acc += wk * s;
            }
            o[c * grid_plane] = acc;
          }
        }
      }
    });
  });
}

void push_cpu(const NuConvGeometry& g, const at::Tensor& idx_t, const at::Tensor& w_t,
              const at::Tensor& bank_t, const at::Tensor& src_t, const at::Tensor& dst_t) {
  AT_DISPATCH_FLOATING_TYPES(src_t.scalar_type(), "nu_conv_push_cpu", [&] {
    using T = scalar_t;
    const int64_t* idx = idx_t.const_data_ptr<int64_t>();
    const T* w = w_t.const_data_ptr<T>();
    const T* bank = bank_t.const_data_ptr<T>();
    const T* src = src_t.const_data_ptr<T>();
    T* dst = dst_t.mutable_data_ptr<T>();
    const int64_t T_ = g.kh * g.kw, grid_plane = g.Hg * g.Wg, win_plane = g.Hw * g.Ww;
    const int64_t bands = (g.Hw + kPushBand - 1) / kPushBand;
    const bool form = form_filter(g);
    at::parallel_for(0, g.B * bands, grain_for(kPushBand * g.Wg * g.kh * (g.K + g.C)), [&](int64_t begin, int64_t end) {
      std::vector<T> h(form ? T_ : 0);
      for (int64_t task = begin; task < end; ++task) {
        const int64_t b = task / bands, fb = g.Bf == 1 ? 0 : b;
        const int64_t r0 = (task % bands) * kPushBand, r1 = std::min(g.Hw, r0 + kPushBand);
        // Grid rows whose window reaches into [r0, r1), and for each the taps that land there.
        const int64_t gy0 = std::max<int64_t>(0, r0 - g.oy - g.kh + 1);
        const int64_t gy1 = std::min<int64_t>(g.Hg, r1 - g.oy);
        for (int64_t gy = gy0; gy < gy1; ++gy) {
          const int64_t i0 = std::max<int64_t>(0, r0 - gy - g.oy);
          const int64_t i1 = std::min<int64_t>(g.kh, r1 - gy - g.oy);
          for (int64_t gx = 0; gx < g.Wg; ++gx) {
            const Taps tp(g, gy, gx);
            const int64_t n = tp.j1 - tp.j0;
            if (n <= 0) continue;
            const int64_t f0 = fb * g.K * grid_plane + gy * g.Wg + gx;
            const T* s = src + b * g.C * grid_plane + gy * g.Wg + gx;
            if (form) {
              form_rows(g, idx + f0, w + f0, grid_plane, bank, i0, i1, tp.j0, n, h.data());
              for (int64_t c = 0; c < g.C; ++c) {
                const T a = s[c * grid_plane];
                if (a == T(0)) continue;
                T* dc = dst + (b * g.C + c) * win_plane;
                for (int64_t i = i0; i < i1; ++i) {
                  row_axpy(a, h.data() + i * g.kw + tp.j0, dc + tp.offset(g, i), n);
                }
              }
              continue;
            }
            for (int64_t k = 0; k < g.K; ++k) {
              const T wk = w[f0 + k * grid_plane];
              if (wk == T(0)) continue;
              const T* bk = bank + idx[f0 + k * grid_plane] * T_;
              for (int64_t c = 0; c < g.C; ++c) {
                const T a = wk * s[c * grid_plane];
                if (a == T(0)) continue;
                T* dc = dst + (b * g.C + c) * win_plane;
                for (int64_t i = i0; i < i1; ++i) {
                  row_axpy(a, bk + i * g.kw + tp.j0, dc + tp.offset(g, i), n);
                }
              }
            }
          }
        }
      }
    });
  });
}

void field_grad_cpu(const NuConvGeometry& g, const at::Tensor& idx_t, const at::Tensor& w_t,
                    const at::Tensor& bank_t, const at::Tensor& src_t, const at::Tensor& win_t,
                    const at::Tensor& gw_t, const at::Tensor& gbank_t) {
  AT_DISPATCH_FLOATING_TYPES(src_t.scalar_type(), "nu_conv_field_grad_cpu", [&] {
    using T = scalar_t;
    const int64_t* idx = idx_t.const_data_ptr<int64_t>();
    const T* w = w_t.const_data_ptr<T>();
    const T* bank = bank_t.const_data_ptr<T>();
    const T* src = src_t.const_data_ptr<T>();
    const T* win = win_t.const_data_ptr<T>();
    T* gw = gw_t.mutable_data_ptr<T>();
    T* gbank = gbank_t.mutable_data_ptr<T>();
    const int64_t T_ = g.kh * g.kw, FT = g.F * T_;
    const int64_t grid_plane = g.Hg * g.Wg, win_plane = g.Hw * g.Ww;
    // One bank-sized partial gradient per thread: no atomics, one reduction at the end.
    const int threads = at::get_num_threads();
    std::vector<T> partial(static_cast<size_t>(threads) * FT, T(0));
    at::parallel_for(0, g.B * g.Hg, grain_for(g.Wg * g.kh * g.kw * (g.K + g.C)), [&](int64_t begin, int64_t end) {
      T* mine = partial.data() + static_cast<int64_t>(at::get_thread_num()) * FT;
      std::vector<T> P(T_);
      for (int64_t task = begin; task < end; ++task) {
        const int64_t b = task / g.Hg, gy = task % g.Hg, fb = g.Bf == 1 ? 0 : b;
        for (int64_t gx = 0; gx < g.Wg; ++gx) {
          const int64_t f0 = fb * g.K * grid_plane + gy * g.Wg + gx;
          T* go = gw + b * g.K * grid_plane + gy * g.Wg + gx;
          const T* s = src + b * g.C * grid_plane + gy * g.Wg + gx;
          const Taps tp(g, gy, gx);
          bool any = false;
          for (int64_t c = 0; c < g.C && !tp.empty(); ++c) any = any || s[c * grid_plane] != T(0);
          if (!any) {
            for (int64_t k = 0; k < g.K; ++k) go[k * grid_plane] = T(0);
            continue;
          }
          // P(t) = sum_c src_c(g) win_c(g + o + t) on the taps inside the window image.
          const int64_t n = tp.j1 - tp.j0;
          for (int64_t i = tp.i0; i < tp.i1; ++i) std::fill_n(P.data() + i * g.kw + tp.j0, n, T(0));
          for (int64_t c = 0; c < g.C; ++c) {
            const T a = s[c * grid_plane];
            if (a == T(0)) continue;
            const T* wc = win + (b * g.C + c) * win_plane;
            for (int64_t i = tp.i0; i < tp.i1; ++i) {
              row_axpy(a, wc + tp.offset(g, i), P.data() + i * g.kw + tp.j0, n);
            }
          }
          for (int64_t k = 0; k < g.K; ++k) {
            const int64_t f = idx[f0 + k * grid_plane];
            const T* bk = bank + f * T_;
            T acc = T(0);
            for (int64_t i = tp.i0; i < tp.i1; ++i) {
              acc += row_dot(bk + i * g.kw + tp.j0, P.data() + i * g.kw + tp.j0, n);
            }
            go[k * grid_plane] = acc;
            const T wk = w[f0 + k * grid_plane];
            if (wk == T(0)) continue;
            T* gk = mine + f * T_;
            for (int64_t i = tp.i0; i < tp.i1; ++i) {
              row_axpy(wk, P.data() + i * g.kw + tp.j0, gk + i * g.kw + tp.j0, n);
            }
          }
        }
      }
    });
    at::parallel_for(0, FT, 4096, [&](int64_t begin, int64_t end) {
      for (int t = 0; t < threads; ++t) {
        row_axpy(T(1), partial.data() + t * FT + begin, gbank + begin, end - begin);
      }
    });
  });
}

constexpr NuConvPrimitives kCpuPrimitives{&pull_cpu, &push_cpu, &field_grad_cpu};

at::Tensor nu_conv_cpu(const at::Tensor& x, const at::Tensor& bank, const at::Tensor& idx,
                       const at::Tensor& weights, c10::string_view mode,
                       c10::string_view padding) {
  return nu_conv_forward(x, bank, idx, weights, mode, padding, kCpuPrimitives);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> nu_conv_backward_cpu(
    const at::Tensor& grad, const at::Tensor& x, const at::Tensor& bank, const at::Tensor& idx,
    const at::Tensor& weights, c10::string_view mode, c10::string_view padding,
    std::array<bool, 3> output_mask) {
  return nu_conv_backward(grad, x, bank, idx, weights, mode, padding, output_mask,
                          kCpuPrimitives);
}

}  // namespace

TORCH_LIBRARY_IMPL(deblur_ops, CPU, m) {
  m.impl("nu_conv", &nu_conv_cpu);
  m.impl("nu_conv_backward", &nu_conv_backward_cpu);
}

}  // namespace deblur_ops
