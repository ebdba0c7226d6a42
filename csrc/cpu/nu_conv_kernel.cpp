// CPU kernels of NU-Conv's three primitives (nu_conv.h). Work is split by rows of the grid (pull,
// field_grad) or by bands of the destination (push), so no two threads write the same element.
// Two loops (NuConvPath, chosen in nu_conv.cpp): the run loop vectorises across the pixels of a run
// that shares one filter; the pixel loop across the taps of each pixel's local filter.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include <algorithm>
#if defined(__x86_64__)
#include <immintrin.h>
#endif
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
__attribute__((always_inline)) inline void scale(T c, const T* x, T* y, int64_t lo, int64_t hi) {
#pragma omp simd
  for (int64_t i = lo; i < hi; ++i) y[i] = c * x[i];
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

// ---- Row blocks of a window: the inner loops of the pixel path. ----
// A window row is kw taps (31 for the motion bank): too short for the compiler's vector loops, which
// add a scalar tail and a horizontal reduction per row. The AVX-512 versions cover the tail with a
// masked load and keep four accumulators across all rows, reducing once per window; the loader
// picks them when the CPU has AVX-512 (the generic loops serve everywhere else).
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define DEBLUR_AVX512 __attribute__((target("avx512f"))) inline
template <typename T>
struct Avx512;

template <>
struct Avx512<float> {
  using V = __m512;
  static constexpr int64_t kLanes = 16;
  DEBLUR_AVX512 static __mmask16 mask(int64_t n) {
    return n >= kLanes ? __mmask16(0xFFFF) : __mmask16((1u << n) - 1);
  }
  DEBLUR_AVX512 static V zero() { return _mm512_setzero_ps(); }
  DEBLUR_AVX512 static V splat(float c) { return _mm512_set1_ps(c); }
  DEBLUR_AVX512 static V load(int64_t n, const float* p) { return _mm512_maskz_loadu_ps(mask(n), p); }
  DEBLUR_AVX512 static void store(int64_t n, float* p, V v) { _mm512_mask_storeu_ps(p, mask(n), v); }
  DEBLUR_AVX512 static V fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  DEBLUR_AVX512 static V mul(V a, V b) { return _mm512_mul_ps(a, b); }
  DEBLUR_AVX512 static float sum(V a, V b, V c, V d) {
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a, b), _mm512_add_ps(c, d)));
  }
};

template <>
struct Avx512<double> {
  using V = __m512d;
  static constexpr int64_t kLanes = 8;
  DEBLUR_AVX512 static __mmask8 mask(int64_t n) {
    return n >= kLanes ? __mmask8(0xFF) : __mmask8((1u << n) - 1);
  }
  DEBLUR_AVX512 static V zero() { return _mm512_setzero_pd(); }
  DEBLUR_AVX512 static V splat(double c) { return _mm512_set1_pd(c); }
  DEBLUR_AVX512 static V load(int64_t n, const double* p) { return _mm512_maskz_loadu_pd(mask(n), p); }
  DEBLUR_AVX512 static void store(int64_t n, double* p, V v) { _mm512_mask_storeu_pd(p, mask(n), v); }
  DEBLUR_AVX512 static V fma(V a, V b, V c) { return _mm512_fmadd_pd(a, b, c); }
  DEBLUR_AVX512 static V mul(V a, V b) { return _mm512_mul_pd(a, b); }
  DEBLUR_AVX512 static double sum(V a, V b, V c, V d) {
    return _mm512_reduce_add_pd(_mm512_add_pd(_mm512_add_pd(a, b), _mm512_add_pd(c, d)));
  }
};

// sum over rows i and j in [j0, j1) of a[i * as + j] b[i * bs + j]. Two rows at a time and
// alternate vectors within a row go to different accumulators, so the FMAs do not wait on each
// other.
template <typename T>
DEBLUR_AVX512 T dot_rows_avx512(const T* a, int64_t as, const T* b, int64_t bs, int64_t rows,
                                int64_t j0, int64_t j1) {
  using S = Avx512<T>;
  typename S::V e0 = S::zero(), e1 = S::zero(), o0 = S::zero(), o1 = S::zero();
  int64_t i = 0;
  for (; i + 1 < rows; i += 2) {
    const T *a0 = a + i * as, *a1 = a0 + as, *b0 = b + i * bs, *b1 = b0 + bs;
    for (int64_t j = j0, c = 0; j < j1; j += S::kLanes, ++c) {
      const int64_t n = j1 - j;
      if (c & 1) {
        e1 = S::fma(S::load(n, a0 + j), S::load(n, b0 + j), e1);
        o1 = S::fma(S::load(n, a1 + j), S::load(n, b1 + j), o1);
      } else {
        e0 = S::fma(S::load(n, a0 + j), S::load(n, b0 + j), e0);
        o0 = S::fma(S::load(n, a1 + j), S::load(n, b1 + j), o0);
      }
    }
  }
  if (i < rows) {
    const T *a0 = a + i * as, *b0 = b + i * bs;
    for (int64_t j = j0; j < j1; j += S::kLanes) e0 = S::fma(S::load(j1 - j, a0 + j), S::load(j1 - j, b0 + j), e0);
  }
  return S::sum(e0, e1, o0, o1);
}

// y[i * ys + j] (+)= c x[i * xs + j] over rows i and j in [j0, j1).
template <typename T>
DEBLUR_AVX512 void axpy_rows_avx512(T c, const T* x, int64_t xs, T* y, int64_t ys, int64_t rows,
                                    int64_t j0, int64_t j1, bool accumulate) {
  using S = Avx512<T>;
  const typename S::V cv = S::splat(c);
  for (int64_t i = 0; i < rows; ++i) {
    const T* xi = x + i * xs;
    T* yi = y + i * ys;
    for (int64_t j = j0; j < j1; j += S::kLanes) {
      const int64_t n = j1 - j;
      const typename S::V xv = S::load(n, xi + j);
      S::store(n, yi + j, accumulate ? S::fma(cv, xv, S::load(n, yi + j)) : S::mul(cv, xv));
    }
  }
}

inline bool has_avx512() {
  static const bool yes = __builtin_cpu_supports("avx512f");
  return yes;
}
#endif

template <typename T>
inline T dot_rows(const T* a, int64_t as, const T* b, int64_t bs, int64_t rows, int64_t j0,
                  int64_t j1) {
#ifdef DEBLUR_AVX512
  if (has_avx512()) return dot_rows_avx512(a, as, b, bs, rows, j0, j1);
#endif
  T s = T(0);
  for (int64_t i = 0; i < rows; ++i) s += dot(a + i * as, b + i * bs, j0, j1);
  return s;
}

template <typename T>
inline void axpy_rows(T c, const T* x, int64_t xs, T* y, int64_t ys, int64_t rows, int64_t j0,
                      int64_t j1, bool accumulate) {
#ifdef DEBLUR_AVX512
  if (has_avx512()) return axpy_rows_avx512(c, x, xs, y, ys, rows, j0, j1, accumulate);
#endif
  for (int64_t i = 0; i < rows; ++i) {
    if (accumulate) {
      axpy(c, x + i * xs, y + i * ys, j0, j1);
    } else {
      scale(c, x + i * xs, y + i * ys, j0, j1);
    }
  }
}

// ---- Pixel path (NuConvPath::kPixels): filter indices that change from pixel to pixel. ----
// Runs there have length ~1 and the run loop pays a tap loop per pixel and filter. Instead each grid
// point forms its local filter h = sum_k w_k bankX[idx_k] once (K contiguous axpys over kh*kw taps,
// shared by all channels), then reads its window row by row with contiguous dot products.

// h (+)= sum_n c[n] f[n] over the taps, N filters at a time so that h is loaded and stored once per
// group of filters instead of once per filter.
template <int N, typename T>
__attribute__((always_inline)) inline void add_filters(const T* const* f, const T* c, T* __restrict h,
                                                       int64_t taps, bool first) {
  if (first) {
#pragma omp simd
    for (int64_t t = 0; t < taps; ++t) {
      T s = c[0] * f[0][t];
      for (int n = 1; n < N; ++n) s += c[n] * f[n][t];
      h[t] = s;
    }
  } else {
#pragma omp simd
    for (int64_t t = 0; t < taps; ++t) {
      T s = h[t];
      for (int n = 0; n < N; ++n) s += c[n] * f[n][t];
      h[t] = s;
    }
  }
}

// The local filter of the grid point whose field entries start at idx/w (stride grid_plane between
// the K entries). Zero weights are skipped; returns false when all are zero (h is then not written).
template <typename T>
__attribute__((always_inline)) inline bool local_filter(const NuConvGeometry& g, const T* bank,
                                                        const int64_t* idx, const T* w,
                                                        int64_t grid_plane, T* __restrict h) {
  const int64_t taps = g.kh * g.kw;
  const T* f[4];
  T c[4];
  int n = 0;
  bool first = true;
  for (int64_t k = 0; k < g.K; ++k) {
    const T wk = w[k * grid_plane];
    if (wk == T(0)) continue;
    f[n] = bank + idx[k * grid_plane] * taps;
    c[n++] = wk;
    if (n == 4) {
      add_filters<4>(f, c, h, taps, first);
      first = false;
      n = 0;
    }
  }
  switch (n) {
    case 3: add_filters<3>(f, c, h, taps, first); return true;
    case 2: add_filters<2>(f, c, h, taps, first); return true;
    case 1: add_filters<1>(f, c, h, taps, first); return true;
    default: return !first;
  }
}

// The part [i0, i1) x [j0, j1) of a grid point's window that lies inside the window image.
struct WindowClip {
  int64_t wy, wx, i0, i1, j0, j1;
  bool full;
  WindowClip(const NuConvGeometry& g, int64_t gy, int64_t gx)
      : wy(gy + g.oy), wx(gx + g.ox), i0(std::max<int64_t>(0, -wy)),
        i1(std::min<int64_t>(g.kh, g.Hw - wy)), j0(std::max<int64_t>(0, -wx)),
        j1(std::min<int64_t>(g.kw, g.Ww - wx)),
        full(i0 == 0 && j0 == 0 && i1 == g.kh && j1 == g.kw) {}
};

// sum over the window of h(t) win(g + o + t), row by row.
template <typename T>
__attribute__((always_inline)) inline T window_dot(const NuConvGeometry& g, const WindowClip& wc,
                                                   const T* h, const T* win_plane) {
  return dot_rows(h + wc.i0 * g.kw, g.kw, win_plane + (wc.wy + wc.i0) * g.Ww + wc.wx, g.Ww,
                  wc.i1 - wc.i0, wc.j0, wc.j1);
}

template <typename T>
DEBLUR_CPU_CLONES void pull_pixels_row(const NuConvGeometry& g, const T* bank, const int64_t* idx,
                                       const T* w, const T* win, T* out, int64_t b, int64_t gy,
                                       T* h) {
  const int64_t grid_plane = g.Hg * g.Wg, win_plane = g.Hw * g.Ww, fb = g.Bf == 1 ? 0 : b;
  const int64_t field = fb * g.K * grid_plane + gy * g.Wg;
  T* o = out + b * g.C * grid_plane + gy * g.Wg;
  for (int64_t gx = 0; gx < g.Wg; ++gx) {
    const bool any = local_filter(g, bank, idx + field + gx, w + field + gx, grid_plane, h);
    const WindowClip wc(g, gy, gx);
    for (int64_t c = 0; c < g.C; ++c) {
      o[c * grid_plane + gx] = any ? window_dot(g, wc, h, win + (b * g.C + c) * win_plane) : T(0);
    }
  }
}

// Adds what the grid rows [gy0, gy1) push into dst.
template <typename T>
DEBLUR_CPU_CLONES void push_pixels_rows(const NuConvGeometry& g, const T* bank, const int64_t* idx,
                                        const T* w, const T* src, T* dst, int64_t b, int64_t gy0,
                                        int64_t gy1, T* h) {
  const int64_t grid_plane = g.Hg * g.Wg, win_plane = g.Hw * g.Ww, fb = g.Bf == 1 ? 0 : b;
  for (int64_t gy = gy0; gy < gy1; ++gy) {
    const int64_t field = fb * g.K * grid_plane + gy * g.Wg;
    const T* s = src + b * g.C * grid_plane + gy * g.Wg;
    for (int64_t gx = 0; gx < g.Wg; ++gx) {
      bool carries = false;
      for (int64_t c = 0; c < g.C; ++c) carries = carries || s[c * grid_plane + gx] != T(0);
      if (!carries || !local_filter(g, bank, idx + field + gx, w + field + gx, grid_plane, h)) continue;
      const WindowClip wc(g, gy, gx);
      for (int64_t c = 0; c < g.C; ++c) {
        const T a = s[c * grid_plane + gx];
        if (a == T(0)) continue;
        // dst[wy + i, wx + j] += a * h[i, j]
        axpy_rows(a, h + wc.i0 * g.kw, g.kw,
                  dst + (b * g.C + c) * win_plane + (wc.wy + wc.i0) * g.Ww + wc.wx, g.Ww,
                  wc.i1 - wc.i0, wc.j0, wc.j1, true);
      }
    }
  }
}

template <typename T>
DEBLUR_CPU_CLONES void field_grad_pixels_row(const NuConvGeometry& g, const T* bank,
                                             const int64_t* idx, const T* w, const T* src,
                                             const T* win, T* gw, T* gbank, int64_t b, int64_t gy,
                                             T* p) {
  const int64_t taps = g.kh * g.kw, grid_plane = g.Hg * g.Wg, win_plane = g.Hw * g.Ww;
  const int64_t fb = g.Bf == 1 ? 0 : b;
  const int64_t field = fb * g.K * grid_plane + gy * g.Wg;
  const T* s = src + b * g.C * grid_plane + gy * g.Wg;
  T* go = gw + b * g.K * grid_plane + gy * g.Wg;
  for (int64_t gx = 0; gx < g.Wg; ++gx) {
    // P(t) = sum_c src_c(g) win_c(g + o + t), zero outside the window image.
    const WindowClip wc(g, gy, gx);
    if (!wc.full) std::fill_n(p, taps, T(0));
    bool any = false;
    for (int64_t c = 0; c < g.C; ++c) {
      const T a = s[c * grid_plane + gx];
      if (a == T(0)) continue;
      axpy_rows(a, win + (b * g.C + c) * win_plane + (wc.wy + wc.i0) * g.Ww + wc.wx, g.Ww,
                p + wc.i0 * g.kw, g.kw, wc.i1 - wc.i0, wc.j0, wc.j1, any || !wc.full);
      any = true;
    }
    for (int64_t k = 0; k < g.K; ++k) {
      const int64_t e = field + k * grid_plane + gx;
      if (!any) {
        go[k * grid_plane + gx] = T(0);
        continue;
      }
      const int64_t f = idx[e];
      go[k * grid_plane + gx] = dot(bank + f * taps, p, 0, taps);
      if (w[e] != T(0)) axpy(w[e], p, gbank + f * taps, 0, taps);
    }
  }
}

void pull_cpu(const NuConvGeometry& g, const at::Tensor& idx_t, const at::Tensor& w_t,
              const at::Tensor& bank_t, const at::Tensor& win_t, const at::Tensor& out_t) {
  AT_DISPATCH_FLOATING_TYPES(win_t.scalar_type(), "nu_conv_pull_cpu", [&] {
    using T = scalar_t;
    if (g.path == NuConvPath::kPixels) {
      const int64_t taps = g.kh * g.kw;
      at::parallel_for(0, g.B * g.Hg, grain_for(g.Wg * (g.K + g.C) * taps), [&](int64_t begin, int64_t end) {
        std::vector<T> h(taps);
        for (int64_t task = begin; task < end; ++task) {
          pull_pixels_row(g, bank_t.const_data_ptr<T>(), idx_t.const_data_ptr<int64_t>(),
                          w_t.const_data_ptr<T>(), win_t.const_data_ptr<T>(),
                          out_t.mutable_data_ptr<T>(), task / g.Hg, task % g.Hg, h.data());
        }
      });
      return;
    }
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
    if (g.path == NuConvPath::kPixels) {
      // Blocks of kh - 1 grid rows write destination rows that overlap only those of the next
      // block: even blocks in one parallel pass, odd ones in a second, and no two threads ever
      // write the same element (each local filter is still formed once).
      const int64_t taps = g.kh * g.kw, rows = std::max<int64_t>(1, g.kh - 1);
      const int64_t blocks = (g.Hg + rows - 1) / rows, pairs = (blocks + 1) / 2;
      for (int64_t parity = 0; parity < 2; ++parity) {
        at::parallel_for(0, g.B * pairs, grain_for(rows * g.Wg * (g.K + g.C) * taps), [&](int64_t begin, int64_t end) {
          std::vector<T> h(taps);
          for (int64_t task = begin; task < end; ++task) {
            const int64_t block = 2 * (task % pairs) + parity;
            if (block >= blocks) continue;
            push_pixels_rows(g, bank_t.const_data_ptr<T>(), idx_t.const_data_ptr<int64_t>(),
                             w_t.const_data_ptr<T>(), src_t.const_data_ptr<T>(),
                             dst_t.mutable_data_ptr<T>(), task / pairs, block * rows,
                             std::min(g.Hg, (block + 1) * rows), h.data());
          }
        });
      }
      return;
    }
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
      if (g.path == NuConvPath::kPixels) {
        std::vector<T> p(g.kh * g.kw);
        for (int64_t task = begin; task < end; ++task) {
          field_grad_pixels_row(g, bank_t.const_data_ptr<T>(), idx_t.const_data_ptr<int64_t>(),
                                w_t.const_data_ptr<T>(), src_t.const_data_ptr<T>(),
                                win_t.const_data_ptr<T>(), gw_t.mutable_data_ptr<T>(), mine,
                                task / g.Hg, task % g.Hg, p.data());
        }
        return;
      }
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
