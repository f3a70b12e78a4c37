#include "harness.h"

#include <algorithm>
#include <cstdarg>
#include <cstdlib>
#include <cstring>

namespace emu {

std::string strf(const char* fmt, ...) {
  char buf[2048];
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  return buf;
}

// ------------------------------------------------------------- dtypes
const char* dtype_name(DType dt) {
  switch (dt) {
    case kFloat64:
      return "f64";
    case kFloat32:
      return "f32";
    case kFloat16:
      return "f16";
    case kBFloat16:
      return "bf16";
  }
  return "?";
}

size_t dtype_size(DType dt) { return dt == kFloat64 ? 8 : dt == kFloat32 ? 4 : 2; }
DType acc_dtype(DType dt) { return dt == kFloat64 ? kFloat64 : kFloat32; }

double unit_roundoff(DType dt) {
  switch (dt) {
    case kFloat64:
      return std::ldexp(1.0, -53);
    case kFloat32:
      return std::ldexp(1.0, -24);
    case kFloat16:
      return std::ldexp(1.0, -11);
    case kBFloat16:
      return std::ldexp(1.0, -8);
  }
  return 0;
}

double abs_floor(DType dt) {
  switch (dt) {
    case kFloat64:
      return 1e-300;
    case kFloat32:
      return std::ldexp(1.0, -149);
    case kFloat16:
      return std::ldexp(1.0, -24);
    case kBFloat16:
      return std::ldexp(1.0, -133);
  }
  return 0;
}

namespace {
// Nearest value with `bits` significant bits, ties to even (normal range).
double round_sig(double v, int bits) {
  if (v == 0 || !std::isfinite(v)) return v;
  int e;
  const double m = std::frexp(v, &e);  // |m| in [0.5, 1)
  return std::ldexp(std::nearbyint(std::ldexp(m, bits)), e - bits);
}
}  // namespace

double round_to(DType dt, double v) {
  switch (dt) {
    case kFloat64:
      return v;
    case kFloat32:
      return static_cast<double>(static_cast<float>(v));
    case kFloat16:
#if defined(__FLT16_MAX__)
      return static_cast<double>(static_cast<_Float16>(v));
#else
      return round_sig(v, 11);
#endif
    case kBFloat16:
      return round_sig(v, 8);
  }
  return v;
}

double load_elem(DType dt, const void* base, int64_t index) {
  const char* p = static_cast<const char*>(base) + index * static_cast<int64_t>(dtype_size(dt));
  switch (dt) {
    case kFloat64: {
      double v;
      std::memcpy(&v, p, 8);
      return v;
    }
    case kFloat32: {
      float v;
      std::memcpy(&v, p, 4);
      return v;
    }
    case kFloat16: {
#if defined(__FLT16_MAX__)
      _Float16 h;
      std::memcpy(&h, p, 2);
      return static_cast<double>(h);
#else
      uint16_t h;
      std::memcpy(&h, p, 2);
      const int e = (h >> 10) & 31, m = h & 1023;
      const double sgn = (h & 0x8000) ? -1.0 : 1.0;
      if (e == 31) return m ? NAN : sgn * INFINITY;
      return sgn * (e ? std::ldexp(1024.0 + m, e - 25) : std::ldexp(static_cast<double>(m), -24));
#endif
    }
    case kBFloat16: {
      uint16_t b;
      std::memcpy(&b, p, 2);
      const uint32_t u = static_cast<uint32_t>(b) << 16;
      float f;
      std::memcpy(&f, &u, 4);
      return f;
    }
  }
  return 0;
}

void store_elem(DType dt, void* base, int64_t index, double v) {
  char* p = static_cast<char*>(base) + index * static_cast<int64_t>(dtype_size(dt));
  switch (dt) {
    case kFloat64:
      std::memcpy(p, &v, 8);
      return;
    case kFloat32: {
      const float f = static_cast<float>(v);
      std::memcpy(p, &f, 4);
      return;
    }
    case kFloat16: {
#if defined(__FLT16_MAX__)
      const _Float16 h = static_cast<_Float16>(v);
      std::memcpy(p, &h, 2);
#else
      const double r = round_to(kFloat16, v);  // normal range only
      int e;
      const double m = std::frexp(std::fabs(r), &e);
      uint16_t h = r < 0 ? 0x8000 : 0;
      if (r != 0) h |= static_cast<uint16_t>(((e + 14) << 10) | (static_cast<int>(std::ldexp(m, 11)) & 1023));
      std::memcpy(p, &h, 2);
#endif
      return;
    }
    case kBFloat16: {
      const float f = static_cast<float>(round_to(kBFloat16, v));  // exact
      uint32_t u;
      std::memcpy(&u, &f, 4);
      const uint16_t b = static_cast<uint16_t>(u >> 16);
      std::memcpy(p, &b, 2);
      return;
    }
  }
}

// ------------------------------------------------------------- random
uint64_t Rng::next() {
  uint64_t z = (state += 0x9E3779B97F4A7C15ULL);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}
double Rng::uniform(double lo, double hi) {
  return lo + (hi - lo) * static_cast<double>(next() >> 11) * std::ldexp(1.0, -53);
}
int64_t Rng::below(int64_t n) { return n <= 0 ? 0 : static_cast<int64_t>(next() % static_cast<uint64_t>(n)); }

// ------------------------------------------------------------- memory
DevBuf::DevBuf(size_t bytes, size_t head) : head_(head), bytes_(bytes) {
  void* p = nullptr;
  if (posix_memalign(&p, 64, std::max<size_t>(head + bytes, 1)) != 0) {
    std::fprintf(stderr, "harness: out of memory\n");
    std::abort();
  }
  raw_ = static_cast<uint8_t*>(p);
  std::memset(raw_, kSentinel, std::max<size_t>(head + bytes, 1));
}
DevBuf::~DevBuf() { std::free(raw_); }
bool DevBuf::unchanged_since(const std::vector<uint8_t>& snap) const {
  return snap.size() == raw_bytes() && (snap.empty() || std::memcmp(snap.data(), raw_, raw_bytes()) == 0);
}

// ------------------------------------------------------------- tensors
const char* layout_name(Layout l) {
  switch (l) {
    case Layout::kContig:
      return "contig";
    case Layout::kChannelsLast:
      return "channels_last";
    case Layout::kPadded:
      return "padded";
    case Layout::kPaddedOdd:
      return "padded_odd";
    case Layout::kStrideS2:
      return "stride_s2";
    case Layout::kChannelsLastPadded:
      return "channels_last_padded";
    case Layout::kBatchInner:
      return "batch_inner";
    case Layout::kMisaligned:
      return "misaligned";
  }
  return "?";
}

Tensor::Tensor(DType dt, int64_t n, int64_t c, int64_t s, Layout layout)
    : dt_(dt), n_(n), c_(c), s_(s), layout_(layout) {
  switch (layout) {
    case Layout::kContig:
    case Layout::kMisaligned:
      st_ = NcsStrides{c * s, s, 1};
      break;
    case Layout::kChannelsLast:
      st_ = NcsStrides{s * c, 1, c};
      break;
    case Layout::kPadded:
      st_ = NcsStrides{c * (s + 8) + 8, s + 8, 1};
      break;
    case Layout::kPaddedOdd:
      st_ = NcsStrides{c * (s + 3) + 1, s + 3, 1};
      break;
    case Layout::kStrideS2:
      st_ = NcsStrides{2 * c * s, 2 * s, 2};
      break;
    case Layout::kChannelsLastPadded:
      st_ = NcsStrides{s * (c + 3), 1, c + 3};
      break;
    case Layout::kBatchInner:
      st_ = NcsStrides{s, n * s, 1};
      break;
  }
  int64_t extent = 0;
  if (n > 0 && c > 0 && s > 0) extent = (n - 1) * st_.n + (c - 1) * st_.c + (s - 1) * st_.s + 1;
  const size_t es = dtype_size(dt);
  buf_ = std::make_shared<DevBuf>(static_cast<size_t>(extent) * es, layout == Layout::kMisaligned ? es : 0);
}

Tensor Tensor::flat(DType dt, int64_t count, bool misaligned) {
  return Tensor(dt, 1, 1, count, misaligned ? Layout::kMisaligned : Layout::kContig);
}

uint64_t Tensor::bits(int64_t i, int64_t j, int64_t k) const {
  uint64_t b = 0;
  std::memcpy(&b, static_cast<const char*>(data()) + offset(i, j, k) * static_cast<int64_t>(dtype_size(dt_)),
              dtype_size(dt_));
  return b;
}

void Tensor::fill_random(Rng& rng, double lo, double hi) {
  for (int64_t i = 0; i < n_; ++i)
    for (int64_t j = 0; j < c_; ++j)
      for (int64_t k = 0; k < s_; ++k) set(i, j, k, rng.uniform(lo, hi));
}

void Tensor::fill_value(double v) {
  for (int64_t i = 0; i < n_; ++i)
    for (int64_t j = 0; j < c_; ++j)
      for (int64_t k = 0; k < s_; ++k) set(i, j, k, v);
}

bool Tensor::gaps_intact() const {
  std::vector<uint8_t> owned(buf_->raw_bytes(), 0);
  const size_t es = dtype_size(dt_);
  for (int64_t i = 0; i < n_; ++i)
    for (int64_t j = 0; j < c_; ++j)
      for (int64_t k = 0; k < s_; ++k) {
        const size_t b = buf_->head() + static_cast<size_t>(offset(i, j, k)) * es;
        std::fill(owned.begin() + static_cast<std::ptrdiff_t>(b), owned.begin() + static_cast<std::ptrdiff_t>(b + es), 1);
      }
  for (size_t b = 0; b < owned.size(); ++b) {
    if (!owned[b] && buf_->raw()[b] != kSentinel) return false;
  }
  return true;
}

std::string Tensor::describe() const {
  return strf("%s[%lld,%lld,%lld] %s", dtype_name(dt_), static_cast<long long>(n_), static_cast<long long>(c_),
              static_cast<long long>(s_), layout_name(layout_));
}

I64Array::I64Array(const std::vector<int64_t>& v)
    : buf_(std::make_shared<DevBuf>(v.size() * sizeof(int64_t))), size_(static_cast<int64_t>(v.size())) {
  if (!v.empty()) std::memcpy(buf_->data(), v.data(), v.size() * sizeof(int64_t));
}

// ------------------------------------------------------------- environments
const std::vector<Env>& all_envs() {
  static const std::vector<Env> envs = {
      {"4sm", 0, false, false},
      {"1sm/int64", 1, true, false},
      {"2sm/reverse", 2, false, true},
      {"132sm/int64", 3, true, false},
  };
  return envs;
}

void configure_envs() {
  cuemu::configure_device(0, 4, 2048);
  cuemu::configure_device(1, 1, 512);  // 2 blocks of 256 threads at once
  cuemu::configure_device(2, 2, 1024);
  cuemu::configure_device(3, 132, 2048);  // an H100's SM count
}

void enter(const Env& env) {
  cudaSetDevice(env.device);
  cuemu::set_index32_limit(env.int64_index ? 0 : INT32_MAX);
  cuemu::set_reverse_schedule(env.reverse);
}

std::vector<Env> envs_for_case(int) { return all_envs(); }

// ------------------------------------------------------------- results
void Suite::fail(const std::string& context, const std::string& what) {
  ++failures_;
  std::printf("  FAIL %s\n       %s\n", context.c_str(), what.c_str());
  std::fflush(stdout);
}

void Compare::close(const std::string& where, double got, double want, double tol) {
  ++checked_;
  const bool ok = std::isnan(want) ? std::isnan(got) : (!std::isnan(got) && std::fabs(got - want) <= tol);
  if (ok) return;
  if (bad_ < 4) {
    first_ += strf("\n         %s: got %.17g, want %.17g (|diff| %.3g > tol %.3g)", where.c_str(), got, want,
                   std::fabs(got - want), tol);
  }
  ++bad_;
}

void Compare::exact_bits(const std::string& where, uint64_t got, uint64_t want) {
  ++checked_;
  if (got == want) return;
  if (bad_ < 4) {
    first_ += strf("\n         %s: got bits 0x%llx, want 0x%llx", where.c_str(), static_cast<unsigned long long>(got),
                   static_cast<unsigned long long>(want));
  }
  ++bad_;
}

void Compare::truth(const std::string& where, bool ok, const std::string& detail) {
  ++checked_;
  if (ok) return;
  if (bad_ < 4) first_ += "\n         " + where + ": " + detail;
  ++bad_;
}

void Compare::finish() {
  if (done_) return;
  done_ = true;
  suite_.count_check(checked_);
  if (bad_ > 0) {
    suite_.fail(context_, strf("MISMATCH in %s: %ld of %ld values wrong", what_.c_str(), bad_, checked_) + first_);
  }
}

double tolerance(DType dt, double value, double magnitude, double ops) {
  const double ua = unit_roundoff(acc_dtype(dt));
  return 1.001 * (unit_roundoff(dt) * std::fabs(value) + ua * (ops + 1.0) * magnitude) + abs_floor(dt);
}

// ------------------------------------------------------------- launch checks
LaunchScope::LaunchScope(Suite& suite, std::string context) : suite_(suite), context_(std::move(context)) {
  const cudaError_t before = cudaGetLastError();
  if (before != cudaSuccess) {
    suite_.fail(context_, strf("an error was pending before the launcher ran: %s", cudaGetErrorName(before)));
  }
  cudaStreamCreate(&stream_);
  mark_ = cuemu::log().size();
  counters_ = cuemu::counters();
}

LaunchScope::~LaunchScope() { cudaStreamDestroy(stream_); }

std::vector<cuemu::Enqueued> LaunchScope::finish(cudaError_t returned, Expect expect) {
  suite_.count_run();
  const auto& log = cuemu::log();
  std::vector<cuemu::Enqueued> ops(log.begin() + static_cast<std::ptrdiff_t>(mark_), log.end());
  if (returned != cudaSuccess) {
    suite_.fail(context_, strf("the launcher returned %s", cudaGetErrorName(returned)));
  }
  const cudaError_t after = cudaGetLastError();
  if (after != cudaSuccess) {
    suite_.fail(context_, strf("cudaGetLastError() after the launcher: %s (an error it did not return)",
                               cudaGetErrorName(after)));
  }
  int launches = 0;
  for (const auto& e : ops) {
    const std::string what = e.kind == cuemu::Enqueued::kLaunch
                                 ? strf("launch of %s at %s:%d", cuemu::kernel_name(e.kernel).c_str(), e.file, e.line)
                                 : std::string(e.expr);
    if (e.stream != static_cast<void*>(stream_)) {
      suite_.fail(context_, strf("%s went to stream %p, not to the launcher's stream %p", what.c_str(), e.stream,
                                 static_cast<void*>(stream_)));
    }
    if (e.error != 0) {
      suite_.fail(context_, strf("%s was rejected: %s", what.c_str(), cudaGetErrorName(static_cast<cudaError_t>(e.error))));
    }
    if (e.kind == cuemu::Enqueued::kLaunch) ++launches;
  }
  if (expect == kSomeLaunches && ops.empty()) suite_.fail(context_, "the launcher enqueued nothing");
  if (expect == kNoLaunches && launches > 0) {
    suite_.fail(context_, strf("the launcher launched %d kernel(s) for an empty problem", launches));
  }
  const cuemu::Counters now = cuemu::counters();
  if (now.synchronizations != counters_.synchronizations) suite_.fail(context_, "the launcher synchronized");
  if (now.allocations != counters_.allocations) suite_.fail(context_, "the launcher allocated or freed memory");
  return ops;
}

void check_untouched(Suite& suite, const std::string& context, const std::vector<const Tensor*>& outputs,
                     const std::vector<std::pair<const Tensor*, std::vector<uint8_t>>>& inputs) {
  for (const Tensor* t : outputs) {
    if (t != nullptr && !t->gaps_intact()) {
      suite.fail(context, "a write outside the elements of output " + t->describe() + " (gap bytes changed)");
    }
  }
  for (const auto& in : inputs) {
    if (in.first != nullptr && !in.first->unchanged_since(in.second)) {
      suite.fail(context, "input " + in.first->describe() + " was modified");
    }
  }
}

// ------------------------------------------------------------- registry
std::vector<TestEntry>& registry() {
  static std::vector<TestEntry> r;
  return r;
}
Register::Register(const char* name, const char* launcher, TestFn fn) {
  registry().push_back(TestEntry{name, launcher, std::move(fn)});
}

}  // namespace emu
