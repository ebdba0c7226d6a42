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
  C10_HOST_DEVICE inline int64_t segment(T x, T* frac) const {
    const T t = (x - xmin) * inv_step;
    int64_t i = static_cast<int64_t>(t);
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
