// Piecewise-linear learnable shrinkage (paper 004 §3.2, ADMM-Net): the per-element maths shared by
// the CPU and CUDA kernels, so that both evaluate exactly the same function.
#pragma once
#include <c10/macros/Macros.h>

#include <cstdint>

namespace deblur_ops {

template <typename T>
struct ShrinkTable {
  const T* values;  // n knot values of one channel
  int64_t n;
  T xmin, xmax, inv_step;

  // Segment index and fraction for x inside [xmin, xmax]; callers test the range first.
  // t is clamped in floating point before the conversion, because converting a NaN, an Inf or a
  // value beyond int64's range to an integer is undefined behaviour (a range overflowing T makes
  // x - xmin Inf); NaN goes to segment 0 and leaves frac NaN, so the result is NaN, never a wild
  // index. The integer clamp stays: n - 2 may round up when converted to T.
  C10_HOST_DEVICE inline int64_t segment(T x, T* frac) const {
    const T t = (x - xmin) * inv_step;
    const T last = static_cast<T>(n - 2);
    const T clamped = t >= T(0) ? (t <= last ? t : last) : T(0);
    int64_t i = static_cast<int64_t>(clamped);
    i = i > n - 2 ? n - 2 : i;
    *frac = t - static_cast<T>(i);
    return i;
  }

  // Outside the range the slope is 1 from the end knot. NaN fails both range tests and stays NaN
  // (it is never used as an index).
  C10_HOST_DEVICE inline T value(T x) const {
    if (x >= xmin && x <= xmax) {
      T frac;
      const int64_t i = segment(x, &frac);
      return values[i] + frac * (values[i + 1] - values[i]);
    }
    return x > xmax ? values[n - 1] + (x - xmax) : values[0] + (x - xmin);
  }
};

}  // namespace deblur_ops
