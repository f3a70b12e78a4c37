// cuemu: what tests use to configure the emulated device and to inspect what
// the code under test did (host side only).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "vector_types.h"

namespace cuemu {

// ------------------------------------------------------------- the device
// Device `dev` (0 <= dev < kMaxDevices) has `sms` streaming multiprocessors
// and runs at most `max_threads_per_sm` threads per SM (this sets what
// cudaOccupancyMaxActiveBlocksPerMultiprocessor answers). Code under test may
// cache attributes per device (pynas's sm_count does), so a device must be
// configured before its first use and never changed after: use another
// device id for another size. Unconfigured devices: 4 SMs, 2048 threads/SM.
constexpr int kMaxDevices = 16;
void configure_device(int dev, int sms, int max_threads_per_sm = 2048);

// The flat-index limit of the launchers' 32-bit index variants (the value of
// PYNAS_CUDA_INDEX32_LIMIT in the emulated build). Default INT32_MAX; set it
// to 0 to make every launcher pick its int64_t variants.
void set_index32_limit(int64_t limit);
int64_t index32_limit();

// Order in which blocks of a grid and threads of a block are started:
// forward (0, 1, 2, ...) or reverse. Results of a race-free kernel do not
// depend on it.
void set_reverse_schedule(bool reverse);

// ------------------------------------------------------------- the record
// One operation enqueued on a stream: a kernel launch (also a rejected one,
// then with its error) or an asynchronous memset / memcpy.
struct Enqueued {
  enum Kind { kLaunch, kMemset, kMemcpy };
  Kind kind = kLaunch;
  const void* kernel = nullptr;  // the __global__ function (launches)
  const char* expr = "";         // the launch's kernel expression, as written
  const char* file = "";         // launch site (the original .cu, via #line)
  int line = 0;
  dim3 grid, block;
  size_t smem = 0;
  size_t param_bytes = 0;
  size_t bytes = 0;        // memset / memcpy size
  void* stream = nullptr;  // the cudaStream_t
  int error = 0;           // cudaError_t it was rejected with (0: it ran)
};
const std::vector<Enqueued>& log();

// Calls that a launcher must not make (kernels.h: no launcher synchronizes
// or allocates memory), counted since the start.
struct Counters {
  long synchronizations = 0;  // cudaDeviceSynchronize, cudaStreamSynchronize, cudaMemcpy, cudaMemset
  long allocations = 0;       // cudaMalloc, cudaFree
  long blocks_run = 0;
  long threads_run = 0;
};
Counters counters();

// A readable name of a __global__ function: from the symbol table given by
// load_kernel_symbols (lines "hexaddress demangled-name", as `nm -C` prints
// them for a non-PIE executable), else from the sanitizer's symbolizer.
std::string kernel_name(const void* kernel);
// Returns the number of symbols read (0 when the file cannot be read).
size_t load_kernel_symbols(const char* path);
// Every kernel of that table with its address, for coverage checks.
std::vector<std::pair<const void*, std::string>> kernel_symbols();

}  // namespace cuemu
