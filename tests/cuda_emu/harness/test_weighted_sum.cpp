// launch_weighted_sum_forward / launch_weighted_sum_backward against float64
// references. Storage: flat, batch-major (kernels.h); layouts here are
// aligned vs misaligned bases and inner sizes that do or do not divide into
// 16-byte packs.
#include <cstring>
#include <set>

#include "harness.h"

namespace emu {
namespace {

using pynas::cuda::kMaxInlineInputs;

std::string join(const std::vector<int>& v) {
  std::string s;
  for (int i : v) s += (s.empty() ? "" : ",") + std::to_string(i);
  return s;
}

// ------------------------------------------------------------- forward
struct FwdCase {
  const char* what;
  int64_t k, samples, inner;
  std::vector<int> misaligned_x;  // inputs whose base is one element off 16-byte alignment
  bool misaligned_out;
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
};

void run_forward(Suite& suite, const FwdCase& cs, DType dt, const Env& env, uint64_t seed) {
  enter(env);
  const std::string ctx =
      strf("weighted_sum_forward[%s, %s: k=%lld samples=%lld inner=%lld misaligned_x={%s} misaligned_out=%d] env=%s",
           dtype_name(dt), cs.what, (long long)cs.k, (long long)cs.samples, (long long)cs.inner,
           join(cs.misaligned_x).c_str(), cs.misaligned_out, env.name);
  Rng rng(seed);
  const std::set<int> mis(cs.misaligned_x.begin(), cs.misaligned_x.end());
  const int64_t total = cs.samples * cs.inner;
  std::vector<Tensor> xs;
  std::vector<const void*> ptrs;
  for (int64_t i = 0; i < cs.k; ++i) {
    xs.push_back(Tensor::flat(dt, total, mis.count(static_cast<int>(i)) != 0));
    xs.back().fill_random(rng, -2, 2);
    ptrs.push_back(xs.back().data());
  }
  Tensor w = Tensor::flat(acc_dtype(dt), cs.samples * cs.k);
  w.fill_random(rng, -1.5, 1.5);
  Tensor out = Tensor::flat(dt, total, cs.misaligned_out);
  DevBuf table(ptrs.size() * sizeof(void*));  // the device copy of the pointer table
  std::memcpy(table.data(), ptrs.data(), ptrs.size() * sizeof(void*));
  std::vector<std::pair<const Tensor*, std::vector<uint8_t>>> inputs;
  for (const Tensor& x : xs) inputs.emplace_back(&x, x.snapshot());
  inputs.emplace_back(&w, w.snapshot());

  {
    LaunchScope scope(suite, ctx);
    // The device table only when needed (it must not be read otherwise).
    const void* const* dev = cs.k > kMaxInlineInputs ? static_cast<const void* const*>(table.data()) : nullptr;
    const cudaError_t err = pynas::cuda::launch_weighted_sum_forward(dt, ptrs.data(), dev, cs.k, w.data(),
                                                                     cs.samples, cs.inner, out.data(), scope.stream());
    scope.finish(err, total == 0 ? LaunchScope::kNoLaunches : LaunchScope::kSomeLaunches);
  }
  Compare cmp(suite, ctx, "out");
  for (int64_t s = 0; s < cs.samples; ++s) {
    for (int64_t e = 0; e < cs.inner; ++e) {
      const int64_t i = s * cs.inner + e;
      double ref = 0, mag = 0;
      for (int64_t k = 0; k < cs.k; ++k) {
        const double t = w.at(s * cs.k + k) * xs[k].at(i);
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
      "misaligned_x={%s} misaligned_grad=%d misaligned_gx=%d] env=%s",
      dtype_name(dt), cs.what, (long long)cs.k, (long long)cs.samples, (long long)cs.inner, join(cs.null_gx).c_str(),
      cs.need_w, (long long)cs.bps, join(cs.misaligned_x).c_str(), cs.misaligned_grad, cs.misaligned_gx, env.name);
  Rng rng(seed);
  const std::set<int> mis(cs.misaligned_x.begin(), cs.misaligned_x.end());
  const int64_t total = cs.samples * cs.inner;
  Tensor grad = Tensor::flat(dt, total, cs.misaligned_grad);
  grad.fill_random(rng, -2, 2);
  std::vector<Tensor> xs;
  std::vector<const void*> xptrs;
  for (int64_t i = 0; i < cs.k; ++i) {
    xs.push_back(Tensor::flat(dt, total, mis.count(static_cast<int>(i)) != 0));
    xs.back().fill_random(rng, -2, 2);
    xptrs.push_back(xs.back().data());
  }
  Tensor w = Tensor::flat(acc_dtype(dt), cs.samples * cs.k);
  w.fill_random(rng, -1.5, 1.5);
  const int64_t bps = cs.bps > 0 ? cs.bps : pynas::cuda::weighted_sum_backward_blocks_per_sample(cs.samples, cs.inner);
  std::vector<std::pair<const Tensor*, std::vector<uint8_t>>> inputs;
  inputs.emplace_back(&grad, grad.snapshot());
  inputs.emplace_back(&w, w.snapshot());
  for (const Tensor& x : xs) inputs.emplace_back(&x, x.snapshot());

  // One run: fresh outputs and workspace, returns the bytes of the outputs.
  std::vector<Tensor> gxs;
  Tensor gw = Tensor::flat(acc_dtype(dt), cs.samples * cs.k);
  auto once = [&](const std::string& c) {
    gxs.clear();
    std::vector<void*> gptrs;
    for (int64_t i = 0; i < cs.k; ++i) {
      gxs.push_back(Tensor::flat(dt, is_null_gx(cs, i) ? 0 : total, i == cs.misaligned_gx));
      gptrs.push_back(is_null_gx(cs, i) ? nullptr : gxs.back().data());
    }
    gw = Tensor::flat(acc_dtype(dt), cs.samples * cs.k);
    DevBuf partial(static_cast<size_t>(cs.samples * bps * cs.k) * sizeof(double));  // NaN bytes
    bool any_out = cs.need_w;
    for (void* p : gptrs) any_out = any_out || p != nullptr;
    LaunchScope scope(suite, c);
    const cudaError_t err = pynas::cuda::launch_weighted_sum_backward(
        dt, grad.data(), cs.need_w ? xptrs.data() : nullptr, gptrs.data(), cs.k, w.data(), cs.samples, cs.inner,
        bps, cs.need_w ? static_cast<double*>(partial.data()) : nullptr, cs.need_w ? gw.data() : nullptr,
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
      const double ref = w.at((i / cs.inner) * cs.k + k) * grad.at(i);
      cgx.close(strf("grad_xs[%lld][%lld]", (long long)k, (long long)i), gxs[k].at(i), ref,
                tolerance(dt, ref, std::fabs(ref), 1));
    }
  }
  cgx.finish();
  if (cs.need_w) {
    Compare cgw(suite, ctx, "grad_weights");
    for (int64_t s = 0; s < cs.samples; ++s) {
      for (int64_t k = 0; k < cs.k; ++k) {
        double ref = 0, mag = 0;
        for (int64_t e = 0; e < cs.inner; ++e) {
          const double t = grad.at(s * cs.inner + e) * xs[k].at(s * cs.inner + e);
          ref += t;
          mag += std::fabs(t);
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
