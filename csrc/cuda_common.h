// Device helpers shared by the CUDA kernels (included from .cu files only).
#pragma once

#include <cstdint>
#include <initializer_list>
#include <type_traits>

#include "ganinv_ops.h"

namespace ganinv {

// N elements moved by one vector load/store: 16 bytes for N = 16 / sizeof(T), one element for N = 1.
template <typename T, int N>
struct alignas(sizeof(T) * N) Pack {
  T v[N];
};

// The sum of v over the block (blockDim.x a multiple of 32), valid in thread 0. Every thread must call it;
// `warp_sums` (shared memory for blockDim.x / 32 values: callers size it for their largest block) may be reused by
// the next call.
template <typename T>
__device__ __forceinline__ T block_sum(T v, T* warp_sums) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  const int lane = int(threadIdx.x) % 32, warp = int(threadIdx.x) / 32;
  __syncthreads();  // the previous call's reads of warp_sums are done
  if (lane == 0) warp_sums[warp] = v;
  __syncthreads();
  T total = T(0);
  if (threadIdx.x == 0)
    for (int w = 0; w < int(blockDim.x) / 32; ++w) total += warp_sums[w];
  return total;
}

// dst[k] += v[k] for k < N, atomically per element. On sm_90 float runs of 4 go as one vector atomic (dst must then
// be 16-byte aligned: callers pass N a multiple of 4 only at such addresses).
template <int N, typename T>
__device__ __forceinline__ void atomic_add_n(T* dst, const T (&v)[N]) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  constexpr bool vec = std::is_same_v<T, float> && N % 4 == 0;
#else
  constexpr bool vec = false;
#endif
  if constexpr (vec) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#pragma unroll
    for (int k = 0; k < N; k += 4)
      atomicAdd(reinterpret_cast<float4*>(dst + k), make_float4(v[k], v[k + 1], v[k + 2], v[k + 3]));
#endif
  } else {
#pragma unroll
    for (int k = 0; k < N; ++k) atomicAdd(dst + k, v[k]);
  }
}

// bias_act at one element in the compute type: the clamped value gain * act(s) (order 0), or gv times its
// derivative of that order, zero where the clamp cut the value (torch.clamp's gradient mask).
template <int A, typename acc_t>
__device__ __forceinline__ acc_t ba_element(acc_t s, acc_t gv, int order, acc_t alpha, acc_t gain, acc_t clamp,
                                            bool clamped) {
  const acc_t v = act_eval<acc_t>(A, 0, s, alpha) * gain;
  if (order == 0) return clamped ? (v < -clamp ? -clamp : v > clamp ? clamp : v) : v;
  const bool pass = !clamped || (v <= clamp && v >= -clamp);
  return pass ? gv * act_eval<acc_t>(A, order, s, alpha) * gain : acc_t(0);
}

// Host: whether every pointer (null: absent, skipped) is 16-byte aligned, as the packed kernels' loads need.
inline bool aligned16(std::initializer_list<const void*> ptrs) {
  for (const void* p : ptrs)
    if (p != nullptr && reinterpret_cast<std::uintptr_t>(p) % 16 != 0) return false;
  return true;
}

}  // namespace ganinv
