// cuemu: the emulated CUDA runtime. Launches run at once, on the calling
// host thread: the blocks of the grid one after the other (forward or
// reverse order), each block's threads as fibers on their own stacks,
// switched cooperatively at __syncthreads and at warp collectives (a thread
// runs until it blocks there or exits; then the scheduler releases whatever
// barrier or warp collective is complete). That makes runs deterministic,
// and lets every synchronization be checked:
//  * __syncthreads: every live thread of the block at the same call site;
//    a thread that exited while others wait is an error.
//  * warp collectives: mask 0xffffffff, all 32 lanes present and at the same
//    collective (same call site, kind, width, value size).
//  * shared memory: fresh per block, filled with 0xff bytes (NaN for every
//    float type) before the block, every variable surrounded by poisoned
//    (AddressSanitizer) bytes, placed at its alignment but no more.
//  * launch configuration: CUDA's limits (block <= 1024 threads, grid
//    x <= 2^31 - 1, y and z <= 65535, no zero dimension, <= 48 KiB of
//    shared memory, a valid stream); a bad launch runs nothing and sets the
//    error cudaGetLastError returns, as on a device.
// Any failure of the first two kinds prints "CUEMU ERROR" with the kernel's
// name and launch site, and aborts.
#include <errno.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cinttypes>
#include <climits>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "cuda_runtime.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#define CUEMU_ASAN 1
#else
#define CUEMU_ASAN 0
#endif

#if !defined(__x86_64__) && !defined(CUEMU_UCONTEXT)
#define CUEMU_UCONTEXT 1
#endif
#if defined(CUEMU_UCONTEXT)
#include <ucontext.h>
#endif

struct CUstream_st {
  int id;
};

namespace cuemu {
namespace detail {

uint3 g_thread_idx{0, 0, 0};
uint3 g_block_idx{0, 0, 0};
dim3 g_block_dim{1, 1, 1};
dim3 g_grid_dim{1, 1, 1};

namespace {

// ------------------------------------------------------------- state
constexpr size_t kMaxSharedPerBlock = 48 * 1024;  // without opt-in, every arch
constexpr size_t kMaxParamBytes = 32764;          // CUDA >= 12.1, Volta and later
constexpr long long kMaxEmulatedThreads = 1LL << 25;
#if defined(CUEMU_UCONTEXT)
// Smaller: AddressSanitizer's swapcontext interceptor clears the shadow of
// the whole target stack at every switch.
constexpr size_t kStackBytes = 64 * 1024;
#else
constexpr size_t kStackBytes = 256 * 1024;
#endif

cudaError_t g_last_error = cudaSuccess;
int g_device = 0;
struct DeviceConfig {
  int sms = 4;
  int threads_per_sm = 2048;
  bool used = false;
};
DeviceConfig g_devices[kMaxDevices];
int64_t g_index32_limit = INT32_MAX;
bool g_reverse = false;
std::vector<Enqueued> g_log;
Counters g_counters;
std::set<CUstream_st*> g_streams;
int g_next_stream_id = 1;
std::map<const void*, std::string> g_symbols;
std::map<const void*, size_t> g_static_smem;  // per kernel, once known

cudaError_t set_error(cudaError_t e) {
  if (e != cudaSuccess) g_last_error = e;
  return e;
}

bool valid_stream(cudaStream_t s) {
  return s == nullptr || s == cudaStreamLegacy || s == cudaStreamPerThread || g_streams.count(s) != 0;
}

// ------------------------------------------------------------- fibers
enum class St : uint8_t { kNotStarted, kReady, kBarrier, kWarp, kExited };

struct Fiber {
  void* sp = nullptr;
#if defined(CUEMU_UCONTEXT)
  ucontext_t uc;
#endif
  char* stack_lo = nullptr;
  void* fake_stack = nullptr;
  St st = St::kExited;
  uint3 tid{0, 0, 0};
  int linear = 0;
  // What the fiber waits at.
  const char* file = "";
  int line = 0;
  Coll kind = Coll::kSyncWarp;
  unsigned mask = 0;
  uint64_t value = 0;
  int bytes = 0;
  int arg = 0;
  int width = 32;
  int op = 0;
  int pred = 0;
  uint64_t result = 0;
};

std::vector<std::unique_ptr<Fiber>> g_fibers;
Fiber* g_cur = nullptr;
const LaunchDesc* g_desc = nullptr;
void* g_sched_sp = nullptr;
#if defined(CUEMU_UCONTEXT)
ucontext_t g_sched_uc;
#endif
const void* g_sched_stack_lo = nullptr;
size_t g_sched_stack_size = 0;

#if !defined(CUEMU_UCONTEXT)
// cuemu_switch(save, to): saves the callee-saved registers and the FPU
// control words on the current stack, stores the stack pointer in *save and
// continues on the stack `to` (made by an earlier switch, or by new_stack).
extern "C" void cuemu_switch(void** save, void* to);
asm(R"(
  .text
  .p2align 4
  .type cuemu_switch,@function
cuemu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size cuemu_switch,.-cuemu_switch
)");
#endif

void fiber_main();

void asan_start_switch(void** fake_save, const void* lo, size_t size) {
#if CUEMU_ASAN
  __sanitizer_start_switch_fiber(fake_save, lo, size);
#else
  (void)fake_save, (void)lo, (void)size;
#endif
}
void asan_finish_switch(void* fake, const void** lo, size_t* size) {
#if CUEMU_ASAN
  __sanitizer_finish_switch_fiber(fake, lo, size);
#else
  (void)fake, (void)lo, (void)size;
#endif
}

void alloc_stack(Fiber& f) {
  if (f.stack_lo != nullptr) return;
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  void* p = mmap(nullptr, kStackBytes + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                 -1, 0);
  if (p == MAP_FAILED) {
    std::fprintf(stderr, "CUEMU ERROR: cannot map a fiber stack: %s\n", std::strerror(errno));
    std::abort();
  }
  mprotect(p, page, PROT_NONE);  // guard page: a stack overflow faults
  f.stack_lo = static_cast<char*>(p) + page;
}

// Makes f start at fiber_main when next switched to.
void prepare_fiber(Fiber& f) {
  alloc_stack(f);
#if defined(CUEMU_UCONTEXT)
  getcontext(&f.uc);
  f.uc.uc_stack.ss_sp = f.stack_lo;
  f.uc.uc_stack.ss_size = kStackBytes;
  f.uc.uc_link = nullptr;
  makecontext(&f.uc, fiber_main, 0);
#else
  // The frame cuemu_switch pops: FPU control words, r15..r12, rbx, rbp, then
  // the address it "returns" to, with a null return address above it.
  uint64_t* top = reinterpret_cast<uint64_t*>(f.stack_lo + kStackBytes);
  uint32_t mxcsr;
  uint16_t fcw;
  asm volatile("stmxcsr %0" : "=m"(mxcsr));
  asm volatile("fnstcw %0" : "=m"(fcw));
  top[-1] = 0;
  top[-2] = reinterpret_cast<uint64_t>(&fiber_main);
  for (int i = 3; i <= 8; ++i) top[-i] = 0;  // rbp rbx r12 r13 r14 r15
  top[-9] = static_cast<uint64_t>(mxcsr) | (static_cast<uint64_t>(fcw) << 32);
  f.sp = &top[-9];
#endif
}

// Scheduler -> fiber; returns when the fiber blocks or exits.
void resume(Fiber& f) {
  g_cur = &f;
  g_thread_idx = f.tid;
  void* fake = nullptr;
  asan_start_switch(&fake, f.stack_lo, kStackBytes);
#if defined(CUEMU_UCONTEXT)
  swapcontext(&g_sched_uc, &f.uc);
#else
  cuemu_switch(&g_sched_sp, f.sp);
#endif
  asan_finish_switch(fake, nullptr, nullptr);
  g_cur = nullptr;
}

// Fiber -> scheduler (the fiber waits at a barrier or collective).
void yield_fiber() {
  Fiber& f = *g_cur;
  asan_start_switch(&f.fake_stack, g_sched_stack_lo, g_sched_stack_size);
#if defined(CUEMU_UCONTEXT)
  swapcontext(&f.uc, &g_sched_uc);
#else
  cuemu_switch(&f.sp, g_sched_sp);
#endif
  asan_finish_switch(f.fake_stack, &g_sched_stack_lo, &g_sched_stack_size);
}

void fiber_main() {
  asan_finish_switch(nullptr, &g_sched_stack_lo, &g_sched_stack_size);
  g_desc->invoke(g_desc->ctx);
  Fiber* f = g_cur;
  f->st = St::kExited;
  asan_start_switch(nullptr, g_sched_stack_lo, g_sched_stack_size);  // this fiber ends
#if defined(CUEMU_UCONTEXT)
  swapcontext(&f->uc, &g_sched_uc);
#else
  cuemu_switch(&f->sp, g_sched_sp);
#endif
  __builtin_unreachable();
}

// ------------------------------------------------------------- reports
std::string hex(const void* p) {
  char b[32];
  std::snprintf(b, sizeof b, "%p", p);
  return b;
}

std::string dim_str(dim3 d) {
  char b[64];
  std::snprintf(b, sizeof b, "(%u, %u, %u)", d.x, d.y, d.z);
  return b;
}

std::string site_str(const char* file, int line) { return std::string(file) + ":" + std::to_string(line); }

const char* coll_name(Coll k) {
  switch (k) {
    case Coll::kShflIdx:
      return "__shfl_sync";
    case Coll::kShflUp:
      return "__shfl_up_sync";
    case Coll::kShflDown:
      return "__shfl_down_sync";
    case Coll::kShflXor:
      return "__shfl_xor_sync";
    case Coll::kBallot:
      return "__ballot_sync";
    case Coll::kAny:
      return "__any_sync";
    case Coll::kAll:
      return "__all_sync";
    case Coll::kSyncWarp:
      return "__syncwarp";
  }
  return "?";
}

std::string launch_context() {
  if (g_desc == nullptr) return "  (outside any kernel launch)\n";
  const LaunchDesc& d = *g_desc;
  std::string s;
  s += "  kernel:    " + kernel_name(d.kernel) + "\n";
  s += "  launched:  " + std::string(d.expr) + "<<<" + dim_str(d.grid) + ", " + dim_str(d.block) + ", " +
       std::to_string(d.smem) + ", stream " + hex(d.stream) + ">>> at " + site_str(d.file, d.line) + "\n";
  s += "  block:     blockIdx " + dim_str(dim3(g_block_idx)) + "\n";
  return s;
}

// Called by AddressSanitizer / UndefinedBehaviorSanitizer before they end
// the process: says which kernel, block and thread the report came from.
void sanitizer_death_callback() {
  if (g_desc == nullptr) return;
  std::string s = "\nCUEMU: the sanitizer report above comes from a kernel:\n" + launch_context();
  if (g_cur != nullptr) s += "  thread:    threadIdx " + dim_str(dim3(g_thread_idx)) + "\n";
  std::fputs(s.c_str(), stderr);
}

struct InstallDeathCallback {
  InstallDeathCallback() {
#if CUEMU_ASAN
    __sanitizer_set_death_callback(sanitizer_death_callback);
#endif
  }
} g_install_death_callback;

[[noreturn]] void die(const std::string& what) {
  std::string where = launch_context();
  if (g_cur != nullptr) where += "  thread:    threadIdx " + dim_str(dim3(g_thread_idx)) + "\n";
  std::fprintf(stderr, "\nCUEMU ERROR: %s\n%s", what.c_str(), where.c_str());
  std::fflush(stderr);
  std::abort();
}

// "threads 0-31: <desc>; threads 32-255: <desc>" for consecutive equal descriptions.
template <typename Desc>
std::string ranges(int begin, int end, const char* unit, Desc desc) {
  std::string out;
  int i = begin;
  while (i < end) {
    const std::string d = desc(i);
    int j = i + 1;
    while (j < end && desc(j) == d) ++j;
    if (!out.empty()) out += "; ";
    out += std::string(unit) + " " + std::to_string(i - begin);
    if (j - 1 > i) out += "-" + std::to_string(j - 1 - begin);
    out += ": " + d;
    i = j;
  }
  return out;
}

std::string fiber_state(const Fiber& f) {
  switch (f.st) {
    case St::kExited:
      return "exited";
    case St::kBarrier:
      return "at __syncthreads at " + site_str(f.file, f.line);
    case St::kWarp:
      return std::string("at ") + coll_name(f.kind) + " at " + site_str(f.file, f.line);
    case St::kReady:
    case St::kNotStarted:
      return "running";
  }
  return "?";
}

bool same_site(const Fiber& a, const Fiber& b) {
  return a.line == b.line && (a.file == b.file || std::strcmp(a.file, b.file) == 0);
}

// ------------------------------------------------------------- shared memory
constexpr size_t kArenaBytes = 1 << 20;
constexpr size_t kRedzone = 64;
struct SharedVar {
  const void* key;
  size_t offset;
};
char* g_arena = nullptr;
size_t g_arena_used = 0;
size_t g_arena_high = 0;  // bytes to refill before the next block
size_t g_static_bytes = 0;
std::vector<SharedVar> g_shared_vars;

void poison(void* p, size_t n) {
#if CUEMU_ASAN
  __asan_poison_memory_region(p, n);
#else
  (void)p, (void)n;
#endif
}
void unpoison(void* p, size_t n) {
#if CUEMU_ASAN
  __asan_unpoison_memory_region(p, n);
#else
  (void)p, (void)n;
#endif
}

void shared_begin_block(size_t dynamic) {
  if (g_arena == nullptr) {
    g_arena = static_cast<char*>(std::aligned_alloc(256, kArenaBytes));
    g_arena_high = kArenaBytes;
  }
  // Refill what the last block used (0xff bytes: NaN in every float type).
  unpoison(g_arena, g_arena_high);
  std::memset(g_arena, 0xff, g_arena_high);
  poison(g_arena, g_arena_high);
  g_shared_vars.clear();
  g_static_bytes = 0;
  unpoison(g_arena, dynamic);
  g_arena_used = (dynamic + 15) / 16 * 16 + kRedzone;
  g_arena_high = g_arena_used;
}

// ------------------------------------------------------------- a block
int warp_lanes(int nthreads, int warp) { return std::min(32, nthreads - warp * 32); }

// Completes every warp collective all of whose lanes have arrived; aborts
// on an inconsistent one. Returns whether any completed.
bool resolve_warps(int n) {
  bool progressed = false;
  const int warps = (n + 31) / 32;
  for (int w = 0; w < warps; ++w) {
    Fiber* ref = nullptr;
    for (int l = 0; l < warp_lanes(n, w); ++l) {
      if (g_fibers[w * 32 + l]->st == St::kWarp) {
        ref = g_fibers[w * 32 + l].get();
        break;
      }
    }
    if (ref == nullptr) continue;
    const int lanes = warp_lanes(n, w);
    auto lane_desc = [&](int l) -> std::string {
      if (l >= lanes) return "does not exist";
      const Fiber& f = *g_fibers[w * 32 + l];
      std::string d = fiber_state(f);
      if (f.st == St::kWarp) {
        char b[64];
        std::snprintf(b, sizeof b, " (mask 0x%08x)", f.mask);
        d += b;
      }
      return d;
    };
    std::string head = "warp collective " + std::string(coll_name(ref->kind)) + " at " +
                       site_str(ref->file, ref->line) + " in warp " + std::to_string(w) + ": ";
    auto fail = [&](const std::string& why) {
      die(head + why + "\n  lanes:     " + ranges(0, 32, "lane", lane_desc));
    };
    if (ref->mask != 0xffffffffu) {
      char b[160];
      std::snprintf(b, sizeof b,
                    "partial mask 0x%08x (the kernels assume full warps; cuemu requires mask 0xffffffff)",
                    ref->mask);
      fail(b);
    }
    if (lanes < 32) {
      fail("the warp has only " + std::to_string(lanes) + " threads (block of " + std::to_string(n) +
           " threads, not a multiple of 32) but the mask names all 32 lanes");
    }
    for (int l = 0; l < 32; ++l) {
      const Fiber& f = *g_fibers[w * 32 + l];
      if (f.st == St::kExited) fail("lane " + std::to_string(l) + " has exited (a participating lane must be live)");
      if (f.st != St::kWarp) fail("lane " + std::to_string(l) + " is not at this collective");
      if (!same_site(f, *ref) || f.kind != ref->kind) fail("lanes wait at different collectives");
      if (f.mask != ref->mask) fail("lanes pass different masks");
      if (f.width != ref->width || f.bytes != ref->bytes) fail("lanes pass different widths or value types");
    }
    const int width = ref->width;
    if (width < 1 || width > 32 || (width & (width - 1)) != 0) {
      fail("width " + std::to_string(width) + " is not a power of two in [1, 32]");
    }
    const std::unique_ptr<Fiber>* lane = &g_fibers[w * 32];
    uint32_t votes = 0;
    for (int l = 0; l < 32; ++l) votes |= (lane[l]->value != 0 ? 1u : 0u) << l;
    for (int l = 0; l < 32; ++l) {
      Fiber& f = *lane[l];
      const int seg = l & ~(width - 1);  // first lane of l's segment
      int src = l;
      switch (ref->kind) {
        case Coll::kShflIdx:
          src = seg + (((f.arg % width) + width) % width);
          break;
        case Coll::kShflUp:
          src = (l - seg) >= f.arg ? l - f.arg : l;
          break;
        case Coll::kShflDown:
          src = (l - seg) + f.arg < width ? l + f.arg : l;
          break;
        case Coll::kShflXor: {
          const int x = l ^ f.arg;
          src = (x >= 0 && x < 32 && (x & ~(width - 1)) <= seg) ? x : l;
          break;
        }
        default:
          break;
      }
      switch (ref->kind) {
        case Coll::kBallot:
          f.result = votes;
          break;
        case Coll::kAny:
          f.result = votes != 0;
          break;
        case Coll::kAll:
          f.result = votes == 0xffffffffu;
          break;
        case Coll::kSyncWarp:
          f.result = 0;
          break;
        default:
          f.result = lane[src]->value;
      }
      f.st = St::kReady;
    }
    progressed = true;
  }
  return progressed;
}

// Releases the block's barrier when every live thread waits at the same one.
void resolve_barrier(int n) {
  const Fiber* ref = nullptr;
  int exited = 0;
  for (int i = 0; i < n; ++i) {
    const Fiber& f = *g_fibers[i];
    if (f.st == St::kBarrier && ref == nullptr) ref = &f;
    if (f.st == St::kExited) ++exited;
  }
  if (ref == nullptr) die("internal: no thread can make progress");
  auto thread_desc = [&](int i) { return fiber_state(*g_fibers[i]); };
  const std::string head = "__syncthreads at " + site_str(ref->file, ref->line) + ": ";
  if (exited > 0) {
    die(head + std::to_string(exited) + " thread(s) of the block exited while others wait at a barrier\n" +
        "  threads:   " + ranges(0, n, "thread", thread_desc));
  }
  for (int i = 0; i < n; ++i) {
    const Fiber& f = *g_fibers[i];
    if (f.st != St::kBarrier || !same_site(f, *ref) || f.op != ref->op) {
      die(head + "threads of the block wait at different barriers (divergent __syncthreads)\n" +
          "  threads:   " + ranges(0, n, "thread", thread_desc));
    }
  }
  int count = 0;
  for (int i = 0; i < n; ++i) count += g_fibers[i]->pred;
  for (int i = 0; i < n; ++i) {
    Fiber& f = *g_fibers[i];
    switch (f.op) {
      case 1:
        f.result = static_cast<uint64_t>(count);
        break;
      case 2:
        f.result = count == n;
        break;
      case 3:
        f.result = count != 0;
        break;
      default:
        f.result = 0;
    }
    f.st = St::kReady;
  }
}

void run_block(const LaunchDesc& d, uint3 bidx) {
  const int bx = static_cast<int>(d.block.x), by = static_cast<int>(d.block.y);
  const int n = bx * by * static_cast<int>(d.block.z);
  g_block_idx = bidx;
  shared_begin_block(d.smem);
  while (static_cast<int>(g_fibers.size()) < n) g_fibers.push_back(std::make_unique<Fiber>());
  for (int i = 0; i < n; ++i) {
    Fiber& f = *g_fibers[i];
    f.st = St::kNotStarted;
    f.linear = i;
    f.tid = uint3{static_cast<unsigned>(i % bx), static_cast<unsigned>((i / bx) % by),
                  static_cast<unsigned>(i / (bx * by))};
    f.fake_stack = nullptr;
  }
  int exited = 0;
  for (;;) {
    for (int j = 0; j < n; ++j) {
      Fiber& f = *g_fibers[g_reverse ? n - 1 - j : j];
      if (f.st == St::kNotStarted) {
        prepare_fiber(f);
        f.st = St::kReady;
        resume(f);
      } else if (f.st == St::kReady) {
        resume(f);
      } else {
        continue;
      }
      if (f.st == St::kExited) ++exited;
    }
    if (exited == n) break;
    if (!resolve_warps(n)) resolve_barrier(n);
  }
  g_counters.blocks_run += 1;
  g_counters.threads_run += n;
  g_static_smem[d.kernel] = g_static_bytes;
}

}  // namespace

// ------------------------------------------------------------- device side
int syncthreads(int op, int predicate, const char* file, int line) {
  Fiber* f = g_cur;
  if (f == nullptr) die("__syncthreads called outside a kernel");
  f->st = St::kBarrier;
  f->file = file;
  f->line = line;
  f->op = op;
  f->pred = predicate;
  yield_fiber();
  return static_cast<int>(f->result);
}

uint64_t warp_collective(Coll kind, unsigned mask, uint64_t value, int bytes, int arg, int width, const char* file,
                         int line) {
  Fiber* f = g_cur;
  if (f == nullptr) die(std::string(coll_name(kind)) + " called outside a kernel");
  f->st = St::kWarp;
  f->kind = kind;
  f->mask = mask;
  f->value = value;
  f->bytes = bytes;
  f->arg = arg;
  f->width = width;
  f->file = file;
  f->line = line;
  yield_fiber();
  return f->result;
}

unsigned activemask() {
  if (g_cur == nullptr) die("__activemask called outside a kernel");
  const int n = static_cast<int>(g_block_dim.x * g_block_dim.y * g_block_dim.z);
  const int w = g_cur->linear / 32;
  unsigned m = 0;
  for (int l = 0; l < warp_lanes(n, w); ++l) {
    if (g_fibers[w * 32 + l]->st != St::kExited) m |= 1u << l;
  }
  return m;
}

void* shared_var(const void* key, size_t bytes, size_t align, const char* name) {
  if (g_cur == nullptr) die(std::string("__shared__ ") + name + " used outside a kernel");
  for (const SharedVar& v : g_shared_vars) {
    if (v.key == key) return g_arena + v.offset;
  }
  if (align == 0 || (align & (align - 1)) != 0) align = 16;
  size_t off = (g_arena_used + align - 1) / align * align;
  // No more alignment than the type has, so code that assumes more fails.
  if (align < 16 && off % (2 * align) == 0) off += align;
  g_static_bytes += bytes;
  if (g_static_bytes + g_desc->smem > kMaxSharedPerBlock) {
    die("shared memory of the block: " + std::to_string(g_static_bytes) + " static (with __shared__ " + name +
        ") + " + std::to_string(g_desc->smem) + " dynamic bytes > " + std::to_string(kMaxSharedPerBlock));
  }
  if (off + bytes + kRedzone > kArenaBytes) die("internal: shared memory arena exhausted");
  unpoison(g_arena + off, bytes);
  g_shared_vars.push_back(SharedVar{key, off});
  g_arena_used = off + bytes + kRedzone;
  g_arena_high = std::max(g_arena_high, g_arena_used);
  return g_arena + off;
}

void* dynamic_shared() {
  if (g_cur == nullptr) die("extern __shared__ memory used outside a kernel");
  return g_arena;
}

void fatal_in_kernel(const char* what) { die(what); }

void launch(const LaunchDesc& d) {
  if (g_cur != nullptr) die("kernel launch from device code (dynamic parallelism) is not emulated");
  Enqueued e;
  e.kind = Enqueued::kLaunch;
  e.kernel = d.kernel;
  e.expr = d.expr;
  e.file = d.file;
  e.line = d.line;
  e.grid = d.grid;
  e.block = d.block;
  e.smem = d.smem;
  e.param_bytes = d.param_bytes;
  e.stream = d.stream;
  g_devices[g_device].used = true;

  cudaError_t err = cudaSuccess;
  std::string why;
  const unsigned long long threads = 1ULL * d.block.x * d.block.y * d.block.z;
  if (d.kernel == nullptr) {
    err = cudaErrorInvalidDeviceFunction;
    why = "null kernel";
  } else if (d.block.x == 0 || d.block.y == 0 || d.block.z == 0 || d.grid.x == 0 || d.grid.y == 0 ||
             d.grid.z == 0) {
    err = cudaErrorInvalidConfiguration;
    why = "a zero grid or block dimension";
  } else if (d.block.x > 1024 || d.block.y > 1024 || d.block.z > 64 || threads > 1024) {
    err = cudaErrorInvalidConfiguration;
    why = "more than 1024 threads per block (or a block dimension beyond 1024, 1024, 64)";
  } else if (d.grid.x > 2147483647u || d.grid.y > 65535u || d.grid.z > 65535u) {
    err = cudaErrorInvalidConfiguration;
    why = "a grid dimension beyond (2^31 - 1, 65535, 65535)";
  } else if (d.smem > kMaxSharedPerBlock ||
             (g_static_smem.count(d.kernel) && g_static_smem[d.kernel] + d.smem > kMaxSharedPerBlock)) {
    err = cudaErrorInvalidValue;
    why = "more than 48 KiB of shared memory per block";
  } else if (d.param_bytes > kMaxParamBytes) {
    err = cudaErrorInvalidValue;
    why = "kernel parameters of " + std::to_string(d.param_bytes) + " bytes";
  } else if (!valid_stream(d.stream)) {
    err = cudaErrorInvalidResourceHandle;
    why = "an invalid stream";
  }
  if (err != cudaSuccess) {
    e.error = err;
    g_log.push_back(e);
    set_error(err);
    std::fprintf(stderr, "cuemu: launch rejected with %s (%s): %s<<<%s, %s, %zu, %p>>> at %s, kernel %s\n",
                 cudaGetErrorName(err), why.c_str(), d.expr, dim_str(d.grid).c_str(), dim_str(d.block).c_str(),
                 d.smem, static_cast<void*>(d.stream), site_str(d.file, d.line).c_str(),
                 kernel_name(d.kernel).c_str());
    return;
  }
  const long long total = static_cast<long long>(d.grid.x) * d.grid.y * d.grid.z * static_cast<long long>(threads);
  if (total > kMaxEmulatedThreads) {
    g_desc = &d;
    die("the launch has " + std::to_string(total) + " threads, more than the emulator runs (" +
        std::to_string(kMaxEmulatedThreads) + "): keep test sizes small");
  }
  g_log.push_back(e);

  g_desc = &d;
  g_grid_dim = d.grid;
  g_block_dim = d.block;
  const long long nb = static_cast<long long>(d.grid.x) * d.grid.y * d.grid.z;
  for (long long j = 0; j < nb; ++j) {
    const long long b = g_reverse ? nb - 1 - j : j;
    const uint3 bidx{static_cast<unsigned>(b % d.grid.x), static_cast<unsigned>((b / d.grid.x) % d.grid.y),
                     static_cast<unsigned>(b / (static_cast<long long>(d.grid.x) * d.grid.y))};
    run_block(d, bidx);
  }
  g_desc = nullptr;
  g_thread_idx = uint3{0, 0, 0};
  g_block_idx = uint3{0, 0, 0};
}

cudaError_t occupancy(int* blocks, const void* fn, int block_size, size_t dynamic_smem) {
  if (blocks == nullptr || fn == nullptr) return set_error(cudaErrorInvalidValue);
  g_devices[g_device].used = true;
  if (block_size <= 0 || block_size > 1024) {
    *blocks = 0;
    return cudaSuccess;
  }
  const int warps = (block_size + 31) / 32;
  int n = g_devices[g_device].threads_per_sm / (warps * 32);
  n = std::min(n, 32);
  auto it = g_static_smem.find(fn);
  const size_t smem = dynamic_smem + (it != g_static_smem.end() ? it->second : 0);
  if (smem > 0) n = std::min<int>(n, static_cast<int>((228 * 1024) / (smem + 1024)));
  *blocks = std::max(n, 0);
  return cudaSuccess;
}

}  // namespace detail

// ------------------------------------------------------------- control
using namespace detail;

void configure_device(int dev, int sms, int max_threads_per_sm) {
  if (dev < 0 || dev >= kMaxDevices || sms < 1 || max_threads_per_sm < 32) {
    std::fprintf(stderr, "CUEMU ERROR: configure_device(%d, %d, %d): bad arguments\n", dev, sms, max_threads_per_sm);
    std::abort();
  }
  DeviceConfig& c = g_devices[dev];
  if (c.used && (c.sms != sms || c.threads_per_sm != max_threads_per_sm)) {
    std::fprintf(stderr,
                 "CUEMU ERROR: configure_device(%d): the device was used already (its attributes may be cached); "
                 "use another device id\n",
                 dev);
    std::abort();
  }
  c.sms = sms;
  c.threads_per_sm = max_threads_per_sm;
}

void set_index32_limit(int64_t limit) { g_index32_limit = limit; }
int64_t index32_limit() { return g_index32_limit; }
void set_reverse_schedule(bool reverse) { g_reverse = reverse; }
const std::vector<Enqueued>& log() { return g_log; }
Counters counters() { return g_counters; }

size_t load_kernel_symbols(const char* path) {
  std::ifstream in(path);
  std::string line;
  size_t n = 0;
  while (std::getline(in, line)) {
    const size_t sp = line.find(' ');
    if (sp == std::string::npos) continue;
    const unsigned long long a = std::strtoull(line.substr(0, sp).c_str(), nullptr, 16);
    if (a == 0) continue;
    g_symbols[reinterpret_cast<const void*>(static_cast<uintptr_t>(a))] = line.substr(sp + 1);
    ++n;
  }
  return n;
}

std::vector<std::pair<const void*, std::string>> kernel_symbols() {
  return std::vector<std::pair<const void*, std::string>>(g_symbols.begin(), g_symbols.end());
}

std::string kernel_name(const void* kernel) {
  auto it = g_symbols.find(kernel);
  if (it != g_symbols.end()) return it->second;
#if CUEMU_ASAN
  char buf[4096] = {0};
  __sanitizer_symbolize_pc(const_cast<char*>(static_cast<const char*>(kernel)) + 1, "%f", buf, sizeof buf);
  if (buf[0] != 0 && std::strcmp(buf, "<null>") != 0) return buf;
#endif
  return "kernel at " + hex(kernel);
}

}  // namespace cuemu

// ------------------------------------------------------------- runtime API
using cuemu::detail::g_counters;
using cuemu::detail::g_devices;
using cuemu::detail::g_device;
using cuemu::detail::g_last_error;
using cuemu::detail::g_log;
using cuemu::detail::g_streams;
using cuemu::detail::set_error;

cudaError_t cudaGetLastError() {
  const cudaError_t e = g_last_error;
  g_last_error = cudaSuccess;
  return e;
}
cudaError_t cudaPeekAtLastError() { return g_last_error; }

const char* cudaGetErrorName(cudaError_t e) {
  switch (e) {
    case cudaSuccess:
      return "cudaSuccess";
    case cudaErrorInvalidValue:
      return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation:
      return "cudaErrorMemoryAllocation";
    case cudaErrorInitializationError:
      return "cudaErrorInitializationError";
    case cudaErrorInvalidConfiguration:
      return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidDeviceFunction:
      return "cudaErrorInvalidDeviceFunction";
    case cudaErrorInvalidDevice:
      return "cudaErrorInvalidDevice";
    case cudaErrorInvalidResourceHandle:
      return "cudaErrorInvalidResourceHandle";
    case cudaErrorLaunchOutOfResources:
      return "cudaErrorLaunchOutOfResources";
    case cudaErrorNotSupported:
      return "cudaErrorNotSupported";
    case cudaErrorUnknown:
      return "cudaErrorUnknown";
  }
  return "cudaError(unknown code)";
}
const char* cudaGetErrorString(cudaError_t e) { return cudaGetErrorName(e); }

cudaError_t cudaGetDeviceCount(int* count) {
  if (count == nullptr) return set_error(cudaErrorInvalidValue);
  *count = cuemu::kMaxDevices;
  return cudaSuccess;
}
cudaError_t cudaGetDevice(int* device) {
  if (device == nullptr) return set_error(cudaErrorInvalidValue);
  *device = g_device;
  return cudaSuccess;
}
cudaError_t cudaSetDevice(int device) {
  if (device < 0 || device >= cuemu::kMaxDevices) return set_error(cudaErrorInvalidDevice);
  g_device = device;
  return cudaSuccess;
}

cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device) {
  if (value == nullptr) return set_error(cudaErrorInvalidValue);
  if (device < 0 || device >= cuemu::kMaxDevices) return set_error(cudaErrorInvalidDevice);
  const auto& c = g_devices[device];
  g_devices[device].used = true;
  switch (attr) {
    case cudaDevAttrMaxThreadsPerBlock:
      *value = 1024;
      break;
    case cudaDevAttrMaxBlockDimX:
    case cudaDevAttrMaxBlockDimY:
      *value = 1024;
      break;
    case cudaDevAttrMaxBlockDimZ:
      *value = 64;
      break;
    case cudaDevAttrMaxGridDimX:
      *value = INT_MAX;
      break;
    case cudaDevAttrMaxGridDimY:
    case cudaDevAttrMaxGridDimZ:
      *value = 65535;
      break;
    case cudaDevAttrMaxSharedMemoryPerBlock:
      *value = 48 * 1024;
      break;
    case cudaDevAttrWarpSize:
      *value = 32;
      break;
    case cudaDevAttrMultiProcessorCount:
      *value = c.sms;
      break;
    case cudaDevAttrMaxThreadsPerMultiProcessor:
      *value = c.threads_per_sm;
      break;
    case cudaDevAttrComputeCapabilityMajor:
      *value = 9;
      break;
    case cudaDevAttrComputeCapabilityMinor:
      *value = 0;
      break;
    case cudaDevAttrMaxSharedMemoryPerMultiprocessor:
      *value = 228 * 1024;
      break;
    case cudaDevAttrMaxBlocksPerMultiprocessor:
      *value = 32;
      break;
    default:
      return set_error(cudaErrorInvalidValue);
  }
  return cudaSuccess;
}

cudaError_t cudaDeviceSynchronize() {
  g_counters.synchronizations += 1;
  return cudaSuccess;
}

cudaError_t cudaStreamCreate(cudaStream_t* stream) {
  if (stream == nullptr) return set_error(cudaErrorInvalidValue);
  auto* s = new CUstream_st{cuemu::detail::g_next_stream_id++};
  g_streams.insert(s);
  *stream = s;
  return cudaSuccess;
}
cudaError_t cudaStreamDestroy(cudaStream_t stream) {
  if (g_streams.erase(stream) == 0) return set_error(cudaErrorInvalidResourceHandle);
  delete stream;
  return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t stream) {
  g_counters.synchronizations += 1;
  if (!cuemu::detail::valid_stream(stream)) return set_error(cudaErrorInvalidResourceHandle);
  return cudaSuccess;
}

cudaError_t cudaMalloc(void** ptr, size_t bytes) {
  g_counters.allocations += 1;
  if (ptr == nullptr) return set_error(cudaErrorInvalidValue);
  *ptr = bytes == 0 ? nullptr : std::aligned_alloc(256, (bytes + 255) / 256 * 256);
  return *ptr == nullptr && bytes != 0 ? set_error(cudaErrorMemoryAllocation) : cudaSuccess;
}
cudaError_t cudaFree(void* ptr) {
  g_counters.allocations += 1;
  std::free(ptr);
  return cudaSuccess;
}

namespace {
cudaError_t enqueue_copy(cuemu::Enqueued::Kind kind, void* dst, const void* src, int value, size_t bytes,
                         cudaStream_t stream) {
  cuemu::Enqueued e;
  e.kind = kind;
  e.expr = kind == cuemu::Enqueued::kMemset ? "cudaMemsetAsync" : "cudaMemcpyAsync";
  e.stream = stream;
  e.bytes = bytes;
  if (!cuemu::detail::valid_stream(stream)) {
    e.error = cudaErrorInvalidResourceHandle;
  } else if (bytes > 0 && (dst == nullptr || (kind == cuemu::Enqueued::kMemcpy && src == nullptr))) {
    e.error = cudaErrorInvalidValue;
  }
  g_log.push_back(e);
  if (e.error != cudaSuccess) return set_error(static_cast<cudaError_t>(e.error));
  if (bytes == 0) return cudaSuccess;
  if (kind == cuemu::Enqueued::kMemset) {
    std::memset(dst, value, bytes);
  } else {
    std::memmove(dst, src, bytes);
  }
  return cudaSuccess;
}
}  // namespace

cudaError_t cudaMemsetAsync(void* ptr, int value, size_t bytes, cudaStream_t stream) {
  return enqueue_copy(cuemu::Enqueued::kMemset, ptr, nullptr, value, bytes, stream);
}
cudaError_t cudaMemset(void* ptr, int value, size_t bytes) {
  g_counters.synchronizations += 1;
  return enqueue_copy(cuemu::Enqueued::kMemset, ptr, nullptr, value, bytes, nullptr);
}
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind, cudaStream_t stream) {
  return enqueue_copy(cuemu::Enqueued::kMemcpy, dst, src, 0, bytes, stream);
}
cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind) {
  g_counters.synchronizations += 1;
  return enqueue_copy(cuemu::Enqueued::kMemcpy, dst, src, 0, bytes, nullptr);
}
