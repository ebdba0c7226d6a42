// CUDA kernels of NU-Conv's three primitives (nu_conv.h) and the CUDA registrations. One thread per
// output element on 16 x 16 tiles; pull stages its input tile and halo in shared memory when it
// fits; push is computed as a gather over the destination (no atomics); field_grad reduces the bank
// gradient per block in shared memory and adds it to global memory once per (block, filter, tap).
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <array>
#include <tuple>

#include "../nu_conv.h"

namespace deblur_ops {
namespace {

constexpr int kTile = 16;
constexpr size_t kMaxSharedBytes = 48 * 1024;  // available without opting in on every arch

inline dim3 tiles(int64_t height, int64_t width, int64_t planes) {
  TORCH_CHECK(planes <= 65535, "nu_conv on CUDA supports at most 65535 batch x channel planes, got ",
              planes);
  return dim3(static_cast<unsigned>((width + kTile - 1) / kTile),
              static_cast<unsigned>((height + kTile - 1) / kTile), static_cast<unsigned>(planes));
}

template <typename T>
__global__ void pull_kernel(NuConvGeometry g, const int64_t* __restrict__ idx,
                            const T* __restrict__ w, const T* __restrict__ bank,
                            const T* __restrict__ win, T* __restrict__ out, bool staged) {
  extern __shared__ unsigned char shared_raw[];
  T* tile = reinterpret_cast<T*>(shared_raw);
  const int64_t plane_index = blockIdx.z, b = plane_index / g.C;
  const int64_t gy0 = static_cast<int64_t>(blockIdx.y) * kTile;
  const int64_t gx0 = static_cast<int64_t>(blockIdx.x) * kTile;
  const int64_t gy = gy0 + threadIdx.y, gx = gx0 + threadIdx.x;
  const T* wp = win + plane_index * g.Hw * g.Ww;
  const int64_t tw = kTile + g.kw - 1, th = kTile + g.kh - 1;
  if (staged) {
    const int64_t ty0 = gy0 + g.oy, tx0 = gx0 + g.ox;
    for (int64_t e = threadIdx.y * kTile + threadIdx.x; e < th * tw; e += kTile * kTile) {
      const int64_t yy = ty0 + e / tw, xx = tx0 + e % tw;
      tile[e] = (yy >= 0 && yy < g.Hw && xx >= 0 && xx < g.Ww) ? wp[yy * g.Ww + xx] : T(0);
    }
    __syncthreads();
  }
  if (gy >= g.Hg || gx >= g.Wg) return;
  const int64_t grid_plane = g.Hg * g.Wg, taps = g.kh * g.kw;
  const int64_t f0 = (g.Bf == 1 ? 0 : b) * g.K * grid_plane + gy * g.Wg + gx;
  T acc = T(0);
  for (int64_t k = 0; k < g.K; ++k) {
    const T wk = w[f0 + k * grid_plane];
    if (wk == T(0)) continue;
    const T* bk = bank + idx[f0 + k * grid_plane] * taps;
    T s = T(0);
    for (int64_t i = 0; i < g.kh; ++i) {
      for (int64_t j = 0; j < g.kw; ++j) {
        T v;
        if (staged) {
          v = tile[(threadIdx.y + i) * tw + threadIdx.x + j];
        } else {
          const int64_t yy = gy + g.oy + i, xx = gx + g.ox + j;
          v = (yy >= 0 && yy < g.Hw && xx >= 0 && xx < g.Ww) ? __ldg(wp + yy * g.Ww + xx) : T(0);
        }
        s += __ldg(bk + i * g.kw + j) * v;
      }
    }
    acc += wk * s;
  }
  out[plane_index * grid_plane + gy * g.Wg + gx] = acc;
}

// dst(p) += sum over grid points q whose window covers p of sum_k w_k(q) bank[idx_k(q)][p-q-o] src(q).
template <typename T>
__global__ void push_kernel(NuConvGeometry g, const int64_t* __restrict__ idx,
                            const T* __restrict__ w, const T* __restrict__ bank,
                            const T* __restrict__ src, T* __restrict__ dst) {
  const int64_t plane_index = blockIdx.z, b = plane_index / g.C;
  const int64_t py = static_cast<int64_t>(blockIdx.y) * kTile + threadIdx.y;
  const int64_t px = static_cast<int64_t>(blockIdx.x) * kTile + threadIdx.x;
  if (py >= g.Hw || px >= g.Ww) return;
  const int64_t grid_plane = g.Hg * g.Wg, taps = g.kh * g.kw;
  const int64_t field = (g.Bf == 1 ? 0 : b) * g.K * grid_plane;
  const T* sp = src + plane_index * grid_plane;
  T acc = T(0);
  for (int64_t i = 0; i < g.kh; ++i) {
    const int64_t gy = py - g.oy - i;
    if (gy < 0 || gy >= g.Hg) continue;
    for (int64_t j = 0; j < g.kw; ++j) {
      const int64_t gx = px - g.ox - j;
      if (gx < 0 || gx >= g.Wg) continue;
      const T v = __ldg(sp + gy * g.Wg + gx);
      if (v == T(0)) continue;
      const int64_t f0 = field + gy * g.Wg + gx;
      T coef = T(0);
      for (int64_t k = 0; k < g.K; ++k) {
        coef += __ldg(w + f0 + k * grid_plane) *
                __ldg(bank + __ldg(idx + f0 + k * grid_plane) * taps + i * g.kw + j);
      }
      acc += coef * v;
    }
  }
  dst[plane_index * g.Hw * g.Ww + py * g.Ww + px] += acc;
}

// All threads of a block walk the taps in step, so the bank-gradient contributions of one tap are
// summed per filter in a shared table and flushed with one atomicAdd per (block, filter, tap).
template <typename T>
__global__ void field_grad_kernel(NuConvGeometry g, const int64_t* __restrict__ idx,
                                  const T* __restrict__ w, const T* __restrict__ bank,
                                  const T* __restrict__ src, const T* __restrict__ win,
                                  T* __restrict__ gw, T* __restrict__ gbank, bool shared_table) {
  extern __shared__ unsigned char shared_raw[];
  T* table = reinterpret_cast<T*>(shared_raw);
  const int64_t b = blockIdx.z;
  const int64_t gy = static_cast<int64_t>(blockIdx.y) * kTile + threadIdx.y;
  const int64_t gx = static_cast<int64_t>(blockIdx.x) * kTile + threadIdx.x;
  const bool active = gy < g.Hg && gx < g.Wg;
  const int tid = threadIdx.y * kTile + threadIdx.x;
  const int64_t grid_plane = g.Hg * g.Wg, win_plane = g.Hw * g.Ww, taps = g.kh * g.kw;
  const int64_t f0 = (g.Bf == 1 ? 0 : b) * g.K * grid_plane + gy * g.Wg + gx;
  const int64_t s0 = b * g.C * grid_plane + gy * g.Wg + gx;
  for (int64_t k = 0; k < g.K; ++k) {
    int64_t f = 0;
    T wk = T(0);
    if (active) {
      f = idx[f0 + k * grid_plane];
      wk = w[f0 + k * grid_plane];
    }
    const T* bk = bank + f * taps;
    T acc = T(0);
    for (int64_t t = 0; t < taps; ++t) {
      T p = T(0);
      if (active) {
        const int64_t yy = gy + g.oy + t / g.kw, xx = gx + g.ox + t % g.kw;
        if (yy >= 0 && yy < g.Hw && xx >= 0 && xx < g.Ww) {
          for (int64_t c = 0; c < g.C; ++c) {
            p += __ldg(src + s0 + c * grid_plane) *
                 __ldg(win + (b * g.C + c) * win_plane + yy * g.Ww + xx);
          }
        }
        acc += __ldg(bk + t) * p;
      }
      const T contrib = wk * p;
      if (shared_table) {
        for (int64_t e = tid; e < g.F; e += kTile * kTile) table[e] = T(0);
        __syncthreads();
        if (contrib != T(0)) atomicAdd(table + f, contrib);
        __syncthreads();
        // Each thread flushes (and next tap re-zeroes) the same entries, so two barriers suffice.
        for (int64_t e = tid; e < g.F; e += kTile * kTile) {
          if (table[e] != T(0)) atomicAdd(gbank + e * taps + t, table[e]);
        }
      } else if (contrib != T(0)) {
        atomicAdd(gbank + f * taps + t, contrib);
      }
    }
    if (active) gw[(b * g.K + k) * grid_plane + gy * g.Wg + gx] = acc;
  }
}

void pull_cuda(const NuConvGeometry& g, const at::Tensor& idx, const at::Tensor& w,
               const at::Tensor& bank, const at::Tensor& win, const at::Tensor& out) {
  const c10::cuda::CUDAGuard guard(win.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(win.scalar_type(), "nu_conv_pull_cuda", [&] {
    const size_t bytes = (kTile + g.kh - 1) * (kTile + g.kw - 1) * sizeof(scalar_t);
    const bool staged = bytes <= kMaxSharedBytes;
    pull_kernel<scalar_t><<<tiles(g.Hg, g.Wg, g.B * g.C), dim3(kTile, kTile),
                            staged ? bytes : 0, stream>>>(
        g, idx.const_data_ptr<int64_t>(), w.const_data_ptr<scalar_t>(),
        bank.const_data_ptr<scalar_t>(), win.const_data_ptr<scalar_t>(),
        out.mutable_data_ptr<scalar_t>(), staged);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

void push_cuda(const NuConvGeometry& g, const at::Tensor& idx, const at::Tensor& w,
               const at::Tensor& bank, const at::Tensor& src, const at::Tensor& dst) {
  const c10::cuda::CUDAGuard guard(src.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(src.scalar_type(), "nu_conv_push_cuda", [&] {
    push_kernel<scalar_t><<<tiles(g.Hw, g.Ww, g.B * g.C), dim3(kTile, kTile), 0, stream>>>(
        g, idx.const_data_ptr<int64_t>(), w.const_data_ptr<scalar_t>(),
        bank.const_data_ptr<scalar_t>(), src.const_data_ptr<scalar_t>(),
        dst.mutable_data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

void field_grad_cuda(const NuConvGeometry& g, const at::Tensor& idx, const at::Tensor& w,
                     const at::Tensor& bank, const at::Tensor& src, const at::Tensor& win,
                     const at::Tensor& gw, const at::Tensor& gbank) {
  const c10::cuda::CUDAGuard guard(src.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(src.scalar_type(), "nu_conv_field_grad_cuda", [&] {
    const size_t bytes = g.F * sizeof(scalar_t);
    const bool shared_table = bytes <= kMaxSharedBytes;
    field_grad_kernel<scalar_t><<<tiles(g.Hg, g.Wg, g.B), dim3(kTile, kTile),
                                  shared_table ? bytes : 0, stream>>>(
        g, idx.const_data_ptr<int64_t>(), w.const_data_ptr<scalar_t>(),
        bank.const_data_ptr<scalar_t>(), src.const_data_ptr<scalar_t>(),
        win.const_data_ptr<scalar_t>(), gw.mutable_data_ptr<scalar_t>(),
        gbank.mutable_data_ptr<scalar_t>(), shared_table);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

constexpr NuConvPrimitives kCudaPrimitives{&pull_cuda, &push_cuda, &field_grad_cuda};

at::Tensor nu_conv_cuda(const at::Tensor& x, const at::Tensor& bank, const at::Tensor& idx,
                        const at::Tensor& weights, c10::string_view mode,
                        c10::string_view padding) {
  return nu_conv_forward(x, bank, idx, weights, mode, padding, kCudaPrimitives);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> nu_conv_backward_cuda(
    const at::Tensor& grad, const at::Tensor& x, const at::Tensor& bank, const at::Tensor& idx,
    const at::Tensor& weights, c10::string_view mode, c10::string_view padding,
    std::array<bool, 3> output_mask) {
  return nu_conv_backward(grad, x, bank, idx, weights, mode, padding, output_mask,
                          kCudaPrimitives);
}

}  // namespace

TORCH_LIBRARY_IMPL(deblur_ops, CUDA, m) {
  m.impl("nu_conv", &nu_conv_cuda);
  m.impl("nu_conv_backward", &nu_conv_backward_cuda);
}

}  // namespace deblur_ops
