// Python binding of the selective-scan kernels: argument checks, allocation, dispatch on dtype.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <torch/extension.h>

#include <optional>
#include <vector>

#include "scan.h"

namespace {

constexpr int kMaxState = 4;

void check_cuda(const torch::Tensor& t, const char* name) {
  TORCH_CHECK(t.is_cuda(), name, " must be a CUDA tensor");
  TORCH_CHECK(t.is_contiguous(), name, " must be contiguous");
}

// Fills the shapes, the block size and the segment count shared by both directions.
ScanParams make_params(const torch::Tensor& u, const torch::Tensor& delta, const torch::Tensor& A,
                       const torch::Tensor& B, const std::optional<torch::Tensor>& delta_bias, bool softplus) {
  check_cuda(u, "u");
  check_cuda(delta, "delta");
  check_cuda(A, "A");
  check_cuda(B, "B");
  TORCH_CHECK(u.dim() == 3 && delta.sizes() == u.sizes(), "u and delta must both be (B, D, L)");
  TORCH_CHECK(delta.scalar_type() == u.scalar_type() && B.scalar_type() == u.scalar_type(),
              "u, delta and B must share a dtype");
  TORCH_CHECK(A.scalar_type() == torch::kFloat32 && A.dim() == 2 && A.size(0) == u.size(1),
              "A must be float32 (D, N)");
  TORCH_CHECK(A.size(1) >= 1 && A.size(1) <= kMaxState, "state size N must be 1..", kMaxState);
  TORCH_CHECK(B.dim() == 4 && B.size(0) == u.size(0) && B.size(2) == A.size(1) && B.size(3) == u.size(2) &&
                  u.size(1) % B.size(1) == 0,
              "B must be (B, G, N, L) with G dividing D");
  TORCH_CHECK(u.size(2) >= 1 && u.size(2) < (1LL << 30), "sequence length must be in [1, 2^30)");
  ScanParams p{};
  p.batch = u.size(0);
  p.dim = u.size(1);
  p.length = u.size(2);
  p.dstate = A.size(1);
  p.groups = B.size(1);
  p.softplus = softplus;
  // Short rows waste fewer idle threads with smaller blocks.
  p.threads = p.length <= 128 * kScanItems ? 128 : 256;
  const int seg = p.threads * kScanItems;
  p.num_segments = (p.length + seg - 1) / seg;
  p.u = u.data_ptr();
  p.delta = delta.data_ptr();
  p.A = A.data_ptr<float>();
  p.B = B.data_ptr();
  if (delta_bias.has_value()) {
    check_cuda(*delta_bias, "delta_bias");
    TORCH_CHECK(delta_bias->scalar_type() == torch::kFloat32 && delta_bias->numel() == p.dim,
                "delta_bias must be float32 (D,)");
    p.delta_bias = delta_bias->data_ptr<float>();
  }
  return p;
}

// Look-back state; the zeroed flags also hold the tile counter.
std::vector<torch::Tensor> lookback_buffers(ScanParams& p, const torch::Tensor& like) {
  if (p.num_segments == 1) return {};
  const int64_t tiles = static_cast<int64_t>(p.batch) * p.dim * p.num_segments;
  auto flags = torch::zeros({tiles + 1}, like.options().dtype(torch::kInt32));
  auto status = torch::empty({tiles * p.dstate * 3}, like.options().dtype(torch::kFloat32));
  p.flags = flags.data_ptr<int>();
  p.status = status.data_ptr<float>();
  return {flags, status};
}

template <bool kBackward>
void dispatch(const ScanParams& p, torch::ScalarType dtype) {
  auto stream = c10::cuda::getCurrentCUDAStream().stream();
  switch (dtype) {
    case torch::kFloat32: kBackward ? launch_scan_bwd<float>(p, stream) : launch_scan_fwd<float>(p, stream); break;
    case torch::kFloat16: kBackward ? launch_scan_bwd<__half>(p, stream) : launch_scan_fwd<__half>(p, stream); break;
    case torch::kBFloat16:
      kBackward ? launch_scan_bwd<__nv_bfloat16>(p, stream) : launch_scan_fwd<__nv_bfloat16>(p, stream);
      break;
    default: TORCH_CHECK(false, "selective scan supports float32, float16 and bfloat16 inputs, got ", dtype);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

torch::Tensor scan_fwd(const torch::Tensor& u, const torch::Tensor& delta, const torch::Tensor& A,
                       const torch::Tensor& B, const std::optional<torch::Tensor>& delta_bias, bool softplus) {
  const c10::cuda::CUDAGuard guard(u.device());
  ScanParams p = make_params(u, delta, A, B, delta_bias, softplus);
  auto states = torch::empty({p.batch, p.dim, p.dstate, p.length}, u.options().dtype(torch::kFloat32));
  p.states = states.data_ptr<float>();
  auto buffers = lookback_buffers(p, u);
  dispatch<false>(p, u.scalar_type());
  return states;
}

// Returns du, ddelta (input dtype) and float32 dA, dB, ddelta_bias (undefined without bias).
std::vector<torch::Tensor> scan_bwd(const torch::Tensor& u, const torch::Tensor& delta, const torch::Tensor& A,
                                    const torch::Tensor& B, const std::optional<torch::Tensor>& delta_bias,
                                    bool softplus, const torch::Tensor& states, const torch::Tensor& dstates) {
  const c10::cuda::CUDAGuard guard(u.device());
  ScanParams p = make_params(u, delta, A, B, delta_bias, softplus);
  check_cuda(states, "states");
  check_cuda(dstates, "dstates");
  const std::vector<int64_t> shape{p.batch, p.dim, p.dstate, p.length};
  TORCH_CHECK(states.sizes() == shape && states.scalar_type() == torch::kFloat32, "states must be float32 (B, D, N, L)");
  TORCH_CHECK(dstates.sizes() == shape && dstates.scalar_type() == torch::kFloat32,
              "dstates must be float32 (B, D, N, L)");
  auto du = torch::empty_like(u);
  auto ddelta = torch::empty_like(delta);
  auto dA = torch::zeros_like(A);
  auto dB = torch::zeros(B.sizes(), B.options().dtype(torch::kFloat32));
  torch::Tensor ddelta_bias;
  p.states_in = states.data_ptr<float>();
  p.dstates = dstates.data_ptr<float>();
  p.du = du.data_ptr();
  p.ddelta = ddelta.data_ptr();
  p.dA = dA.data_ptr<float>();
  p.dB = dB.data_ptr<float>();
  if (delta_bias.has_value()) {
    ddelta_bias = torch::zeros_like(*delta_bias);
    p.ddelta_bias = ddelta_bias.data_ptr<float>();
  }
  auto buffers = lookback_buffers(p, u);
  dispatch<true>(p, u.scalar_type());
  return {du, ddelta, dA, dB, ddelta_bias};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("fwd", &scan_fwd, "selective scan returning all states (B, D, N, L) float32");
  m.def("bwd", &scan_bwd, "gradients of the selective scan with respect to u, delta, A, B, delta_bias");
}
