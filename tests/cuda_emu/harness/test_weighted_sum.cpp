// launch_weighted_sum_forward / launch_weighted_sum_backward against float64
// references. Storage: `samples` blocks of `inner` elements, each input with
// its own sample stride (kernels.h); layouts here are dense and strided
// blocks (strides that keep 16-byte packs and odd ones, mixed), aligned vs
// misaligned bases, inner sizes that do or do not divide into 16-byte packs,
// per-sample and shared weights. The gaps between blocks of an input are NaN:
// a kernel reading one shows in the results.
#include <cstring>
#include <set>

#include "harness.h"

// Case tables leave trailing fields at their defaults.
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"

namespace emu {
namespace {

using pynas::cuda::kMaxInlineInputs;

template <typename V>
std::string join(const std::vector<V>& v) {
  std::string s;
  for (auto i : v) s += (s.empty() ? "" : ",") + std::to_string(i);
  return s;
}

// Sample stride of input i: inner + pad[i % pad.size()] (pad empty: inner).
int64_t stride_of(const std::vector<int64_t>& pad, int64_t i, int64_t inner) {
  return pad.empty() ? inner : inner + pad[static_cast<size_t>(i) % pad.size()];
}

// `samples` blocks of `inner` random values `stride` apart; gaps stay NaN.
Tensor blocks(DType dt, int64_t samples, int64_t inner, int64_t stride, bool misaligned, Rng& rng) {
  const int64_t count = samples == 0 || inner == 0 ? 0 : (samples - 1) * stride + inner;
  Tensor t = Tensor::flat(dt, count, misaligned);
  for (int64_t s = 0; s < samples; ++s) {
    for (int64_t e = 0; e < inner; ++e) t.put(s * stride + e, round_to(dt, rng.uniform(-2, 2)));
  }
  return t;
}

// ------------------------------------------------------------- forward
struct FwdCase {
  const char* what;
  int64_t k, samples, inner;
  std::vector<int> misaligned_x;  // inputs whose base is one element off 16-byte alignment
  bool misaligned_out;
  bool shared_w = false;     // weights [k] with samples > 1 (else [samples, k])
  std::vector<int64_t> pad;  // sample stride of input i: inner + pad[i % size] (empty: dense)
  bool null_strides = false; // pass the stride arrays as null (dense inputs)
};

const std::vector<FwdCase> kFwdCases = {
    {"one sample, packs", 3, 1, 1000, {}, false},
    {"one sample, partial last pack", 3, 1, 1003, {}, false},
    {"per-sample weights, packs", 5, 4, 64, {}, false},
    {"inner not a pack multiple", 2, 3, 7, {}, false},
    {"misaligned input", 4, 2, 96, {2}, false},
    {"misaligned output", 4, 2, 96, {}, true},
    {"k = 1", 1, 1, 5, {}, false},
    {"k > kMaxInlineInputs (device pointer table)", 130, 2, 24, {}, false},
    {"k > kMaxInlineInputs, misaligned", 129, 1, 13, {0}, false},
    {"empty (inner = 0)", 3, 5, 0, {}, false},
    {"grid-stride loops", 2, 3, 3000, {}, false},
    {"grid-stride loops, scalar", 2, 3, 2999, {}, false},
    {"shared weights, dense samples (flat path)", 3, 4, 24, {}, false, true},
    {"shared weights, dense, null strides", 3, 4, 24, {}, false, true, {}, true},
    {"per-sample weights, null strides", 3, 4, 24, {}, false, false, {}, true},
    {"strided samples, packable strides", 3, 3, 64, {}, false, false, {64}},
    {"strided samples, shared weights", 3, 3, 64, {}, false, true, {16}},
    {"strided samples, odd strides (scalar)", 3, 3, 64, {}, false, false, {3}},
    {"strided samples, mixed dense / packable / odd", 3, 4, 48, {}, false, true, {0, 8, 5}},
    {"strided samples, misaligned input", 2, 3, 32, {1}, false, false, {16}},
    {"strided samples, inner not a pack multiple", 2, 3, 7, {}, false, true, {2}},
    {"strided samples, k > kMaxInlineInputs (device stride table)", 130, 3, 16, {}, false, false, {0, 8}},
    {"strided samples, k > kMaxInlineInputs, shared weights, odd", 129, 2, 9, {}, false, true, {3}},
    {"dense, k > kMaxInlineInputs, shared weights (no stride table)", 130, 2, 16, {}, false, true, {}},
    {"strided samples, grid-stride loops", 2, 3, 2048, {}, false, true, {32}},
};

void run_forward(Suite& suite, const FwdCase& cs, DType dt, const Env& env, uint64_t seed) {
  enter(env);
  const std::string ctx = strf(
      "weighted_sum_forward[%s, %s: k=%lld samples=%lld inner=%lld misaligned_x={%s} misaligned_out=%d "
      "shared_w=%d pad={%s} null_strides=%d] env=%s",
      dtype_name(dt), cs.what, (long long)cs.k, (long long)cs.samples, (long long)cs.inner,
      join(cs.misaligned_x).c_str(), cs.misaligned_out, cs.shared_w, join(cs.pad).c_str(), cs.null_strides, env.name);
  Rng rng(seed);
  const std::set<int> mis(cs.misaligned_x.begin(), cs.misaligned_x.end());
  const int64_t total = cs.samples * cs.inner;
  const int64_t w_samples = cs.shared_w ? 1 : cs.samples;
  std::vector<Tensor> xs;
  std::vector<const void*> ptrs;
  std::vector<int64_t> strides;
  for (int64_t i = 0; i < cs.k; ++i) {
    strides.push_back(stride_of(cs.pad, i, cs.inner));
    xs.push_back(blocks(dt, cs.samples, cs.inner, strides.back(), mis.count(static_cast<int>(i)) != 0, rng));
    ptrs.push_back(xs.back().data());
  }
  Tensor w = Tensor::flat(acc_dtype(dt), w_samples * cs.k);
  w.fill_random(rng, -1.5, 1.5);
  Tensor out = Tensor::flat(dt, total, cs.misaligned_out);
  DevBuf table(ptrs.size() * sizeof(void*));  // the device copy of the pointer table
  std::memcpy(table.data(), ptrs.data(), ptrs.size() * sizeof(void*));
  DevBuf stable(strides.size() * sizeof(int64_t));  // and of the strides
  std::memcpy(stable.data(), strides.data(), strides.size() * sizeof(int64_t));
  bool dense = true;
  for (int64_t st : strides) dense = dense && st == cs.inner;
  std::vector<std::pair<const Tensor*, std::vector<uint8_t>>> inputs;
  for (const Tensor& x : xs) inputs.emplace_back(&x, x.snapshot());
  inputs.emplace_back(&w, w.snapshot());

  {
    LaunchScope scope(suite, ctx);
    // The device tables only when needed (they must not be read otherwise).
    const bool big = cs.k > kMaxInlineInputs;
    const void* const* dev = big ? static_cast<const void* const*>(table.data()) : nullptr;
    const int64_t* dev_st = big && !dense ? static_cast<const int64_t*>(stable.data()) : nullptr;
    const cudaError_t err = pynas::cuda::launch_weighted_sum_forward(
        dt, ptrs.data(), dev, cs.null_strides ? nullptr : strides.data(), dev_st, cs.k, w.data(), w_samples,
        cs.samples, cs.inner, out.data(), scope.stream());
    scope.finish(err, total == 0 ? LaunchScope::kNoLaunches : LaunchScope::kSomeLaunches);
  }
  Compare cmp(suite, ctx, "out");
  for (int64_t s = 0; s < cs.samples; ++s) {
    for (int64_t e = 0; e < cs.inner; ++e) {
      const int64_t i = s * cs.inner + e;
      double ref = 0, mag = 0;
      for (int64_t k = 0; k < cs.k; ++k) {
        const double t = w.at((cs.shared_w ? 0 : s) * cs.k + k) * xs[k].at(s * strides[k] + e);
        ref += t;
        mag += std::fabs(t);
      }
      cmp.close(strf("out[%lld]", (long long)i), out.at(i), ref, tolerance(dt, ref, mag, 2.0 * cs.k));
    }
  }
  cmp.finish();
  check_untouched(suite, ctx, {&out}, inputs);
}

// ------------------------------------------------------------- backward
struct BwdCase {
  const char* what;
  int64_t k, samples, inner;
  std::vector<int> null_gx;  // grad_xs entries passed as null (-1: all of them)
  bool need_w;               // grad_weights requested
  int64_t bps;               // blocks per sample; 0: weighted_sum_backward_blocks_per_sample
  std::vector<int> misaligned_x;
  bool misaligned_grad;
  int misaligned_gx;  // index of a grad_xs entry with a misaligned base, or -1
  bool shared_w = false;     // weights [k] with samples > 1
  std::vector<int64_t> pad;  // xs sample strides: inner + pad[i % size] (empty: dense)
  int64_t grad_pad = 0;      // grad's sample stride: inner + grad_pad
};

const std::vector<BwdCase> kBwdCases = {
    {"one sample, packs", 3, 1, 1000, {}, true, 0, {}, false, -1},
    {"partial last pack, a null grad_x", 3, 1, 1003, {1}, true, 3, {}, false, -1},
    {"per-sample weights, bps 1", 5, 4, 64, {}, true, 1, {}, false, -1},
    {"inner not a pack multiple", 2, 3, 7, {}, true, 0, {}, false, -1},
    {"misaligned x", 4, 2, 96, {}, true, 2, {1}, false, -1},
    {"misaligned grad, no grad_weights", 4, 2, 96, {}, false, 0, {}, true, -1},
    {"misaligned grad_x", 4, 2, 96, {0}, true, 0, {}, false, 2},
    {"grad_weights only", 3, 2, 50, {-1}, true, 0, {}, false, -1},
    {"grad_xs only", 3, 2, 50, {}, false, 0, {}, false, -1},
    {"k > kMaxInlineInputs, two groups", 130, 2, 40, {3, 129}, true, 2, {}, false, -1},
    {"k > kMaxInlineInputs, first group without outputs", 129, 1, 33, {-2}, false, 0, {}, false, -1},
    {"empty (inner = 0), grad_weights", 3, 2, 0, {}, true, 0, {}, false, -1},
    {"empty (inner = 0), grad_xs only", 3, 2, 0, {}, false, 0, {}, false, -1},
    {"grid-stride loops", 2, 2, 4000, {}, true, 0, {}, false, -1},
    {"more blocks than useful", 2, 1, 300, {}, true, 7, {}, false, -1},
    {"shared weights, dense (flat path)", 3, 4, 64, {}, true, 0, {}, false, -1, true},
    {"shared weights, dense, bps 3", 3, 4, 64, {}, true, 3, {}, false, -1, true},
    {"strided grad (channel slice), per-sample", 3, 3, 64, {}, true, 0, {}, false, -1, false, {}, 192},
    {"strided grad, shared weights", 3, 3, 64, {}, true, 2, {}, false, -1, true, {}, 64},
    {"strided xs, per-sample", 3, 3, 64, {}, true, 0, {}, false, -1, false, {8}},
    {"strided xs and grad, shared weights", 3, 4, 48, {}, true, 0, {}, false, -1, true, {16}, 32},
    {"strided grad, odd stride (scalar)", 3, 3, 64, {}, true, 0, {}, false, -1, true, {}, 3},
    {"strided xs, mixed dense / packable / odd", 3, 3, 64, {}, true, 0, {}, false, -1, false, {0, 8, 5}, 8},
    {"strided grad, misaligned x", 2, 3, 32, {}, true, 0, {0}, false, -1, false, {16}, 16},
    {"strided grad, misaligned grad", 2, 3, 32, {}, false, 0, {}, true, -1, true, {}, 16},
    {"strided, inner not a pack multiple", 2, 3, 7, {}, true, 0, {}, false, -1, true, {2}, 5},
    {"strided xs ignored without grad_weights", 2, 3, 32, {}, false, 0, {}, false, -1, true, {3}, 0},
    {"strided, k > kMaxInlineInputs, two groups", 130, 2, 16, {5}, true, 0, {}, false, -1, true, {0, 8}, 16},
    {"strided, grid-stride loops", 2, 3, 2048, {}, true, 0, {}, false, -1, false, {32}, 64},
    {"empty (inner = 0), shared weights, strided", 3, 2, 0, {}, true, 0, {}, false, -1, true, {4}, 4},
};

bool is_null_gx(const BwdCase& cs, int64_t i) {
  for (int v : cs.null_gx) {
    if (v == -1 || v == i) return true;
    if (v == -2 && i < kMaxInlineInputs) return true;  // -2: the whole first group
  }
  return false;
}

void run_backward(Suite& suite, const BwdCase& cs, DType dt, const Env& env, uint64_t seed, bool determinism) {
  enter(env);
  const std::string ctx = strf(
      "weighted_sum_backward[%s, %s: k=%lld samples=%lld inner=%lld null_gx={%s} grad_weights=%d bps=%lld "
      "misaligned_x={%s} misaligned_grad=%d misaligned_gx=%d shared_w=%d pad={%s} grad_pad=%lld] env=%s",
      dtype_name(dt), cs.what, (long long)cs.k, (long long)cs.samples, (long long)cs.inner, join(cs.null_gx).c_str(),
      cs.need_w, (long long)cs.bps, join(cs.misaligned_x).c_str(), cs.misaligned_grad, cs.misaligned_gx, cs.shared_w,
      join(cs.pad).c_str(), (long long)cs.grad_pad, env.name);
  Rng rng(seed);
  const std::set<int> mis(cs.misaligned_x.begin(), cs.misaligned_x.end());
  const int64_t total = cs.samples * cs.inner;
  const int64_t w_samples = cs.shared_w ? 1 : cs.samples;
  const int64_t gstride = cs.inner + cs.grad_pad;
  Tensor grad = blocks(dt, cs.samples, cs.inner, gstride, cs.misaligned_grad, rng);
  std::vector<Tensor> xs;
  std::vector<const void*> xptrs;
  std::vector<int64_t> xstrides;
  for (int64_t i = 0; i < cs.k; ++i) {
    xstrides.push_back(stride_of(cs.pad, i, cs.inner));
    xs.push_back(blocks(dt, cs.samples, cs.inner, xstrides.back(), mis.count(static_cast<int>(i)) != 0, rng));
    xptrs.push_back(xs.back().data());
  }
  Tensor w = Tensor::flat(acc_dtype(dt), w_samples * cs.k);
  w.fill_random(rng, -1.5, 1.5);
  const int64_t bps = cs.bps > 0 ? cs.bps : pynas::cuda::weighted_sum_backward_blocks_per_sample(cs.samples, cs.inner);
  std::vector<std::pair<const Tensor*, std::vector<uint8_t>>> inputs;
  inputs.emplace_back(&grad, grad.snapshot());
  inputs.emplace_back(&w, w.snapshot());
  for (const Tensor& x : xs) inputs.emplace_back(&x, x.snapshot());

  // One run: fresh outputs and workspace, returns the bytes of the outputs.
  std::vector<Tensor> gxs;
  Tensor gw = Tensor::flat(acc_dtype(dt), w_samples * cs.k);
  auto once = [&](const std::string& c) {
    gxs.clear();
    std::vector<void*> gptrs;
    for (int64_t i = 0; i < cs.k; ++i) {
      gxs.push_back(Tensor::flat(dt, is_null_gx(cs, i) ? 0 : total, i == cs.misaligned_gx));
      gptrs.push_back(is_null_gx(cs, i) ? nullptr : gxs.back().data());
    }
    gw = Tensor::flat(acc_dtype(dt), w_samples * cs.k);
    DevBuf partial(static_cast<size_t>(cs.samples * bps * cs.k) * sizeof(double));  // NaN bytes
    bool any_out = cs.need_w;
    for (void* p : gptrs) any_out = any_out || p != nullptr;
    LaunchScope scope(suite, c);
    // Without grad_weights the xs and their strides are not read: pass the
    // strides anyway when there are some (they must be ignored).
    const cudaError_t err = pynas::cuda::launch_weighted_sum_backward(
        dt, grad.data(), gstride, cs.need_w ? xptrs.data() : nullptr, cs.pad.empty() ? nullptr : xstrides.data(),
        gptrs.data(), cs.k, w.data(), w_samples, cs.samples, cs.inner, bps,
        cs.need_w ? static_cast<double*>(partial.data()) : nullptr, cs.need_w ? gw.data() : nullptr,
        scope.stream());
    const bool some = any_out && (total > 0 || cs.need_w);
    scope.finish(err, some ? LaunchScope::kSomeLaunches : LaunchScope::kNoLaunches);
    std::vector<std::vector<uint8_t>> snaps;
    for (const Tensor& g : gxs) snaps.push_back(g.snapshot());
    snaps.push_back(gw.snapshot());
    return snaps;
  };
  const auto first = once(ctx);

  Compare cgx(suite, ctx, "grad_xs");
  for (int64_t k = 0; k < cs.k; ++k) {
    if (is_null_gx(cs, k)) continue;
    for (int64_t i = 0; i < total; ++i) {
      const int64_t smp = i / cs.inner;
      const double ref = w.at((cs.shared_w ? 0 : smp) * cs.k + k) * grad.at(smp * gstride + i % cs.inner);
      cgx.close(strf("grad_xs[%lld][%lld]", (long long)k, (long long)i), gxs[k].at(i), ref,
                tolerance(dt, ref, std::fabs(ref), 1));
    }
  }
  cgx.finish();
  if (cs.need_w) {
    Compare cgw(suite, ctx, "grad_weights");
    for (int64_t s = 0; s < w_samples; ++s) {
      for (int64_t k = 0; k < cs.k; ++k) {
        double ref = 0, mag = 0;
        // Shared weights: the sum over every sample.
        for (int64_t smp = cs.shared_w ? 0 : s; smp < (cs.shared_w ? cs.samples : s + 1); ++smp) {
          for (int64_t e = 0; e < cs.inner; ++e) {
            const double t = grad.at(smp * gstride + e) * xs[k].at(smp * xstrides[k] + e);
            ref += t;
            mag += std::fabs(t);
          }
        }
        // Per element: a product and the sums of a pack (<= 8), a warp (5)
        // and the block, in acc, then double.
        cgw.close(strf("grad_weights[%lld, %lld]", (long long)s, (long long)k), gw.at(s * cs.k + k), ref,
                  tolerance(acc_dtype(dt), ref, mag, 16));
      }
    }
    cgw.finish();
  }
  std::vector<const Tensor*> outs{&gw};
  for (const Tensor& g : gxs) outs.push_back(&g);
  check_untouched(suite, ctx, outs, inputs);

  if (determinism) {
    // kernels.h: bit-identical results from run to run; run again with the
    // blocks and threads started in the opposite order.
    cuemu::set_reverse_schedule(!env.reverse);
    const auto second = once(ctx + " (rerun, reversed schedule)");
    cuemu::set_reverse_schedule(env.reverse);
    Compare det(suite, ctx, "determinism (outputs of two runs)");
    for (size_t i = 0; i < first.size(); ++i) {
      det.truth(strf("output %zu", i), first[i] == second[i], "differs between two runs");
    }
  }
}

void test_forward(Suite& suite) {
  int i = 0;
  for (const FwdCase& cs : kFwdCases) {
    for (DType dt : kAllDtypes) {
      for (const Env& env : envs_for_case(i)) run_forward(suite, cs, dt, env, 1000 + i);
    }
    ++i;
  }
}

void test_backward(Suite& suite) {
  // kernels.h: any value >= 1 is correct; the function must return one.
  for (const Env& env : all_envs()) {
    enter(env);
    Compare cmp(suite, strf("weighted_sum_backward_blocks_per_sample env=%s", env.name), "blocks per sample >= 1");
    for (int64_t samples : {0, 1, 3, 1000, 1 << 20})
      for (int64_t inner : {0, 1, 1000, 1 << 24}) {
        const int64_t b = pynas::cuda::weighted_sum_backward_blocks_per_sample(samples, inner);
        cmp.truth(strf("(%lld, %lld)", (long long)samples, (long long)inner), b >= 1, strf("%lld", (long long)b));
      }
  }
  int i = 0;
  for (const BwdCase& cs : kBwdCases) {
    for (DType dt : kAllDtypes) {
      bool first = true;
      for (const Env& env : envs_for_case(i)) {
        run_backward(suite, cs, dt, env, 2000 + i, first && (cs.need_w || cs.inner > 0));
        first = false;
      }
    }
    ++i;
  }
}

Register r1("weighted_sum_forward", "launch_weighted_sum_forward", test_forward);
Register r2("weighted_sum_backward", "launch_weighted_sum_backward, weighted_sum_backward_blocks_per_sample",
            test_backward);

}  // namespace
}  // namespace emu
