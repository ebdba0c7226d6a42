// Small helpers shared by the CUDA kernels.
#pragma once
#include <c10/util/string_view.h>

#include <algorithm>
#include <cstdint>
#include <string_view>

namespace deblur_ops {

constexpr int kThreads = 256;

// Grid for a grid-stride loop over `total` items; capped so the launch is always valid.
inline unsigned int grid_for(int64_t total) {
  const int64_t blocks = (total + kThreads - 1) / kThreads;
  return static_cast<unsigned int>(std::max<int64_t>(1, std::min<int64_t>(blocks, 1 << 20)));
}

inline std::string_view as_std(c10::string_view s) { return std::string_view(s.data(), s.size()); }

template <typename T>
struct Vec2;
template <>
struct Vec2<float> { using type = float2; };
template <>
struct Vec2<double> { using type = double2; };

}  // namespace deblur_ops
