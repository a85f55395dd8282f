// bwd kernels for fp32 inputs (one file per direction and dtype: parallel compiles).
#include "scan_kernels.cuh"

template <>
void launch_scan_bwd<float>(const ScanParams& params, cudaStream_t stream) {
  scan::launch<float>(params, /*backward=*/true, stream);
}
