// Device helpers shared by the CUDA kernels (included from .cu files only).
#pragma once

#include <cstdint>
#include <type_traits>

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

}  // namespace ganinv
