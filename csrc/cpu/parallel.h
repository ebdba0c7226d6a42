// Grain sizes for at::parallel_for.
#pragma once
#include <algorithm>
#include <cstdint>

namespace deblur_ops {

// Elementary operations below which a job runs on one thread (ATen's TensorIterator uses the same).
constexpr int64_t kGrainOps = 32768;

// Tasks per thread so that each gets at least kGrainOps elementary operations.
// at::parallel_for runs ranges below the grain serially: tiny inputs (tests, small tiles) then skip
// waking the other threads, whose barrier stalls badly when a core is busy with another process.
inline int64_t grain_for(int64_t work_per_task) {
  return std::max<int64_t>(1, kGrainOps / std::max<int64_t>(1, work_per_task));
}

}  // namespace deblur_ops
