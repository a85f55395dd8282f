// fwd kernels for bf16 inputs (one file per direction and dtype: parallel compiles).
#include "scan_kernels.cuh"

template <>
void launch_scan_fwd<__nv_bfloat16>(const ScanParams& params, cudaStream_t stream) {
  scan::launch<__nv_bfloat16>(params, /*backward=*/false, stream);
}
