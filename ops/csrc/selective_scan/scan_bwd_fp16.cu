// bwd kernels for fp16 inputs (one file per direction and dtype: parallel compiles).
#include "scan_kernels.cuh"

template <>
void launch_scan_bwd<__half>(const ScanParams& params, cudaStream_t stream) {
  scan::launch<__half>(params, /*backward=*/true, stream);
}
