// Shared declarations of the selective-scan extension: the parameter block the Python
// binding fills and one launcher per (direction, input dtype), each in its own .cu so
// that the six compile in parallel.
#pragma once

#include <cuda_runtime.h>

struct ScanParams {
  int batch, dim, dstate, length, groups;  // B: (batch, groups, dstate, length)
  int num_segments;                        // segments of kThreads * kItems steps per row
  int threads;                             // block size chosen for this length
  bool softplus;
  const void* u;            // (batch, dim, length), input dtype
  const void* delta;        // (batch, dim, length), input dtype
  const float* A;           // (dim, dstate)
  const void* B;            // (batch, groups, dstate, length), input dtype
  const float* delta_bias;  // (dim,) or nullptr
  // Decoupled look-back between the segments of one row: flags[0] hands out tile ids
  // in launch order, flags[1 + tile] says what status[tile] holds (1 aggregate, 2 prefix).
  int* flags;
  float* status;            // (rows * segments, dstate, 3): aggregate a, aggregate b, inclusive state
  // forward output
  float* states;            // (batch, dim, dstate, length)
  // backward
  const float* states_in;   // forward states, read for h_{t-1}
  const float* dstates;     // (batch, dim, dstate, length)
  void* du;
  void* ddelta;
  float* dA;                // (dim, dstate), accumulated
  float* dB;                // (batch, groups, dstate, length), accumulated
  float* ddelta_bias;       // (dim,) accumulated, or nullptr
};

// Items per thread: one 16-byte vector of 16-bit inputs, two of fp32.
constexpr int kScanItems = 8;

template <typename T>
void launch_scan_fwd(const ScanParams& params, cudaStream_t stream);

template <typename T>
void launch_scan_bwd(const ScanParams& params, cudaStream_t stream);
