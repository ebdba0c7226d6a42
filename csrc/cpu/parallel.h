// Grain sizes and per-chunk work splitting for at::parallel_for.
#pragma once
#include <ATen/Parallel.h>

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

// Number of chunks for splitting `tasks` tasks with `grain` tasks at least per chunk: one per
// thread at most, fixed before the parallel region starts.
inline int64_t chunk_count(int64_t tasks, int64_t grain) {
  if (tasks <= 0) return 0;
  const int64_t by_grain = (tasks + grain - 1) / std::max<int64_t>(1, grain);
  return std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), by_grain));
}

// Calls fn(chunk, begin, end) in parallel for `chunks` contiguous ranges covering [0, tasks).
// Per-chunk scratch (partial reductions) is indexed by `chunk`, never by at::get_thread_num():
// the thread count can change between sizing the scratch and running (at::set_num_threads from
// another thread, or a call nested in a parallel region), and a chunk index stays in range and is
// never shared by two threads whatever the pool does.
template <typename F>
void for_each_chunk(int64_t tasks, int64_t chunks, const F& fn) {
  if (chunks <= 0) return;
  const int64_t base = tasks / chunks, extra = tasks % chunks;
  at::parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      const int64_t begin = c * base + std::min(c, extra);
      fn(c, begin, begin + base + (c < extra ? 1 : 0));
    }
  });
}

}  // namespace deblur_ops
