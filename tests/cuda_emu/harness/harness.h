// Test harness of the emulated CUDA kernels: dtypes and float64 references,
// "device" buffers of exact size (AddressSanitizer sees every access past
// their end) with sentinel-filled gaps, [N, C, S] tensors in several layouts,
// the environments a case runs in (device size, index width, schedule), and
// the per-launch checks every test makes (LaunchScope).
//
// A launcher test (test_<op>.cpp) is: a list of cases, a float64 reference
// written as plain loops, and a run function that builds inputs, calls the
// launcher inside a LaunchScope and compares; a `Register` object at the end
// of the file adds it to cuemu_tests (and to run.sh).
#pragma once

#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "kernels.h"

namespace emu {

using pynas::cuda::DType;
using pynas::cuda::kBFloat16;
using pynas::cuda::kFloat16;
using pynas::cuda::kFloat32;
using pynas::cuda::kFloat64;
using pynas::cuda::NcsStrides;

// ------------------------------------------------------------- formatting
std::string strf(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

// ------------------------------------------------------------- dtypes
constexpr DType kAllDtypes[] = {kFloat64, kFloat32, kFloat16, kBFloat16};
const char* dtype_name(DType dt);
size_t dtype_size(DType dt);
// The accumulate type ("acc" in kernels.h): float64 for float64, else float32.
DType acc_dtype(DType dt);
// Unit roundoff of storing in dt (2^-53, 2^-24, 2^-11, 2^-8).
double unit_roundoff(DType dt);
// Smallest positive subnormal step of dt (absolute rounding floor).
double abs_floor(DType dt);
// The value of dt nearest to v (ties to even), computed independently of the
// emulator's intrinsics.
double round_to(DType dt, double v);
double load_elem(DType dt, const void* base, int64_t index);
void store_elem(DType dt, void* base, int64_t index, double v);  // rounds

// ------------------------------------------------------------- random
struct Rng {
  uint64_t state;
  explicit Rng(uint64_t seed) : state(seed * 0x9E3779B97F4A7C15ULL + 0x1234567ULL) {}
  uint64_t next();
  double uniform(double lo, double hi);
  int64_t below(int64_t n);  // [0, n)
};

// ------------------------------------------------------------- memory
constexpr uint8_t kSentinel = 0xff;  // NaN in every float type

// Host memory standing for device memory: exactly `bytes` after a `head` of
// bytes that belong to the allocation but not to the data (misaligned
// bases). The allocation starts 64-byte aligned; everything starts as
// kSentinel bytes.
class DevBuf {
 public:
  DevBuf(size_t bytes, size_t head = 0);
  ~DevBuf();
  DevBuf(const DevBuf&) = delete;
  DevBuf& operator=(const DevBuf&) = delete;
  void* data() const { return raw_ + head_; }
  size_t bytes() const { return bytes_; }
  size_t head() const { return head_; }
  uint8_t* raw() const { return raw_; }
  size_t raw_bytes() const { return head_ + bytes_; }
  std::vector<uint8_t> snapshot() const { return std::vector<uint8_t>(raw_, raw_ + raw_bytes()); }
  bool unchanged_since(const std::vector<uint8_t>& snap) const;

 private:
  uint8_t* raw_;
  size_t head_, bytes_;
};

// ------------------------------------------------------------- tensors
enum class Layout {
  kContig,             // strides (c*s, s, 1)
  kChannelsLast,       // (s*c, 1, c): channels innermost
  kPadded,             // (c*(s+8)+8, s+8, 1): gaps, still 16-byte packable when s is
  kPaddedOdd,          // (c*(s+3)+1, s+3, 1): gaps, never packable
  kStrideS2,           // (2*c*s, 2*s, 2)
  kChannelsLastPadded, // (s*(c+3), 1, c+3)
  kBatchInner,         // (s, n*s, 1): samples inside channels
  kMisaligned,         // contiguous, base one element past 16-byte alignment
};
const char* layout_name(Layout l);

// A [n, c, s] tensor of dtype dt in "device" memory; bytes of the allocation
// that hold no element are gaps (kSentinel, must stay so).
class Tensor {
 public:
  Tensor(DType dt, int64_t n, int64_t c, int64_t s, Layout layout);
  // A flat array of `count` elements (contiguous or misaligned).
  static Tensor flat(DType dt, int64_t count, bool misaligned = false);
  DType dtype() const { return dt_; }
  int64_t n() const { return n_; }
  int64_t c() const { return c_; }
  int64_t s() const { return s_; }
  int64_t numel() const { return n_ * c_ * s_; }
  Layout layout() const { return layout_; }
  const NcsStrides& strides() const { return st_; }
  void* data() const { return buf_->data(); }
  int64_t offset(int64_t i, int64_t j, int64_t k) const { return i * st_.n + j * st_.c + k * st_.s; }
  double get(int64_t i, int64_t j, int64_t k) const { return load_elem(dt_, data(), offset(i, j, k)); }
  void set(int64_t i, int64_t j, int64_t k, double v) { store_elem(dt_, data(), offset(i, j, k), v); }
  double at(int64_t flat) const { return load_elem(dt_, data(), flat); }  // flat tensors
  void put(int64_t flat, double v) { store_elem(dt_, data(), flat, v); }
  uint64_t bits(int64_t i, int64_t j, int64_t k) const;  // raw element bits
  // Uniform values in [lo, hi), rounded to the dtype.
  void fill_random(Rng& rng, double lo, double hi);
  void fill_value(double v);
  // Every gap byte still kSentinel.
  bool gaps_intact() const;
  std::vector<uint8_t> snapshot() const { return buf_->snapshot(); }
  bool unchanged_since(const std::vector<uint8_t>& snap) const { return buf_->unchanged_since(snap); }
  std::string describe() const;

 private:
  DType dt_;
  int64_t n_, c_, s_;
  Layout layout_;
  NcsStrides st_;
  std::shared_ptr<DevBuf> buf_;
};

// int64 array on the "device".
class I64Array {
 public:
  explicit I64Array(const std::vector<int64_t>& v);
  const int64_t* data() const { return static_cast<const int64_t*>(buf_->data()); }
  int64_t size() const { return size_; }

 private:
  std::shared_ptr<DevBuf> buf_;
  int64_t size_;
};

// ------------------------------------------------------------- environments
// Where a case runs: the emulated device (SM count and occupancy, which size
// the grids: few SMs make grid-stride loops iterate), whether the launchers
// must pick their int64_t index variants, and the schedule order.
struct Env {
  const char* name;
  int device;
  bool int64_index;
  bool reverse;
};
// The environments (devices are configured by configure_envs()).
const std::vector<Env>& all_envs();
void configure_envs();
// Makes env current (device, index limit, schedule).
void enter(const Env& env);
// Environments case number `i` runs in (all of them: the tests are small).
std::vector<Env> envs_for_case(int i);

// ------------------------------------------------------------- results
class Suite {
 public:
  explicit Suite(std::string name) : name_(std::move(name)) {}
  const std::string& name() const { return name_; }
  // Records a failure (printed at once).
  void fail(const std::string& context, const std::string& what);
  void count_run() { ++runs_; }
  void count_check(long n = 1) { checks_ += n; }
  int failures() const { return failures_; }
  long runs() const { return runs_; }
  long checks() const { return checks_; }
  void note(const std::string& coverage) { notes_.push_back(coverage); }
  const std::vector<std::string>& notes() const { return notes_; }

 private:
  std::string name_;
  int failures_ = 0;
  long runs_ = 0;
  long checks_ = 0;
  std::vector<std::string> notes_;
};

// Compares values one by one, printing the first few mismatches.
class Compare {
 public:
  Compare(Suite& suite, std::string context, std::string what)
      : suite_(suite), context_(std::move(context)), what_(std::move(what)) {}
  ~Compare() { finish(); }
  // |got - want| <= tol, and got is NaN exactly when want is.
  void close(const std::string& where, double got, double want, double tol);
  void exact_bits(const std::string& where, uint64_t got, uint64_t want);
  void truth(const std::string& where, bool ok, const std::string& detail);
  void passed(long n = 1) { checked_ += n; }  // checks made elsewhere that passed
  bool ok() const { return bad_ == 0; }
  void finish();

 private:
  Suite& suite_;
  std::string context_, what_;
  long bad_ = 0, checked_ = 0;
  std::string first_;
  bool done_ = false;
};

// Tolerance of a value computed from `terms` (sum of |term|: `magnitude`)
// accumulated in the acc type of dt and stored once in dt; `ops` is the
// number of roundings in acc along the way.
double tolerance(DType dt, double value, double magnitude, double ops);

// ------------------------------------------------------------- launch checks
// Wraps one launcher call: makes a fresh stream, and afterwards checks that
// the launcher returned cudaSuccess, that cudaGetLastError() is clear, that
// everything it enqueued went to that stream and was accepted (no rejected
// launch), and that it neither synchronized nor allocated.
class LaunchScope {
 public:
  enum Expect { kAnyLaunches, kSomeLaunches, kNoLaunches };
  LaunchScope(Suite& suite, std::string context);
  ~LaunchScope();
  cudaStream_t stream() const { return stream_; }
  // Returns what was enqueued (kernel launches and memsets).
  std::vector<cuemu::Enqueued> finish(cudaError_t returned, Expect expect = kSomeLaunches);

 private:
  Suite& suite_;
  std::string context_;
  cudaStream_t stream_ = nullptr;
  size_t mark_ = 0;
  cuemu::Counters counters_;
};

// Fails unless every tensor's gaps are intact and every input is unchanged.
void check_untouched(Suite& suite, const std::string& context, const std::vector<const Tensor*>& outputs,
                     const std::vector<std::pair<const Tensor*, std::vector<uint8_t>>>& inputs);

// ------------------------------------------------------------- registry
using TestFn = std::function<void(Suite&)>;
struct TestEntry {
  const char* name;
  const char* launcher;  // what it covers, for the summary
  TestFn fn;
};
std::vector<TestEntry>& registry();
struct Register {
  Register(const char* name, const char* launcher, TestFn fn);
};

}  // namespace emu
