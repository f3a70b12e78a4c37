// launch_partial_channel_mix_forward / launch_partial_channel_mix_unshuffle
// against float64 references, over [N, C, S] layouts (contiguous,
// channels-last, padded, strided, batch-inner, misaligned) for each tensor.
#include <cstring>

#include "harness.h"

namespace emu {
namespace {

using pynas::cuda::kMaxInlineInputs;
using L = Layout;

// ------------------------------------------------------------- forward
struct FwdCase {
  const char* what;
  int64_t n, c, s, groups, k;
  bool per_sample;  // weights [n, k] (else [1, k])
  Layout ys, x, out;
};

const std::vector<FwdCase> kFwdCases = {
    {"contiguous, packs", 2, 8, 16, 4, 3, true, L::kContig, L::kContig, L::kContig},
    {"s not a pack multiple, shared weights", 2, 8, 5, 4, 2, false, L::kContig, L::kContig, L::kContig},
    {"channels-last", 2, 8, 16, 4, 3, true, L::kChannelsLast, L::kChannelsLast, L::kChannelsLast},
    {"mixed layouts", 2, 8, 16, 2, 3, true, L::kPadded, L::kChannelsLast, L::kContig},
    {"gaps, still packable", 3, 6, 16, 3, 2, true, L::kPadded, L::kPadded, L::kPadded},
    {"gaps, odd strides", 2, 6, 16, 3, 2, true, L::kPaddedOdd, L::kPaddedOdd, L::kPaddedOdd},
    {"misaligned x", 2, 8, 16, 4, 2, true, L::kContig, L::kMisaligned, L::kContig},
    {"misaligned out", 2, 8, 16, 4, 2, false, L::kContig, L::kContig, L::kMisaligned},
    {"misaligned ys", 2, 8, 16, 4, 2, true, L::kMisaligned, L::kContig, L::kContig},
    {"strided s", 2, 8, 16, 4, 2, true, L::kStrideS2, L::kStrideS2, L::kStrideS2},
    {"batch-inner", 3, 4, 16, 2, 2, true, L::kBatchInner, L::kBatchInner, L::kBatchInner},
    {"channels-last padded out", 2, 6, 8, 2, 2, true, L::kContig, L::kBatchInner, L::kChannelsLastPadded},
    {"groups = 1", 2, 4, 16, 1, 3, true, L::kContig, L::kContig, L::kContig},
    {"groups = c", 2, 4, 16, 4, 2, true, L::kContig, L::kContig, L::kContig},
    {"c = 1", 2, 1, 16, 1, 2, true, L::kChannelsLast, L::kChannelsLast, L::kChannelsLast},
    {"s = 1, channels-last strides", 3, 4, 1, 2, 2, true, L::kChannelsLast, L::kChannelsLast, L::kChannelsLast},
    {"k > kMaxInlineInputs, packs", 1, 8, 16, 4, 130, false, L::kContig, L::kContig, L::kContig},
    {"k > kMaxInlineInputs, channels-last", 2, 4, 9, 2, 129, true, L::kContig, L::kContig, L::kChannelsLast},
    {"empty n", 0, 4, 8, 2, 2, true, L::kContig, L::kContig, L::kContig},
    {"empty c", 2, 0, 8, 2, 2, true, L::kContig, L::kContig, L::kContig},
    {"empty s", 2, 4, 0, 2, 2, true, L::kContig, L::kContig, L::kContig},
    {"grid-stride loops", 2, 16, 200, 4, 2, true, L::kContig, L::kContig, L::kContig},
    {"grid-stride loops, channels-last", 2, 16, 200, 4, 2, true, L::kContig, L::kContig, L::kChannelsLast},
    {"channels-last, channel packs", 2, 32, 9, 4, 3, true, L::kChannelsLast, L::kChannelsLast, L::kChannelsLast},
    {"channels-last, channel packs, groups 2", 2, 16, 6, 2, 2, false, L::kChannelsLast, L::kChannelsLast,
     L::kChannelsLast},
    {"channels-last, cg not a pack multiple", 2, 24, 5, 4, 2, true, L::kChannelsLast, L::kChannelsLast,
     L::kChannelsLast},
    {"channels-last out, contiguous ys (element loads)", 2, 32, 9, 4, 2, true, L::kContig, L::kChannelsLast,
     L::kChannelsLast},
    {"channels-last padded (strides not pack multiples)", 2, 16, 6, 2, 2, true, L::kChannelsLastPadded,
     L::kChannelsLastPadded, L::kChannelsLastPadded},
    {"k > kMaxInlineInputs, channel packs", 1, 16, 4, 2, 130, false, L::kChannelsLast, L::kChannelsLast,
     L::kChannelsLast},
    {"grid-stride loops, channel packs", 2, 64, 100, 4, 2, true, L::kChannelsLast, L::kChannelsLast,
     L::kChannelsLast},
};

void run_forward(Suite& suite, const FwdCase& cs, DType dt, const Env& env, uint64_t seed) {
  enter(env);
  const int64_t cg = cs.c / cs.groups;
  const std::string ctx =
      strf("partial_channel_mix_forward[%s, %s: n=%lld c=%lld s=%lld groups=%lld k=%lld per_sample=%d ys=%s x=%s "
           "out=%s] env=%s",
           dtype_name(dt), cs.what, (long long)cs.n, (long long)cs.c, (long long)cs.s, (long long)cs.groups,
           (long long)cs.k, cs.per_sample, layout_name(cs.ys), layout_name(cs.x), layout_name(cs.out), env.name);
  Rng rng(seed);
  std::vector<Tensor> ys;
  std::vector<const void*> ptrs;
  for (int64_t i = 0; i < cs.k; ++i) {
    ys.emplace_back(dt, cs.n, cg, cs.s, cs.ys);
    ys.back().fill_random(rng, -2, 2);
    ptrs.push_back(ys.back().data());
  }
  const int64_t w_samples = cs.per_sample ? cs.n : 1;
  Tensor w = Tensor::flat(acc_dtype(dt), w_samples * cs.k);
  w.fill_random(rng, -1.5, 1.5);
  Tensor x(dt, cs.n, cs.c, cs.s, cs.x);
  x.fill_random(rng, -2, 2);
  Tensor out(dt, cs.n, cs.c, cs.s, cs.out);
  DevBuf table(ptrs.size() * sizeof(void*));
  std::memcpy(table.data(), ptrs.data(), ptrs.size() * sizeof(void*));
  std::vector<std::pair<const Tensor*, std::vector<uint8_t>>> inputs{{&x, x.snapshot()}, {&w, w.snapshot()}};
  for (const Tensor& y : ys) inputs.emplace_back(&y, y.snapshot());
  {
    LaunchScope scope(suite, ctx);
    const void* const* dev = cs.k > kMaxInlineInputs ? static_cast<const void* const*>(table.data()) : nullptr;
    const cudaError_t err = pynas::cuda::launch_partial_channel_mix_forward(
        dt, ptrs.data(), dev, cs.k, ys.empty() ? NcsStrides{} : ys[0].strides(), w.data(), w_samples, x.data(),
        x.strides(), out.data(), out.strides(), cs.n, cs.c, cs.s, cs.groups, scope.stream());
    scope.finish(err, out.numel() == 0 ? LaunchScope::kNoLaunches : LaunchScope::kSomeLaunches);
  }
  Compare cmp(suite, ctx, "out");
  for (int64_t n = 0; n < cs.n; ++n) {
    for (int64_t o = 0; o < cs.c; ++o) {
      const int64_t j = o / cs.groups, i = o % cs.groups;
      for (int64_t s = 0; s < cs.s; ++s) {
        const std::string where = strf("out[%lld, %lld, %lld]", (long long)n, (long long)o, (long long)s);
        if (i != 0) {
          cmp.exact_bits(where, out.bits(n, o, s), x.bits(n, i * cg + j, s));
          continue;
        }
        double ref = 0, mag = 0;
        for (int64_t k = 0; k < cs.k; ++k) {
          const double t = w.at((cs.per_sample ? n : 0) * cs.k + k) * ys[k].get(n, j, s);
          ref += t;
          mag += std::fabs(t);
        }
        cmp.close(where, out.get(n, o, s), ref, tolerance(dt, ref, mag, 2.0 * cs.k));
      }
    }
  }
  cmp.finish();
  check_untouched(suite, ctx, {&out}, inputs);
}

// ------------------------------------------------------------- unshuffle
struct UnshuffleCase {
  const char* what;
  int64_t n, c, s, groups;
  Layout grad;
  bool want_sel, want_gx;
  Layout sel, gx;
};

const std::vector<UnshuffleCase> kUnshuffleCases = {
    {"both, contiguous, packs", 2, 8, 16, 4, L::kContig, true, true, L::kContig, L::kContig},
    {"both, s not a pack multiple", 2, 8, 5, 4, L::kContig, true, true, L::kContig, L::kContig},
    {"grad_sel only", 2, 8, 16, 4, L::kContig, true, false, L::kContig, L::kContig},
    {"grad_x only", 2, 8, 16, 4, L::kContig, false, true, L::kContig, L::kContig},
    {"neither", 2, 8, 16, 4, L::kContig, false, false, L::kContig, L::kContig},
    {"channels-last", 2, 8, 16, 2, L::kChannelsLast, true, true, L::kChannelsLast, L::kChannelsLast},
    {"grad_sel only, channels-last", 2, 8, 16, 2, L::kContig, true, false, L::kChannelsLast, L::kContig},
    {"gaps, packable", 3, 6, 16, 3, L::kPadded, true, true, L::kPadded, L::kPadded},
    {"gaps, odd", 2, 6, 16, 3, L::kPaddedOdd, true, true, L::kPaddedOdd, L::kPaddedOdd},
    {"strided s", 2, 8, 16, 4, L::kStrideS2, true, true, L::kStrideS2, L::kStrideS2},
    {"misaligned grad", 2, 8, 16, 4, L::kMisaligned, true, true, L::kContig, L::kContig},
    {"misaligned grad_x", 2, 8, 16, 4, L::kContig, true, true, L::kContig, L::kMisaligned},
    {"mixed", 2, 6, 16, 2, L::kBatchInner, true, true, L::kChannelsLastPadded, L::kContig},
    {"groups = 1", 2, 4, 16, 1, L::kContig, true, true, L::kContig, L::kContig},
    {"groups = c", 2, 4, 16, 4, L::kContig, true, true, L::kContig, L::kContig},
    {"empty n", 0, 4, 8, 2, L::kContig, true, true, L::kContig, L::kContig},
    {"empty s", 2, 4, 0, 2, L::kContig, true, true, L::kContig, L::kContig},
    {"grid-stride loops", 2, 16, 200, 4, L::kContig, true, true, L::kContig, L::kContig},
    {"grid-stride loops, channels-last", 2, 16, 200, 4, L::kChannelsLast, true, true, L::kContig, L::kChannelsLast},
    {"channels-last, channel packs", 2, 32, 9, 4, L::kChannelsLast, true, true, L::kChannelsLast, L::kChannelsLast},
    {"grad_sel only, channel packs", 2, 16, 9, 2, L::kChannelsLast, true, false, L::kChannelsLast, L::kContig},
    {"grad_x only, channel packs, contiguous grad", 2, 32, 5, 4, L::kContig, false, true, L::kContig,
     L::kChannelsLast},
    {"channel packs, cg not a pack multiple", 2, 24, 5, 4, L::kChannelsLast, true, true, L::kChannelsLast,
     L::kChannelsLast},
    {"grid-stride loops, channel packs", 2, 64, 100, 4, L::kChannelsLast, true, true, L::kChannelsLast,
     L::kChannelsLast},
};

void run_unshuffle(Suite& suite, const UnshuffleCase& cs, DType dt, const Env& env, uint64_t seed) {
  enter(env);
  const int64_t cg = cs.c / cs.groups;
  const std::string ctx =
      strf("partial_channel_mix_unshuffle[%s, %s: n=%lld c=%lld s=%lld groups=%lld grad=%s grad_sel=%s grad_x=%s] "
           "env=%s",
           dtype_name(dt), cs.what, (long long)cs.n, (long long)cs.c, (long long)cs.s, (long long)cs.groups,
           layout_name(cs.grad), cs.want_sel ? layout_name(cs.sel) : "null", cs.want_gx ? layout_name(cs.gx) : "null",
           env.name);
  Rng rng(seed);
  Tensor grad(dt, cs.n, cs.c, cs.s, cs.grad);
  grad.fill_random(rng, -2, 2);
  Tensor sel(dt, cs.n, cs.want_sel ? cg : 0, cs.s, cs.sel);
  Tensor gx(dt, cs.n, cs.want_gx ? cs.c : 0, cs.s, cs.gx);
  const auto snap = grad.snapshot();
  {
    LaunchScope scope(suite, ctx);
    const cudaError_t err = pynas::cuda::launch_partial_channel_mix_unshuffle(
        dt, grad.data(), grad.strides(), cs.want_sel ? sel.data() : nullptr, sel.strides(),
        cs.want_gx ? gx.data() : nullptr, gx.strides(), cs.n, cs.c, cs.s, cs.groups, scope.stream());
    const bool some = (cs.want_sel || cs.want_gx) && grad.numel() > 0;
    scope.finish(err, some ? LaunchScope::kSomeLaunches : LaunchScope::kNoLaunches);
  }
  Compare cmp(suite, ctx, "grad_sel / grad_x");
  for (int64_t n = 0; n < cs.n; ++n) {
    for (int64_t o = 0; o < cs.c; ++o) {
      const int64_t j = o / cs.groups, i = o % cs.groups;
      for (int64_t s = 0; s < cs.s; ++s) {
        if (i == 0) {
          if (cs.want_sel) {
            cmp.exact_bits(strf("grad_sel[%lld, %lld, %lld]", (long long)n, (long long)j, (long long)s),
                           sel.bits(n, j, s), grad.bits(n, o, s));
          }
          if (cs.want_gx) {
            cmp.exact_bits(strf("grad_x[%lld, %lld, %lld]", (long long)n, (long long)j, (long long)s),
                           gx.bits(n, j, s), 0);
          }
        } else if (cs.want_gx) {
          cmp.exact_bits(strf("grad_x[%lld, %lld, %lld]", (long long)n, (long long)(i * cg + j), (long long)s),
                         gx.bits(n, i * cg + j, s), grad.bits(n, o, s));
        }
      }
    }
  }
  cmp.finish();
  check_untouched(suite, ctx, {&sel, &gx}, {{&grad, snap}});
}

void test_forward(Suite& suite) {
  int i = 0;
  for (const FwdCase& cs : kFwdCases) {
    for (DType dt : kAllDtypes) {
      for (const Env& env : envs_for_case(i)) run_forward(suite, cs, dt, env, 3000 + i);
    }
    ++i;
  }
}

void test_unshuffle(Suite& suite) {
  int i = 0;
  for (const UnshuffleCase& cs : kUnshuffleCases) {
    for (DType dt : kAllDtypes) {
      for (const Env& env : envs_for_case(i)) run_unshuffle(suite, cs, dt, env, 4000 + i);
    }
    ++i;
  }
}

Register r1("partial_channel_mix_forward", "launch_partial_channel_mix_forward", test_forward);
Register r2("partial_channel_mix_unshuffle", "launch_partial_channel_mix_unshuffle", test_unshuffle);

}  // namespace
}  // namespace emu
