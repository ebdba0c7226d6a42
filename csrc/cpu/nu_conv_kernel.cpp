// CPU kernels of NU-Conv's three primitives (nu_conv.h). Work is split by rows of the grid (pull,
// field_grad) or by bands of the destination (push), so no two threads write the same element;
// inner loops run across the pixels of a run that shares one filter, and are vectorised.
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

// Rows of the destination handled by one push task: small enough to balance the threads.
constexpr int64_t kPushBand = 16;

// The per-row workers are compiled for AVX-512 (x86-64-v4), AVX2+FMA (x86-64-v3) and the baseline,
// and the loader picks the best the CPU has (GCC function multi-versioning): the build stays
// portable while the loops across a run of pixels use the full vector width.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define DEBLUR_CPU_CLONES \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define DEBLUR_CPU_CLONES
#endif

// The non-zero taps of every filter. Motion-blur filters are lines: a 21 px line touches ~60 of
// the 961 taps of a 31x31 support, so pull and push visit only these. (The bank gradient needs
// every tap and does not use this.)
template <typename T>
struct SparseBank {
  std::vector<int64_t> start;  // taps of filter f are [start[f], start[f + 1])
  std::vector<int64_t> row, col;
  std::vector<T> coef;

  SparseBank(const T* bank, const NuConvGeometry& g) : start(g.F + 1, 0) {
    for (int64_t f = 0; f < g.F; ++f) {
      const T* bf = bank + f * g.kh * g.kw;
      for (int64_t i = 0; i < g.kh; ++i) {
        for (int64_t j = 0; j < g.kw; ++j) {
          if (bf[i * g.kw + j] == T(0)) continue;
          row.push_back(i);
          col.push_back(j);
          coef.push_back(bf[i * g.kw + j]);
        }
      }
      start[f + 1] = static_cast<int64_t>(coef.size());
    }
  }
};

// Pixels of a grid row are processed in runs that share one filter index: smooth fields (motion,
// PSF grids) have long runs, and within a run every tap is one axpy across pixels, which
// vectorises without horizontal reductions.
inline int64_t run_end(const int64_t* ids, int64_t gx0, int64_t width) {
  int64_t gx1 = gx0 + 1;
  while (gx1 < width && ids[gx1] == ids[gx0]) ++gx1;
  return gx1;
}

template <typename T>
bool any_nonzero(const T* v, int64_t gx0, int64_t gx1) {
  for (int64_t gx = gx0; gx < gx1; ++gx) {
    if (v[gx] != T(0)) return true;
  }
  return false;
}

// Columns gx of [gx0, gx1) whose tap column lands inside the window image.
inline void tap_columns(const NuConvGeometry& g, int64_t shift, int64_t gx0, int64_t gx1,
                        int64_t* lo, int64_t* hi) {
  *lo = std::max(gx0, -shift);
  *hi = std::min(gx1, g.Ww - shift);
}

// Element-wise loops over [lo, hi), kept out of the AT_DISPATCH lambdas (no pragmas allowed there).
template <typename T>
__attribute__((always_inline)) inline void axpy(T c, const T* x, T* y, int64_t lo, int64_t hi) {
#pragma omp simd
  for (int64_t i = lo; i < hi; ++i) y[i] += c * x[i];
}

template <typename T>
__attribute__((always_inline)) inline void multiply_add(const T* a, const T* b, T* y, int64_t lo, int64_t hi) {
#pragma omp simd
  for (int64_t i = lo; i < hi; ++i) y[i] += a[i] * b[i];
}

template <typename T>
__attribute__((always_inline)) inline void multiply(const T* a, const T* b, T* y, int64_t lo, int64_t hi) {
#pragma omp simd
  for (int64_t i = lo; i < hi; ++i) y[i] = a[i] * b[i];
}

template <typename T>
__attribute__((always_inline)) inline T dot(const T* a, const T* b, int64_t lo, int64_t hi) {
  T s = T(0);
#pragma omp simd reduction(+ : s)
  for (int64_t i = lo; i < hi; ++i) s += a[i] * b[i];
  return s;
}

// acc[gx] = sum over the non-zero taps t of filter f of bank_f(t) win(gy + oy + t_i, gx + ox + t_j).
template <typename T>
__attribute__((always_inline)) inline void correlate_run(const NuConvGeometry& g, const SparseBank<T>& sb, int64_t f, const T* win,
                   int64_t gy, int64_t gx0, int64_t gx1, T* acc) {
  std::fill(acc + gx0, acc + gx1, T(0));
  for (int64_t s = sb.start[f]; s < sb.start[f + 1]; ++s) {
    const int64_t wy = gy + g.oy + sb.row[s];
    if (wy < 0 || wy >= g.Hw) continue;
    const int64_t shift = g.ox + sb.col[s];
    int64_t lo, hi;
    tap_columns(g, shift, gx0, gx1, &lo, &hi);
    axpy(sb.coef[s], win + wy * g.Ww + shift, acc, lo, hi);
  }
}

template <typename T>
DEBLUR_CPU_CLONES void pull_row(const NuConvGeometry& g, const SparseBank<T>& sb, const int64_t* idx,
                                const T* w, const T* win, T* out, int64_t b, int64_t gy, T* acc) {
  const int64_t grid_plane = g.Hg * g.Wg, win_plane = g.Hw * g.Ww, fb = g.Bf == 1 ? 0 : b;
  for (int64_t c = 0; c < g.C; ++c) std::fill_n(out + (b * g.C + c) * grid_plane + gy * g.Wg, g.Wg, T(0));
  for (int64_t k = 0; k < g.K; ++k) {
    const int64_t* ids = idx + (fb * g.K + k) * grid_plane + gy * g.Wg;
    const T* wk = w + (fb * g.K + k) * grid_plane + gy * g.Wg;
    for (int64_t gx0 = 0, gx1; gx0 < g.Wg; gx0 = gx1) {
      gx1 = run_end(ids, gx0, g.Wg);
      if (!any_nonzero(wk, gx0, gx1)) continue;
      for (int64_t c = 0; c < g.C; ++c) {
        correlate_run(g, sb, ids[gx0], win + (b * g.C + c) * win_plane, gy, gx0, gx1, acc);
        multiply_add(wk, acc, out + (b * g.C + c) * grid_plane + gy * g.Wg, gx0, gx1);
      }
    }
  }
}

void pull_cpu(const NuConvGeometry& g, const at::Tensor& idx_t, const at::Tensor& w_t,
              const at::Tensor& bank_t, const at::Tensor& win_t, const at::Tensor& out_t) {
  AT_DISPATCH_FLOATING_TYPES(win_t.scalar_type(), "nu_conv_pull_cpu", [&] {
    using T = scalar_t;
    const SparseBank<T> sb(bank_t.const_data_ptr<T>(), g);
    const int64_t taps = std::max<int64_t>(1, static_cast<int64_t>(sb.coef.size()) / g.F);
    at::parallel_for(0, g.B * g.Hg, grain_for(g.Wg * g.K * g.C * taps), [&](int64_t begin, int64_t end) {
      std::vector<T> acc(g.Wg);
      for (int64_t task = begin; task < end; ++task) {
        pull_row(g, sb, idx_t.const_data_ptr<int64_t>(), w_t.const_data_ptr<T>(),
                 win_t.const_data_ptr<T>(), out_t.mutable_data_ptr<T>(), task / g.Hg, task % g.Hg,
                 acc.data());
      }
    });
  });
}

// Adds, to the destination rows [r0, r1), everything grid row gy pushes there.
template <typename T>
DEBLUR_CPU_CLONES void push_row(const NuConvGeometry& g, const SparseBank<T>& sb, const int64_t* idx,
                                const T* w, const T* src, T* dst, int64_t b, int64_t gy, int64_t r0,
                                int64_t r1, T* a) {
  const int64_t grid_plane = g.Hg * g.Wg, win_plane = g.Hw * g.Ww, fb = g.Bf == 1 ? 0 : b;
  for (int64_t k = 0; k < g.K; ++k) {
    const int64_t* ids = idx + (fb * g.K + k) * grid_plane + gy * g.Wg;
    const T* wk = w + (fb * g.K + k) * grid_plane + gy * g.Wg;
    for (int64_t gx0 = 0, gx1; gx0 < g.Wg; gx0 = gx1) {
      gx1 = run_end(ids, gx0, g.Wg);
      const int64_t f = ids[gx0];
      for (int64_t c = 0; c < g.C; ++c) {
        multiply(wk, src + (b * g.C + c) * grid_plane + gy * g.Wg, a, gx0, gx1);
        if (!any_nonzero(a, gx0, gx1)) continue;
        T* dc = dst + (b * g.C + c) * win_plane;
        for (int64_t t = sb.start[f]; t < sb.start[f + 1]; ++t) {
          const int64_t wy = gy + g.oy + sb.row[t];
          if (wy < r0 || wy >= r1) continue;
          const int64_t shift = g.ox + sb.col[t];
          int64_t lo, hi;
          tap_columns(g, shift, gx0, gx1, &lo, &hi);
          // dst[wy, gx + shift] += coef * a[gx]
          axpy(sb.coef[t], a - shift, dc + wy * g.Ww, lo + shift, hi + shift);
        }
      }
    }
  }
}

void push_cpu(const NuConvGeometry& g, const at::Tensor& idx_t, const at::Tensor& w_t,
              const at::Tensor& bank_t, const at::Tensor& src_t, const at::Tensor& dst_t) {
  AT_DISPATCH_FLOATING_TYPES(src_t.scalar_type(), "nu_conv_push_cpu", [&] {
    using T = scalar_t;
    const SparseBank<T> sb(bank_t.const_data_ptr<T>(), g);
    const int64_t bands = (g.Hw + kPushBand - 1) / kPushBand;
    const int64_t taps = std::max<int64_t>(1, static_cast<int64_t>(sb.coef.size()) / g.F);
    at::parallel_for(0, g.B * bands, grain_for(kPushBand * g.Wg * g.K * g.C * taps / g.kh + 1), [&](int64_t begin, int64_t end) {
      std::vector<T> a(g.Wg);
      for (int64_t task = begin; task < end; ++task) {
        const int64_t b = task / bands;
        const int64_t r0 = (task % bands) * kPushBand, r1 = std::min(g.Hw, r0 + kPushBand);
        // Grid rows whose window reaches into the destination rows [r0, r1).
        const int64_t gy0 = std::max<int64_t>(0, r0 - g.oy - g.kh + 1);
        const int64_t gy1 = std::min<int64_t>(g.Hg, r1 - g.oy);
        for (int64_t gy = gy0; gy < gy1; ++gy) {
          push_row(g, sb, idx_t.const_data_ptr<int64_t>(), w_t.const_data_ptr<T>(),
                   src_t.const_data_ptr<T>(), dst_t.mutable_data_ptr<T>(), b, gy, r0, r1, a.data());
        }
      }
    });
  });
}

// Weight gradient of grid row gy, and its bank gradient added to this thread's table gbank.
template <typename T>
DEBLUR_CPU_CLONES void field_grad_row(const NuConvGeometry& g, const SparseBank<T>& sb,
                                      const int64_t* idx, const T* w, const T* src, const T* win,
                                      T* gw, T* gbank, int64_t b, int64_t gy, T* acc, T* a) {
  const int64_t T_ = g.kh * g.kw, grid_plane = g.Hg * g.Wg, win_plane = g.Hw * g.Ww;
  const int64_t fb = g.Bf == 1 ? 0 : b;
  for (int64_t k = 0; k < g.K; ++k) {
    const int64_t* ids = idx + (fb * g.K + k) * grid_plane + gy * g.Wg;
    const T* wk = w + (fb * g.K + k) * grid_plane + gy * g.Wg;
    T* go = gw + (b * g.K + k) * grid_plane + gy * g.Wg;
    std::fill_n(go, g.Wg, T(0));
    for (int64_t gx0 = 0, gx1; gx0 < g.Wg; gx0 = gx1) {
      gx1 = run_end(ids, gx0, g.Wg);
      const int64_t f = ids[gx0];
      T* gk = gbank + f * T_;
      for (int64_t c = 0; c < g.C; ++c) {
        const T* s = src + (b * g.C + c) * grid_plane + gy * g.Wg;
        const T* wc = win + (b * g.C + c) * win_plane;
        if (!any_nonzero(s, gx0, gx1)) continue;
        // d/dw_k: src(g) * <bank_f, window of g>, over the non-zero taps only.
        correlate_run(g, sb, f, wc, gy, gx0, gx1, acc);
        multiply_add(s, acc, go, gx0, gx1);
        multiply(wk, s, a, gx0, gx1);
        if (!any_nonzero(a, gx0, gx1)) continue;
        // d/dbank_f(t): sum over the run of w_k(g) src(g) win(g + o + t), for every tap.
        for (int64_t i = 0; i < g.kh; ++i) {
          const int64_t wy = gy + g.oy + i;
          if (wy < 0 || wy >= g.Hw) continue;
          for (int64_t j = 0; j < g.kw; ++j) {
            const int64_t shift = g.ox + j;
            int64_t lo, hi;
            tap_columns(g, shift, gx0, gx1, &lo, &hi);
            gk[i * g.kw + j] += dot(a, wc + wy * g.Ww + shift, lo, hi);
          }
        }
      }
    }
  }
}

void field_grad_cpu(const NuConvGeometry& g, const at::Tensor& idx_t, const at::Tensor& w_t,
                    const at::Tensor& bank_t, const at::Tensor& src_t, const at::Tensor& win_t,
                    const at::Tensor& gw_t, const at::Tensor& gbank_t) {
  AT_DISPATCH_FLOATING_TYPES(src_t.scalar_type(), "nu_conv_field_grad_cpu", [&] {
    using T = scalar_t;
    const SparseBank<T> sb(bank_t.const_data_ptr<T>(), g);
    const int64_t FT = g.F * g.kh * g.kw;
    // One bank-sized partial gradient per chunk: no atomics, one reduction at the end.
    const int64_t chunks = chunk_count(g.B * g.Hg, grain_for(g.Wg * g.K * g.C * g.kh * g.kw));
    std::vector<T> partial(static_cast<size_t>(chunks) * FT, T(0));
    for_each_chunk(g.B * g.Hg, chunks, [&](int64_t chunk, int64_t begin, int64_t end) {
      T* mine = partial.data() + chunk * FT;
      std::vector<T> acc(g.Wg), a(g.Wg);
      for (int64_t task = begin; task < end; ++task) {
        field_grad_row(g, sb, idx_t.const_data_ptr<int64_t>(), w_t.const_data_ptr<T>(),
                       src_t.const_data_ptr<T>(), win_t.const_data_ptr<T>(),
                       gw_t.mutable_data_ptr<T>(), mine, task / g.Hg, task % g.Hg, acc.data(),
                       a.data());
      }
    });
    T* gbank = gbank_t.mutable_data_ptr<T>();
    at::parallel_for(0, FT, 4096, [&](int64_t begin, int64_t end) {
      for (int64_t c = 0; c < chunks; ++c) axpy(T(1), partial.data() + c * FT, gbank, begin, end);
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
