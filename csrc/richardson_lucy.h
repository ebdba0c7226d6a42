// Per-element maths of Richardson-Lucy's fused steps, shared by the CPU and CUDA kernels (as
// shrink.h is for learnable_shrink), so that the CPU tests exercise the arithmetic the GPU runs.
// The operations are in the order of the unfused torch code they replace:
//   ratio:  y / clamp(h + b, min=lo)            (h: the blurred estimate, b: the background)
//   update: x * (clamp(u, min=0) * f)           (u: the correction, f: the per-item factor)
// "a < lo ? lo : a" is std::max(a, lo) and clamp(min=lo): a NaN stays NaN in all three.
#pragma once

#include <c10/macros/Macros.h>

namespace deblur_ops {

template <typename T>
C10_HOST_DEVICE inline T richardson_lucy_ratio(T observed, T denominator, T lo) {
  return observed / (denominator < lo ? lo : denominator);
}

template <typename T>
C10_HOST_DEVICE inline T richardson_lucy_update(T correction, T estimate) {
  return estimate * (correction < T(0) ? T(0) : correction);
}

template <typename T>
C10_HOST_DEVICE inline T richardson_lucy_update(T correction, T estimate, T factor) {
  return estimate * ((correction < T(0) ? T(0) : correction) * factor);
}

}  // namespace deblur_ops
