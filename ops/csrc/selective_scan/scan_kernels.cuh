// Selective-scan kernels that return (forward) or consume (backward) every hidden state.
//
// Each row (b, d) is cut into segments of kThreads * kScanItems steps, one block each.
// The recurrence h_t = a_t h_{t-1} + x_t is a scan of affine maps (a, x); a block scans its
// segment (thread-serial over kScanItems, warp shuffles, then warp totals), and gets the
// state entering its segment from the segments before it by decoupled look-back: blocks
// publish their segment's aggregate map as soon as it is known and their inclusive state
// once their carry is known, so the row needs one pass over memory whatever its length; a
// warp reads 32 predecessors at a time, so the walk back is short even on long rows.
// Tile ids come from an atomic counter in launch order, so every segment a block waits on
// belongs to a block that is already running: no deadlock whatever the scheduling.
// The backward pass is the same scan run from the end of the row (adjoint recurrence
// g_t = a_{t+1} g_{t+1} + dstates_t).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "scan.h"

namespace scan {

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T> __device__ __forceinline__ T from_float(float v);
template <> __device__ __forceinline__ float from_float<float>(float v) { return v; }
template <> __device__ __forceinline__ __half from_float<__half>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

// Loads kScanItems consecutive elements starting at t0 (< length or not). The vector path
// needs length % kScanItems == 0, so a thread's items are all in range or all out.
template <bool kVec, typename T>
__device__ __forceinline__ void load_items(const T* row, int t0, int length, float (&out)[kScanItems]) {
  if constexpr (kVec) {
    if (t0 < length) {
      constexpr int kPerVec = 16 / sizeof(T);
      T buf[kScanItems];
#pragma unroll
      for (int v = 0; v < kScanItems / kPerVec; ++v)
        reinterpret_cast<uint4*>(buf)[v] = reinterpret_cast<const uint4*>(row + t0)[v];
#pragma unroll
      for (int k = 0; k < kScanItems; ++k) out[k] = to_float(buf[k]);
    } else {
#pragma unroll
      for (int k = 0; k < kScanItems; ++k) out[k] = 0.f;
    }
  } else {
#pragma unroll
    for (int k = 0; k < kScanItems; ++k) out[k] = t0 + k < length ? to_float(row[t0 + k]) : 0.f;
  }
}

template <bool kVec, typename T>
__device__ __forceinline__ void store_items(T* row, int t0, int length, const float (&in)[kScanItems]) {
  if constexpr (kVec) {
    if (t0 < length) {
      constexpr int kPerVec = 16 / sizeof(T);
      T buf[kScanItems];
#pragma unroll
      for (int k = 0; k < kScanItems; ++k) buf[k] = from_float<T>(in[k]);
#pragma unroll
      for (int v = 0; v < kScanItems / kPerVec; ++v)
        reinterpret_cast<uint4*>(row + t0)[v] = reinterpret_cast<const uint4*>(buf)[v];
    }
  } else {
#pragma unroll
    for (int k = 0; k < kScanItems; ++k)
      if (t0 + k < length) row[t0 + k] = from_float<T>(in[k]);
  }
}

__device__ __forceinline__ float softplus(float x) { return x > 20.f ? x : log1pf(__expf(x)); }
__device__ __forceinline__ float sigmoid(float x) { return 1.f / (1.f + __expf(-x)); }

// Affine map h -> a h + b; compose(first, then) applies `first` and then `then`.
struct Map {
  float a, b;
};
__device__ __forceinline__ Map compose(Map first, Map then) { return {then.a * first.a, then.a * first.b + then.b}; }

// Ordered composition of one map per lane (lane 0 first), returned to every lane.
__device__ __forceinline__ Map warp_compose(Map m) {
#pragma unroll
  for (int off = 1; off < 32; off *= 2) {
    const Map prev{__shfl_up_sync(0xffffffffu, m.a, off), __shfl_up_sync(0xffffffffu, m.b, off)};
    if (threadIdx.x % 32 >= off) m = compose(prev, m);
  }
  return Map{__shfl_sync(0xffffffffu, m.a, 31), __shfl_sync(0xffffffffu, m.b, 31)};
}

// Run by the first warp: publishes the segment's aggregate, then reads the 32 segments
// before it at once (one per lane) until one of them has its inclusive state, and
// publishes its own. A segment with a known state acts as the constant map h -> state, so
// the incoming state is the composed maps applied to 0. Segment 0 always publishes a
// state, so the walk ends within the row.
template <int kN>
__device__ __forceinline__ void look_back(const ScanParams& p, int row, int scan_seg, const Map (&block_total)[kN],
                                          float (&carry)[kN]) {
  const int lane = threadIdx.x % 32;
  const long row_first = static_cast<long>(row) * p.num_segments;
  const long tile = row_first + scan_seg;
  volatile int* flags = p.flags + 1;
  float* status = p.status;
  if (scan_seg == 0) {
    if (lane == 0) {
      for (int n = 0; n < kN; ++n) carry[n] = 0.f;
      if (p.num_segments > 1) {
        for (int n = 0; n < kN; ++n) status[(tile * kN + n) * 3 + 2] = block_total[n].b;
        __threadfence();
        flags[tile] = 2;
      }
    }
    return;
  }
  if (lane == 0) {
    for (int n = 0; n < kN; ++n) {
      status[(tile * kN + n) * 3 + 0] = block_total[n].a;
      status[(tile * kN + n) * 3 + 1] = block_total[n].b;
    }
    __threadfence();
    flags[tile] = 1;
  }
  Map between[kN];  // maps of the segments already read, composed, up to ours
  for (int n = 0; n < kN; ++n) between[n] = Map{1.f, 0.f};
  for (long window_end = tile;; window_end -= 32) {
    const long pred = window_end - 32 + lane;
    const bool in_row = pred >= row_first;
    int flag = 0;
    if (in_row)
      while ((flag = flags[pred]) == 0) __nanosleep(32);
    __threadfence();
    const unsigned with_state = __ballot_sync(0xffffffffu, in_row && flag == 2);
    const int stop = with_state ? 31 - __clz(with_state) : -1;  // nearest segment with a state
    for (int n = 0; n < kN; ++n) {
      Map m{1.f, 0.f};
      if (lane == stop) m = Map{0.f, __ldcg(status + (pred * kN + n) * 3 + 2)};
      else if (in_row && lane > stop)
        m = Map{__ldcg(status + (pred * kN + n) * 3 + 0), __ldcg(status + (pred * kN + n) * 3 + 1)};
      between[n] = compose(warp_compose(m), between[n]);
    }
    if (stop >= 0) break;
  }
  if (lane == 0) {
    for (int n = 0; n < kN; ++n) {
      carry[n] = between[n].b;
      status[(tile * kN + n) * 3 + 2] = block_total[n].a * carry[n] + block_total[n].b;
    }
    __threadfence();
    flags[tile] = 2;
  }
}

template <int kThreads, int kN>
struct BlockScanStorage {
  Map warp_prefix[kThreads / 32][kN];  // warp totals, then exclusive warp prefixes (scan order)
  Map block_total[kN];
  float carry[kN];                     // state entering the segment (scan order)
  int tile;
};

// Turns each thread's aggregate `agg[n]` (its items composed in scan order) into the map
// that takes the segment's incoming state to the state before the thread's first item,
// then resolves the segment's incoming state by look-back. kReverse runs the scan from the
// last thread (and the last segment) to the first. Returns in `prefix` the thread's
// incoming state per n.
template <int kThreads, int kN, bool kReverse>
__device__ __forceinline__ void block_scan(const ScanParams& p, int row, int scan_seg, const Map (&agg)[kN],
                                           float (&prefix)[kN], BlockScanStorage<kThreads, kN>& smem) {
  constexpr int kWarps = kThreads / 32;
  const int lane = threadIdx.x % 32;
  const int scan_lane = kReverse ? 31 - lane : lane;
  const int scan_warp = kReverse ? kWarps - 1 - threadIdx.x / 32 : threadIdx.x / 32;
  Map lane_excl[kN];
#pragma unroll
  for (int n = 0; n < kN; ++n) {
    Map inc = agg[n];
#pragma unroll
    for (int off = 1; off < 32; off *= 2) {
      Map prev;
      prev.a = kReverse ? __shfl_down_sync(0xffffffffu, inc.a, off) : __shfl_up_sync(0xffffffffu, inc.a, off);
      prev.b = kReverse ? __shfl_down_sync(0xffffffffu, inc.b, off) : __shfl_up_sync(0xffffffffu, inc.b, off);
      if (scan_lane >= off) inc = compose(prev, inc);
    }
    Map before;
    before.a = kReverse ? __shfl_down_sync(0xffffffffu, inc.a, 1) : __shfl_up_sync(0xffffffffu, inc.a, 1);
    before.b = kReverse ? __shfl_down_sync(0xffffffffu, inc.b, 1) : __shfl_up_sync(0xffffffffu, inc.b, 1);
    lane_excl[n] = scan_lane == 0 ? Map{1.f, 0.f} : before;
    if (scan_lane == 31) smem.warp_prefix[scan_warp][n] = inc;
  }
  __syncthreads();
  if (threadIdx.x < kN) {
    const int n = threadIdx.x;
    Map running{1.f, 0.f};
    for (int w = 0; w < kWarps; ++w) {
      const Map total = smem.warp_prefix[w][n];
      smem.warp_prefix[w][n] = running;
      running = compose(running, total);
    }
    smem.block_total[n] = running;
  }
  __syncthreads();
  if (threadIdx.x < 32) look_back<kN>(p, row, scan_seg, smem.block_total, smem.carry);
  __syncthreads();
#pragma unroll
  for (int n = 0; n < kN; ++n) {
    const Map warp_excl = smem.warp_prefix[scan_warp][n];
    const float at_warp = warp_excl.a * smem.carry[n] + warp_excl.b;
    prefix[n] = lane_excl[n].a * at_warp + lane_excl[n].b;
  }
}

// The block's tile: in launch order through the counter when segments wait on each other.
template <int kThreads, int kN>
__device__ __forceinline__ int acquire_tile(const ScanParams& p, BlockScanStorage<kThreads, kN>& smem) {
  if (p.num_segments == 1) return blockIdx.x;
  if (threadIdx.x == 0) smem.tile = atomicAdd(p.flags, 1);
  __syncthreads();
  return smem.tile;
}

template <int kThreads, int kN, bool kVec, typename T>
__global__ void __launch_bounds__(kThreads) scan_fwd_kernel(ScanParams p) {
  __shared__ BlockScanStorage<kThreads, kN> smem;
  const int tile = acquire_tile(p, smem);
  const int row = tile / p.num_segments, seg = tile % p.num_segments;
  const int d = row % p.dim, b = row / p.dim;
  const int group = d / (p.dim / p.groups);
  const long row_off = static_cast<long>(row) * p.length;
  const int t0 = (seg * kThreads + threadIdx.x) * kScanItems;

  float u[kScanItems], dt[kScanItems];
  load_items<kVec>(static_cast<const T*>(p.u) + row_off, t0, p.length, u);
  load_items<kVec>(static_cast<const T*>(p.delta) + row_off, t0, p.length, dt);
  const float bias = p.delta_bias ? p.delta_bias[d] : 0.f;
#pragma unroll
  for (int k = 0; k < kScanItems; ++k) {
    const float v = dt[k] + bias;
    // steps past the end get dt = 0: the identity map, so they change no state
    dt[k] = t0 + k < p.length ? (p.softplus ? softplus(v) : v) : 0.f;
  }
  float A[kN], Bv[kN][kScanItems];
  Map agg[kN];
#pragma unroll
  for (int n = 0; n < kN; ++n) {
    A[n] = p.A[d * kN + n];
    const long b_off = ((static_cast<long>(b) * p.groups + group) * kN + n) * p.length;
    load_items<kVec>(static_cast<const T*>(p.B) + b_off, t0, p.length, Bv[n]);
    agg[n] = Map{1.f, 0.f};
#pragma unroll
    for (int k = 0; k < kScanItems; ++k)
      agg[n] = compose(agg[n], Map{__expf(dt[k] * A[n]), dt[k] * Bv[n][k] * u[k]});
  }
  float h[kN];
  block_scan<kThreads, kN, false>(p, row, seg, agg, h, smem);
#pragma unroll
  for (int n = 0; n < kN; ++n) {
    float out[kScanItems];
#pragma unroll
    for (int k = 0; k < kScanItems; ++k) {
      h[n] = __expf(dt[k] * A[n]) * h[n] + dt[k] * Bv[n][k] * u[k];
      out[k] = h[n];
    }
    store_items<kVec>(p.states + (row_off * kN + static_cast<long>(n) * p.length), t0, p.length, out);
  }
}

template <int kThreads>
__device__ __forceinline__ float block_sum(float v, float* scratch) {
#pragma unroll
  for (int off = 16; off > 0; off /= 2) v += __shfl_xor_sync(0xffffffffu, v, off);
  __syncthreads();  // scratch may still be read by a previous call
  if (threadIdx.x % 32 == 0) scratch[threadIdx.x / 32] = v;
  __syncthreads();
  float total = 0.f;
  if (threadIdx.x == 0)
    for (int w = 0; w < kThreads / 32; ++w) total += scratch[w];
  return total;  // valid in thread 0
}

template <int kThreads, int kN, bool kVec, typename T>
__global__ void __launch_bounds__(kThreads) scan_bwd_kernel(ScanParams p) {
  __shared__ BlockScanStorage<kThreads, kN> smem;
  // dB contributions of the segment, staged so that the atomics of a warp are contiguous
  __shared__ float dB_stage[kN][kThreads * kScanItems];
  __shared__ float reduce_scratch[kThreads / 32];
  const int tile = acquire_tile(p, smem);
  const int row = tile / p.num_segments, scan_seg = tile % p.num_segments;
  const int seg = p.num_segments - 1 - scan_seg;
  const int d = row % p.dim, b = row / p.dim;
  const int group = d / (p.dim / p.groups);
  const long row_off = static_cast<long>(row) * p.length;
  const int t0 = (seg * kThreads + threadIdx.x) * kScanItems;

  float u[kScanItems], raw[kScanItems], dt[kScanItems];
  load_items<kVec>(static_cast<const T*>(p.u) + row_off, t0, p.length, u);
  load_items<kVec>(static_cast<const T*>(p.delta) + row_off, t0, p.length, raw);
  const float bias = p.delta_bias ? p.delta_bias[d] : 0.f;
  const int t_next = t0 + kScanItems;
  // dt one step past the thread's items, for a_{t+1}; 0 past the end (g there is 0 anyway)
  float dt_next = 0.f;
  if (t_next < p.length) {
    const float v = to_float(static_cast<const T*>(p.delta)[row_off + t_next]) + bias;
    dt_next = p.softplus ? softplus(v) : v;
  }
#pragma unroll
  for (int k = 0; k < kScanItems; ++k) {
    raw[k] += bias;
    dt[k] = t0 + k < p.length ? (p.softplus ? softplus(raw[k]) : raw[k]) : 0.f;
  }

  float A[kN], Bv[kN][kScanItems], ds[kN][kScanItems];
  Map agg[kN];
#pragma unroll
  for (int n = 0; n < kN; ++n) {
    A[n] = p.A[d * kN + n];
    const long b_off = ((static_cast<long>(b) * p.groups + group) * kN + n) * p.length;
    load_items<kVec>(static_cast<const T*>(p.B) + b_off, t0, p.length, Bv[n]);
    load_items<kVec>(p.dstates + row_off * kN + static_cast<long>(n) * p.length, t0, p.length, ds[n]);
    agg[n] = Map{1.f, 0.f};
#pragma unroll
    for (int k = kScanItems - 1; k >= 0; --k) {
      const float a_next = __expf((k + 1 < kScanItems ? dt[k + 1] : dt_next) * A[n]);
      agg[n] = compose(agg[n], Map{a_next, ds[n][k]});
    }
  }
  float g[kN];
  block_scan<kThreads, kN, true>(p, row, scan_seg, agg, g, smem);

  float du[kScanItems], ddt[kScanItems];
#pragma unroll
  for (int k = 0; k < kScanItems; ++k) du[k] = ddt[k] = 0.f;
  float dA[kN];
#pragma unroll
  for (int n = 0; n < kN; ++n) {
    float h[kScanItems];
    const float* states_row = p.states_in + row_off * kN + static_cast<long>(n) * p.length;
    load_items<kVec>(states_row, t0, p.length, h);
    const float h_before = t0 > 0 && t0 - 1 < p.length ? states_row[t0 - 1] : 0.f;
    dA[n] = 0.f;
#pragma unroll
    for (int k = kScanItems - 1; k >= 0; --k) {
      const float a_next = __expf((k + 1 < kScanItems ? dt[k + 1] : dt_next) * A[n]);
      g[n] = a_next * g[n] + ds[n][k];
      const float a = __expf(dt[k] * A[n]);
      const float h_prev = k > 0 ? h[k - 1] : h_before;
      const float dh_da = g[n] * h_prev * a;  // dL/d(dt A) through a_t
      ddt[k] += g[n] * Bv[n][k] * u[k] + dh_da * A[n];
      du[k] += g[n] * dt[k] * Bv[n][k];
      dA[n] += dh_da * dt[k];
      dB_stage[n][threadIdx.x * kScanItems + k] = g[n] * dt[k] * u[k];
    }
  }
  float dbias = 0.f;
#pragma unroll
  for (int k = 0; k < kScanItems; ++k) {
    if (p.softplus) ddt[k] *= sigmoid(raw[k]);
    if (t0 + k < p.length) dbias += ddt[k];
  }
  store_items<kVec>(static_cast<T*>(p.du) + row_off, t0, p.length, du);
  store_items<kVec>(static_cast<T*>(p.ddelta) + row_off, t0, p.length, ddt);

  __syncthreads();
  const int seg_start = seg * kThreads * kScanItems;
#pragma unroll
  for (int n = 0; n < kN; ++n) {
    float* dB_row = p.dB + ((static_cast<long>(b) * p.groups + group) * kN + n) * p.length;
    for (int i = threadIdx.x; i < kThreads * kScanItems && seg_start + i < p.length; i += kThreads)
      atomicAdd(dB_row + seg_start + i, dB_stage[n][i]);
  }
#pragma unroll
  for (int n = 0; n < kN; ++n) {
    const float total = block_sum<kThreads>(dA[n], reduce_scratch);
    if (threadIdx.x == 0) atomicAdd(p.dA + d * kN + n, total);
  }
  if (p.ddelta_bias) {
    const float total = block_sum<kThreads>(dbias, reduce_scratch);
    if (threadIdx.x == 0) atomicAdd(p.ddelta_bias + d, total);
  }
}

template <int kThreads, int kN, typename T>
void launch_with(const ScanParams& p, bool backward, cudaStream_t stream) {
  const bool vec = p.length % kScanItems == 0;
  const dim3 grid(static_cast<unsigned>(p.batch) * p.dim * p.num_segments);
  if (backward) {
    if (vec) scan_bwd_kernel<kThreads, kN, true, T><<<grid, kThreads, 0, stream>>>(p);
    else scan_bwd_kernel<kThreads, kN, false, T><<<grid, kThreads, 0, stream>>>(p);
  } else {
    if (vec) scan_fwd_kernel<kThreads, kN, true, T><<<grid, kThreads, 0, stream>>>(p);
    else scan_fwd_kernel<kThreads, kN, false, T><<<grid, kThreads, 0, stream>>>(p);
  }
}

template <int kThreads, typename T>
void launch_threads(const ScanParams& p, bool backward, cudaStream_t stream) {
  switch (p.dstate) {
    case 1: return launch_with<kThreads, 1, T>(p, backward, stream);
    case 2: return launch_with<kThreads, 2, T>(p, backward, stream);
    case 3: return launch_with<kThreads, 3, T>(p, backward, stream);
    default: return launch_with<kThreads, 4, T>(p, backward, stream);
  }
}

template <typename T>
void launch(const ScanParams& p, bool backward, cudaStream_t stream) {
  if (p.threads == 128) launch_threads<128, T>(p, backward, stream);
  else launch_threads<256, T>(p, backward, stream);
}

}  // namespace scan
