// The grouped_batch_norm launchers against float64 references: statistics,
// apply, backward reduce and backward input, over [N, C, S] layouts that pick
// the row (stride_s 1, s >= 32; packed or not) and column kernels, split
// counts (parts) from 1 to more than S has chunks, groups without samples,
// and empty inputs. The reductions are checked bit-identical across runs.
#include <cstring>

#include "harness.h"

namespace emu {
namespace {

using L = Layout;
constexpr double kEps = 1e-5;

// groups[i] for n samples and g groups: group 1 (when g > 2) gets no sample.
std::vector<int64_t> make_groups(Rng& rng, int64_t n, int64_t g) {
  std::vector<int64_t> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    int64_t x = rng.below(g);
    if (g > 2 && x == 1) x = 0;
    v[i] = x;
  }
  return v;
}

// Tolerance of a value reduced in double and stored in dt's acc type.
double tol_double_sum(DType dt, double value, double magnitude, double ops) {
  return 1.001 * (unit_roundoff(acc_dtype(dt)) * std::fabs(value) + std::ldexp(1.0, -53) * (ops + 1) * magnitude) +
         abs_floor(acc_dtype(dt));
}

// The group index of kernels.h: offsets [g + 1], then the samples in group
// order (stable), built here independently of the glue.
std::vector<int64_t> group_index(const std::vector<int64_t>& gv, int64_t g) {
  std::vector<int64_t> idx(static_cast<size_t>(g + 1), 0);
  for (int64_t grp = 0; grp < g; ++grp) {
    int64_t count = 0;
    for (int64_t v : gv) count += v == grp;
    idx[grp + 1] = idx[grp] + count;
  }
  for (int64_t grp = 0; grp < g; ++grp) {
    for (size_t i = 0; i < gv.size(); ++i) {
      if (gv[i] == grp) idx.push_back(static_cast<int64_t>(i));
    }
  }
  return idx;
}

std::string parts_str(int64_t parts) { return parts == 0 ? "auto" : std::to_string(parts); }

int64_t pick_parts(int64_t want, int64_t n, int64_t c, int64_t s, bool s_inner) {
  return want > 0 ? want : pynas::cuda::grouped_batch_norm_parts(n, c, s, s_inner);
}

// Same bytes in both lists (determinism).
void same_bytes(Suite& suite, const std::string& ctx, const std::vector<std::vector<uint8_t>>& a,
                const std::vector<std::vector<uint8_t>>& b) {
  Compare det(suite, ctx, "determinism (outputs of two runs)");
  for (size_t i = 0; i < a.size(); ++i) det.truth(strf("output %zu", i), a[i] == b[i], "differs between two runs");
}

// ------------------------------------------------------------- statistics
struct StatsCase {
  const char* what;
  int64_t n, c, s, groups;
  Layout x;
  int64_t parts;  // 0: grouped_batch_norm_parts
};

const std::vector<StatsCase> kStatsCases = {
    {"rows, packs", 5, 3, 40, 3, L::kContig, 0},
    {"rows, s not a pack multiple", 5, 3, 37, 3, L::kContig, 0},
    {"columns (s < 32)", 5, 3, 10, 3, L::kContig, 0},
    {"columns, channels-last", 5, 3, 40, 3, L::kChannelsLast, 0},
    {"columns, strided s", 4, 3, 40, 2, L::kStrideS2, 0},
    {"rows with gaps, packs", 5, 3, 48, 3, L::kPadded, 0},
    {"rows with gaps, odd", 5, 3, 48, 3, L::kPaddedOdd, 0},
    {"rows, misaligned", 5, 3, 40, 3, L::kMisaligned, 0},
    {"rows, batch-inner", 4, 3, 40, 2, L::kBatchInner, 0},
    {"columns, channels-last padded", 4, 5, 12, 2, L::kChannelsLastPadded, 0},
    {"rows, parts 1", 5, 3, 200, 3, L::kContig, 1},
    {"rows, parts 3", 5, 3, 200, 3, L::kContig, 3},
    {"rows, more parts than chunks", 3, 2, 100, 2, L::kContig, 50},
    {"columns, parts 3", 5, 3, 30, 3, L::kChannelsLast, 3},
    {"c = 1 channels-last (rows)", 4, 1, 40, 2, L::kChannelsLast, 0},
    {"one group", 3, 2, 33, 1, L::kContig, 0},
    {"many samples: a merge over more than 64 units", 70, 2, 40, 3, L::kContig, 0},
    {"many samples, columns", 70, 2, 12, 3, L::kChannelsLast, 0},
    {"many samples, parts 37 (> 32: several parts per lane, empty parts)", 40, 2, 400, 4, L::kContig, 37},
    {"many samples, parts 5 (lane offsets shift per member)", 45, 3, 64, 5, L::kContig, 5},
    {"n = 0", 0, 3, 40, 2, L::kContig, 0},
    {"s = 0", 3, 3, 0, 2, L::kContig, 0},
    {"c = 0", 3, 0, 40, 2, L::kContig, 0},
    {"no groups", 0, 3, 40, 0, L::kContig, 0},
    {"grid-stride loops, rows", 2, 2, 3000, 2, L::kContig, 0},
    {"grid-stride loops, columns", 8, 40, 20, 3, L::kChannelsLast, 2},
};

void run_stats(Suite& suite, const StatsCase& cs, DType dt, const Env& env, uint64_t seed, bool determinism) {
  enter(env);
  Rng rng(seed);
  Tensor x(dt, cs.n, cs.c, cs.s, cs.x);
  for (int64_t i = 0; i < cs.n; ++i)
    for (int64_t j = 0; j < cs.c; ++j)
      for (int64_t k = 0; k < cs.s; ++k) x.set(i, j, k, 0.5 * static_cast<double>(j) + rng.uniform(-2, 2));
  const std::vector<int64_t> gv = make_groups(rng, cs.n, cs.groups);
  I64Array gindex(group_index(gv, cs.groups));
  const int64_t parts = pick_parts(cs.parts, cs.n, cs.c, cs.s, x.strides().s == 1);
  const std::string ctx =
      strf("grouped_batch_norm_stats[%s, %s: n=%lld c=%lld s=%lld groups=%lld x=%s parts=%s(%lld)] env=%s",
           dtype_name(dt), cs.what, (long long)cs.n, (long long)cs.c, (long long)cs.s, (long long)cs.groups,
           layout_name(cs.x), parts_str(cs.parts).c_str(), (long long)parts, env.name);
  const bool empty = cs.n == 0 || cs.s == 0;
  const auto x_snap = x.snapshot();
  const DType a = acc_dtype(dt);
  Tensor mean = Tensor::flat(a, cs.groups * cs.c), invstd = Tensor::flat(a, cs.groups * cs.c);

  auto once = [&](const std::string& c) {
    mean = Tensor::flat(a, cs.groups * cs.c);
    invstd = Tensor::flat(a, cs.groups * cs.c);
    DevBuf ws(static_cast<size_t>(2 * cs.n * parts * cs.c) * sizeof(double));
    LaunchScope scope(suite, c);
    // With no element, x, groups and the workspace are not needed: pass null.
    const cudaError_t err = pynas::cuda::launch_grouped_batch_norm_stats(
        dt, empty ? nullptr : x.data(), x.strides(), cs.n, cs.c, cs.s, empty ? nullptr : gindex.data(), cs.groups,
        parts, kEps, empty ? nullptr : static_cast<double*>(ws.data()), mean.data(), invstd.data(), scope.stream());
    scope.finish(err, cs.groups * cs.c == 0 ? LaunchScope::kNoLaunches : LaunchScope::kSomeLaunches);
    return std::vector<std::vector<uint8_t>>{mean.snapshot(), invstd.snapshot()};
  };
  const auto first = once(ctx);

  Compare cmp(suite, ctx, "mean / invstd");
  for (int64_t g = 0; g < cs.groups; ++g) {
    for (int64_t j = 0; j < cs.c; ++j) {
      double sum = 0, cnt = 0;
      for (int64_t i = 0; i < cs.n; ++i)
        if (gv[i] == g)
          for (int64_t k = 0; k < cs.s; ++k) sum += x.get(i, j, k), cnt += 1;
      double m = 0, var = 0;
      if (cnt > 0) {
        m = sum / cnt;
        for (int64_t i = 0; i < cs.n; ++i)
          if (gv[i] == g)
            for (int64_t k = 0; k < cs.s; ++k) var += (x.get(i, j, k) - m) * (x.get(i, j, k) - m);
        var /= cnt;
      }
      const double inv = cnt > 0 ? 1.0 / std::sqrt(var + kEps) : 0.0;
      const double scale = std::fabs(m) + std::sqrt(var);
      cmp.close(strf("mean[%lld, %lld]", (long long)g, (long long)j), mean.at(g * cs.c + j), m,
                tol_double_sum(dt, m, scale, 64));
      cmp.close(strf("invstd[%lld, %lld]", (long long)g, (long long)j), invstd.at(g * cs.c + j), inv,
                tol_double_sum(dt, inv, inv * (1 + m * m / (var + kEps)), 256));
    }
  }
  cmp.finish();
  check_untouched(suite, ctx, {&mean, &invstd}, {{&x, x_snap}});
  if (determinism) {
    cuemu::set_reverse_schedule(!env.reverse);
    same_bytes(suite, ctx, first, once(ctx + " (rerun, reversed schedule)"));
    cuemu::set_reverse_schedule(env.reverse);
  }
}

// ------------------------------------------------------------- apply
struct ApplyCase {
  const char* what;
  int64_t n, c, s, groups;
  Layout x, out;
  bool weight, bias;
};

const std::vector<ApplyCase> kApplyCases = {
    {"contiguous, packs", 3, 4, 16, 3, L::kContig, L::kContig, true, true},
    {"s not a pack multiple", 3, 4, 5, 3, L::kContig, L::kContig, true, true},
    {"channels-last out", 3, 4, 16, 3, L::kContig, L::kChannelsLast, true, true},
    {"channels-last x", 3, 4, 16, 2, L::kChannelsLast, L::kContig, true, false},
    {"gaps, packable", 3, 4, 16, 3, L::kPadded, L::kPadded, false, true},
    {"gaps, odd", 3, 4, 16, 3, L::kPaddedOdd, L::kPaddedOdd, true, true},
    {"misaligned x", 3, 4, 16, 3, L::kMisaligned, L::kContig, true, true},
    {"misaligned out", 3, 4, 16, 3, L::kContig, L::kMisaligned, false, false},
    {"strided s", 3, 4, 16, 3, L::kStrideS2, L::kStrideS2, true, true},
    {"batch-inner, channels-last padded", 3, 4, 16, 2, L::kBatchInner, L::kChannelsLastPadded, true, true},
    {"no weight, no bias", 2, 3, 16, 2, L::kContig, L::kContig, false, false},
    {"empty", 0, 3, 16, 2, L::kContig, L::kContig, true, true},
    {"empty s", 2, 3, 0, 2, L::kContig, L::kContig, true, true},
    {"grid-stride loops", 2, 8, 400, 2, L::kContig, L::kContig, true, true},
    {"grid-stride loops, channels-last", 2, 8, 400, 2, L::kContig, L::kChannelsLast, true, true},
    {"channels-last, channel packs", 3, 16, 12, 3, L::kChannelsLast, L::kChannelsLast, true, true},
    {"channels-last, channel packs, no weight / bias", 2, 8, 9, 2, L::kChannelsLast, L::kChannelsLast, false, false},
    {"channels-last, c not a pack multiple", 3, 12, 8, 2, L::kChannelsLast, L::kChannelsLast, true, true},
    {"channels-last padded (strides not pack multiples)", 2, 16, 8, 2, L::kChannelsLastPadded,
     L::kChannelsLastPadded, true, true},
    {"grid-stride loops, channel packs", 2, 16, 400, 2, L::kChannelsLast, L::kChannelsLast, true, true},
};

void run_apply(Suite& suite, const ApplyCase& cs, DType dt, const Env& env, uint64_t seed) {
  enter(env);
  const std::string ctx =
      strf("grouped_batch_norm_apply[%s, %s: n=%lld c=%lld s=%lld groups=%lld x=%s out=%s weight=%d bias=%d] env=%s",
           dtype_name(dt), cs.what, (long long)cs.n, (long long)cs.c, (long long)cs.s, (long long)cs.groups,
           layout_name(cs.x), layout_name(cs.out), cs.weight, cs.bias, env.name);
  Rng rng(seed);
  const DType a = acc_dtype(dt);
  Tensor x(dt, cs.n, cs.c, cs.s, cs.x);
  x.fill_random(rng, -2, 2);
  Tensor out(dt, cs.n, cs.c, cs.s, cs.out);
  const std::vector<int64_t> gv = make_groups(rng, cs.n, cs.groups);
  I64Array groups(gv);
  Tensor mean = Tensor::flat(a, cs.groups * cs.c), invstd = Tensor::flat(a, cs.groups * cs.c);
  mean.fill_random(rng, -1, 1);
  invstd.fill_random(rng, 0.5, 2);
  Tensor weight = Tensor::flat(a, cs.c), bias = Tensor::flat(a, cs.c);
  weight.fill_random(rng, -2, 2);
  bias.fill_random(rng, -1, 1);
  std::vector<std::pair<const Tensor*, std::vector<uint8_t>>> inputs{
      {&x, x.snapshot()}, {&mean, mean.snapshot()}, {&invstd, invstd.snapshot()}, {&weight, weight.snapshot()},
      {&bias, bias.snapshot()}};
  {
    LaunchScope scope(suite, ctx);
    const cudaError_t err = pynas::cuda::launch_grouped_batch_norm_apply(
        dt, x.data(), x.strides(), out.data(), out.strides(), cs.n, cs.c, cs.s, groups.data(), mean.data(),
        invstd.data(), cs.weight ? weight.data() : nullptr, cs.bias ? bias.data() : nullptr, scope.stream());
    scope.finish(err, out.numel() == 0 ? LaunchScope::kNoLaunches : LaunchScope::kSomeLaunches);
  }
  Compare cmp(suite, ctx, "out");
  for (int64_t i = 0; i < cs.n; ++i)
    for (int64_t j = 0; j < cs.c; ++j)
      for (int64_t k = 0; k < cs.s; ++k) {
        const int64_t gc = gv[i] * cs.c + j;
        const double kk = invstd.at(gc) * (cs.weight ? weight.at(j) : 1.0);
        const double b = cs.bias ? bias.at(j) : 0.0;
        const double d = x.get(i, j, k) - mean.at(gc);
        const double ref = d * kk + b;
        cmp.close(strf("out[%lld, %lld, %lld]", (long long)i, (long long)j, (long long)k), out.get(i, j, k), ref,
                  tolerance(dt, ref, std::fabs(d * kk) + std::fabs(b) + std::fabs(x.get(i, j, k) * kk), 4));
      }
  cmp.finish();
  check_untouched(suite, ctx, {&out}, inputs);
}

// ------------------------------------------------------------- backward reduce
struct ReduceCase {
  const char* what;
  int64_t n, c, s, groups;
  Layout dy, x;
  int64_t parts;
  bool coef, grad_weight, grad_bias;
};

const std::vector<ReduceCase> kReduceCases = {
    {"rows, packs", 5, 3, 40, 3, L::kContig, L::kContig, 0, true, true, true},
    {"rows, s not a pack multiple", 5, 3, 37, 3, L::kContig, L::kContig, 0, true, true, true},
    {"columns (s < 32)", 5, 3, 10, 3, L::kContig, L::kContig, 0, true, true, true},
    {"columns, channels-last", 5, 3, 40, 3, L::kChannelsLast, L::kChannelsLast, 0, true, true, true},
    {"columns, x channels-last only", 4, 3, 40, 2, L::kContig, L::kChannelsLast, 0, true, false, true},
    {"columns, strided s", 4, 3, 40, 2, L::kStrideS2, L::kStrideS2, 2, true, true, false},
    {"rows with gaps, packs", 5, 3, 48, 3, L::kPadded, L::kPadded, 0, true, true, true},
    {"rows with gaps, odd", 5, 3, 48, 3, L::kPaddedOdd, L::kContig, 0, true, true, true},
    {"rows, misaligned dy", 5, 3, 40, 3, L::kMisaligned, L::kContig, 0, true, true, true},
    {"rows, batch-inner", 4, 3, 40, 2, L::kBatchInner, L::kBatchInner, 0, true, true, true},
    {"coefficients only", 4, 3, 40, 3, L::kContig, L::kContig, 0, true, false, false},
    {"parameter gradients only", 4, 3, 40, 3, L::kContig, L::kContig, 0, false, true, true},
    {"nothing requested", 4, 3, 40, 3, L::kContig, L::kContig, 0, false, false, false},
    {"rows, parts 3", 5, 3, 200, 3, L::kContig, L::kContig, 3, true, true, true},
    {"many samples: a merge over more than 64 units", 70, 2, 40, 3, L::kContig, L::kContig, 0, true, true, true},
    {"rows, more parts than chunks", 3, 2, 100, 2, L::kContig, L::kContig, 50, true, true, true},
    {"many samples, parts 37 (> 32 per member, empty parts)", 40, 2, 400, 4, L::kContig, L::kContig, 37, true,
     true, true},
    {"many samples, parts 5", 45, 3, 64, 5, L::kContig, L::kContig, 5, true, true, true},
    {"n = 0", 0, 3, 40, 2, L::kContig, L::kContig, 0, true, true, true},
    {"s = 0", 3, 3, 0, 2, L::kContig, L::kContig, 0, true, true, true},
    {"c = 0", 3, 0, 40, 2, L::kContig, L::kContig, 0, true, true, true},
    {"no groups", 0, 3, 40, 0, L::kContig, L::kContig, 0, false, true, true},
    {"grid-stride loops, rows", 2, 2, 3000, 2, L::kContig, L::kContig, 0, true, true, true},
    {"grid-stride loops, columns", 8, 40, 20, 3, L::kChannelsLast, L::kChannelsLast, 2, true, true, true},
};

void run_reduce(Suite& suite, const ReduceCase& cs, DType dt, const Env& env, uint64_t seed, bool determinism) {
  enter(env);
  Rng rng(seed);
  const DType a = acc_dtype(dt);
  Tensor dy(dt, cs.n, cs.c, cs.s, cs.dy), x(dt, cs.n, cs.c, cs.s, cs.x);
  dy.fill_random(rng, -2, 2);
  x.fill_random(rng, -2, 2);
  const std::vector<int64_t> gv = make_groups(rng, cs.n, cs.groups);
  I64Array groups(gv);
  I64Array gindex(group_index(gv, cs.groups));
  Tensor mean = Tensor::flat(a, cs.groups * cs.c), invstd = Tensor::flat(a, cs.groups * cs.c);
  mean.fill_random(rng, -1, 1);
  invstd.fill_random(rng, 0.5, 2);
  const bool s_inner = dy.strides().s == 1 && x.strides().s == 1;
  const int64_t parts = pick_parts(cs.parts, cs.n, cs.c, cs.s, s_inner);
  const bool empty = cs.n == 0 || cs.s == 0;
  const std::string ctx = strf(
      "grouped_batch_norm_backward_reduce[%s, %s: n=%lld c=%lld s=%lld groups=%lld dy=%s x=%s parts=%s(%lld) "
      "coef=%d grad_weight=%d grad_bias=%d] env=%s",
      dtype_name(dt), cs.what, (long long)cs.n, (long long)cs.c, (long long)cs.s, (long long)cs.groups,
      layout_name(cs.dy), layout_name(cs.x), parts_str(cs.parts).c_str(), (long long)parts, cs.coef, cs.grad_weight,
      cs.grad_bias, env.name);
  std::vector<std::pair<const Tensor*, std::vector<uint8_t>>> inputs{
      {&dy, dy.snapshot()}, {&x, x.snapshot()}, {&mean, mean.snapshot()}, {&invstd, invstd.snapshot()}};
  Tensor ca = Tensor::flat(a, 0), cb = Tensor::flat(a, 0), gw = Tensor::flat(a, 0), gb = Tensor::flat(a, 0);
  auto once = [&](const std::string& c) {
    ca = Tensor::flat(a, cs.coef ? cs.groups * cs.c : 0);
    cb = Tensor::flat(a, cs.coef ? cs.groups * cs.c : 0);
    gw = Tensor::flat(a, cs.grad_weight ? cs.c : 0);
    gb = Tensor::flat(a, cs.grad_bias ? cs.c : 0);
    DevBuf ws(static_cast<size_t>(2 * cs.n * parts * cs.c + 2 * cs.groups * cs.c) * sizeof(double));
    LaunchScope scope(suite, c);
    const cudaError_t err = pynas::cuda::launch_grouped_batch_norm_backward_reduce(
        dt, empty ? nullptr : dy.data(), dy.strides(), empty ? nullptr : x.data(), x.strides(), cs.n, cs.c, cs.s,
        empty ? nullptr : groups.data(), empty ? nullptr : gindex.data(), cs.groups, parts,
        empty ? nullptr : mean.data(), invstd.data(),
        static_cast<double*>(ws.data()), cs.coef ? ca.data() : nullptr, cs.coef ? cb.data() : nullptr,
        cs.grad_weight ? gw.data() : nullptr, cs.grad_bias ? gb.data() : nullptr, scope.stream());
    const bool none = cs.c == 0 || (cs.groups == 0 && !cs.grad_weight && !cs.grad_bias);
    scope.finish(err, none ? LaunchScope::kNoLaunches : LaunchScope::kSomeLaunches);
    return std::vector<std::vector<uint8_t>>{ca.snapshot(), cb.snapshot(), gw.snapshot(), gb.snapshot()};
  };
  const auto first = once(ctx);

  Compare cmp(suite, ctx, "coef_a / coef_b / grad_weight / grad_bias");
  std::vector<double> gw_ref(static_cast<size_t>(cs.c), 0.0), gb_ref(gw_ref), gw_mag(gw_ref), gb_mag(gw_ref);
  for (int64_t g = 0; g < cs.groups; ++g) {
    for (int64_t j = 0; j < cs.c; ++j) {
      const int64_t gc = g * cs.c + j;
      double A = 0, B = 0, magA = 0, magB = 0, m = 0;
      for (int64_t i = 0; i < cs.n; ++i) {
        if (gv[i] != g) continue;
        m += static_cast<double>(cs.s);
        for (int64_t k = 0; k < cs.s; ++k) {
          const double d = dy.get(i, j, k), t = d * (x.get(i, j, k) - mean.at(gc));
          A += d, B += t, magA += std::fabs(d), magB += std::fabs(t);
        }
      }
      const double inv = invstd.at(gc);
      const double ops = static_cast<double>(cs.n * cs.s) + 8;
      if (cs.coef) {
        const double ra = m > 0 ? A / m : 0.0, rb = m > 0 ? inv * inv * B / m : 0.0;
        cmp.close(strf("coef_a[%lld, %lld]", (long long)g, (long long)j), ca.at(gc), ra,
                  tol_double_sum(dt, ra, m > 0 ? magA / m : 0, ops));
        cmp.close(strf("coef_b[%lld, %lld]", (long long)g, (long long)j), cb.at(gc), rb,
                  tol_double_sum(dt, rb, m > 0 ? inv * inv * magB / m : 0, ops));
      }
      gw_ref[j] += B * inv, gw_mag[j] += magB * inv;
      gb_ref[j] += A, gb_mag[j] += magA;
    }
  }
  const double ops = static_cast<double>(cs.n * cs.s + cs.groups) + 8;
  for (int64_t j = 0; j < cs.c; ++j) {
    if (cs.grad_weight)
      cmp.close(strf("grad_weight[%lld]", (long long)j), gw.at(j), gw_ref[j], tol_double_sum(dt, gw_ref[j], gw_mag[j], ops));
    if (cs.grad_bias)
      cmp.close(strf("grad_bias[%lld]", (long long)j), gb.at(j), gb_ref[j], tol_double_sum(dt, gb_ref[j], gb_mag[j], ops));
  }
  cmp.finish();
  check_untouched(suite, ctx, {&ca, &cb, &gw, &gb}, inputs);
  if (determinism) {
    cuemu::set_reverse_schedule(!env.reverse);
    same_bytes(suite, ctx, first, once(ctx + " (rerun, reversed schedule)"));
    cuemu::set_reverse_schedule(env.reverse);
  }
}

// ------------------------------------------------------------- backward input
struct InputCase {
  const char* what;
  int64_t n, c, s, groups;
  Layout dy, x, gx;
  bool batch_stats, weight;
};

const std::vector<InputCase> kInputCases = {
    {"batch stats, packs", 3, 4, 16, 3, L::kContig, L::kContig, L::kContig, true, true},
    {"running stats (no x, mean)", 3, 4, 16, 3, L::kContig, L::kContig, L::kContig, false, true},
    {"s not a pack multiple", 3, 4, 5, 3, L::kContig, L::kContig, L::kContig, true, true},
    {"channels-last grad_x", 3, 4, 16, 3, L::kContig, L::kContig, L::kChannelsLast, true, false},
    {"channels-last, running stats", 3, 4, 16, 2, L::kChannelsLast, L::kChannelsLast, L::kChannelsLast, false, false},
    {"gaps, packable", 3, 4, 16, 3, L::kPadded, L::kPadded, L::kPadded, true, true},
    {"gaps, odd", 3, 4, 16, 3, L::kPaddedOdd, L::kContig, L::kPaddedOdd, true, true},
    {"misaligned x", 3, 4, 16, 3, L::kContig, L::kMisaligned, L::kContig, true, true},
    {"misaligned x, running stats (x unused)", 3, 4, 16, 3, L::kContig, L::kMisaligned, L::kContig, false, true},
    {"misaligned grad_x", 3, 4, 16, 3, L::kContig, L::kContig, L::kMisaligned, true, true},
    {"strided s", 3, 4, 16, 3, L::kStrideS2, L::kStrideS2, L::kStrideS2, true, true},
    {"batch-inner", 3, 4, 16, 2, L::kBatchInner, L::kContig, L::kChannelsLastPadded, true, true},
    {"empty", 0, 3, 16, 2, L::kContig, L::kContig, L::kContig, true, true},
    {"grid-stride loops", 2, 8, 400, 2, L::kContig, L::kContig, L::kContig, true, true},
    {"grid-stride loops, channels-last", 2, 8, 400, 2, L::kContig, L::kContig, L::kChannelsLast, false, true},
    {"channels-last, channel packs, batch stats", 3, 16, 12, 3, L::kChannelsLast, L::kChannelsLast,
     L::kChannelsLast, true, true},
    {"channels-last, channel packs, running stats", 3, 16, 12, 2, L::kChannelsLast, L::kMisaligned,
     L::kChannelsLast, false, true},
    {"channels-last, channel packs, no weight", 2, 8, 9, 2, L::kChannelsLast, L::kChannelsLast, L::kChannelsLast,
     true, false},
    {"channels-last grad_x, contiguous dy (element loads)", 3, 16, 12, 2, L::kContig, L::kChannelsLast,
     L::kChannelsLast, true, true},
    {"grid-stride loops, channel packs", 2, 16, 400, 2, L::kChannelsLast, L::kChannelsLast, L::kChannelsLast, true,
     true},
};

void run_input(Suite& suite, const InputCase& cs, DType dt, const Env& env, uint64_t seed) {
  enter(env);
  const std::string ctx = strf(
      "grouped_batch_norm_backward_input[%s, %s: n=%lld c=%lld s=%lld groups=%lld dy=%s x=%s grad_x=%s "
      "batch_stats=%d weight=%d] env=%s",
      dtype_name(dt), cs.what, (long long)cs.n, (long long)cs.c, (long long)cs.s, (long long)cs.groups,
      layout_name(cs.dy), layout_name(cs.x), layout_name(cs.gx), cs.batch_stats, cs.weight, env.name);
  Rng rng(seed);
  const DType a = acc_dtype(dt);
  Tensor dy(dt, cs.n, cs.c, cs.s, cs.dy), x(dt, cs.n, cs.c, cs.s, cs.x), gx(dt, cs.n, cs.c, cs.s, cs.gx);
  dy.fill_random(rng, -2, 2);
  x.fill_random(rng, -2, 2);
  const std::vector<int64_t> gv = make_groups(rng, cs.n, cs.groups);
  I64Array groups(gv);
  Tensor mean = Tensor::flat(a, cs.groups * cs.c), invstd = Tensor::flat(a, cs.groups * cs.c);
  Tensor weight = Tensor::flat(a, cs.c);
  Tensor ca = Tensor::flat(a, cs.groups * cs.c), cb = Tensor::flat(a, cs.groups * cs.c);
  mean.fill_random(rng, -1, 1);
  invstd.fill_random(rng, 0.5, 2);
  weight.fill_random(rng, -2, 2);
  ca.fill_random(rng, -0.5, 0.5);
  cb.fill_random(rng, -0.5, 0.5);
  std::vector<std::pair<const Tensor*, std::vector<uint8_t>>> inputs{
      {&dy, dy.snapshot()},         {&x, x.snapshot()},   {&mean, mean.snapshot()}, {&invstd, invstd.snapshot()},
      {&weight, weight.snapshot()}, {&ca, ca.snapshot()}, {&cb, cb.snapshot()}};
  {
    LaunchScope scope(suite, ctx);
    // Without batch statistics x, mean and coef_b are not read: pass null.
    const bool b = cs.batch_stats;
    const cudaError_t err = pynas::cuda::launch_grouped_batch_norm_backward_input(
        dt, dy.data(), dy.strides(), b ? x.data() : nullptr, x.strides(), gx.data(), gx.strides(), cs.n, cs.c, cs.s,
        groups.data(), b ? mean.data() : nullptr, invstd.data(), cs.weight ? weight.data() : nullptr,
        b ? ca.data() : nullptr, b ? cb.data() : nullptr, scope.stream());
    scope.finish(err, gx.numel() == 0 ? LaunchScope::kNoLaunches : LaunchScope::kSomeLaunches);
  }
  Compare cmp(suite, ctx, "grad_x");
  for (int64_t i = 0; i < cs.n; ++i)
    for (int64_t j = 0; j < cs.c; ++j)
      for (int64_t k = 0; k < cs.s; ++k) {
        const int64_t gc = gv[i] * cs.c + j;
        const double k1 = invstd.at(gc) * (cs.weight ? weight.at(j) : 1.0);
        double r = dy.get(i, j, k), mag = std::fabs(r);
        if (cs.batch_stats) {
          const double d = x.get(i, j, k) - mean.at(gc);
          r = r - ca.at(gc) - d * cb.at(gc);
          mag += std::fabs(ca.at(gc)) + (std::fabs(x.get(i, j, k)) + std::fabs(mean.at(gc))) * std::fabs(cb.at(gc));
        }
        const double ref = k1 * r;
        cmp.close(strf("grad_x[%lld, %lld, %lld]", (long long)i, (long long)j, (long long)k), gx.get(i, j, k), ref,
                  tolerance(dt, ref, std::fabs(k1) * mag, 6));
      }
  cmp.finish();
  check_untouched(suite, ctx, {&gx}, inputs);
}

template <typename Case, typename Run>
void over(Suite& suite, const std::vector<Case>& cases, uint64_t seed0, Run run) {
  int i = 0;
  for (const Case& cs : cases) {
    for (DType dt : kAllDtypes) {
      bool first = true;
      for (const Env& env : envs_for_case(i)) {
        run(suite, cs, dt, env, seed0 + i, first);
        first = false;
      }
    }
    ++i;
  }
}

void check_parts(Suite& suite) {
  // kernels.h: any value >= 1 is correct; the function must return one.
  for (const Env& env : all_envs()) {
    enter(env);
    Compare cmp(suite, strf("grouped_batch_norm_parts env=%s", env.name), "parts >= 1");
    for (int64_t n : {0, 1, 7, 5000, 100000})
      for (int64_t c : {0, 1, 64})
        for (int64_t s : {0, 1, 31, 32, 4096, 1 << 20})
          for (bool inner : {false, true}) {
            const int64_t p = pynas::cuda::grouped_batch_norm_parts(n, c, s, inner);
            cmp.truth(strf("(%lld, %lld, %lld, %d)", (long long)n, (long long)c, (long long)s, inner), p >= 1,
                      strf("%lld", (long long)p));
          }
  }
}

Register r1("grouped_batch_norm_stats", "launch_grouped_batch_norm_stats, grouped_batch_norm_parts",
            [](Suite& s) {
              check_parts(s);
              over(s, kStatsCases, 7000, run_stats);
            });
Register r2("grouped_batch_norm_apply", "launch_grouped_batch_norm_apply", [](Suite& s) {
  over(s, kApplyCases, 8000, [](Suite& su, const ApplyCase& c, DType d, const Env& e, uint64_t sd, bool) {
    run_apply(su, c, d, e, sd);
  });
});
Register r3("grouped_batch_norm_backward_reduce", "launch_grouped_batch_norm_backward_reduce",
            [](Suite& s) { over(s, kReduceCases, 9000, run_reduce); });
Register r4("grouped_batch_norm_backward_input", "launch_grouped_batch_norm_backward_input", [](Suite& s) {
  over(s, kInputCases, 10000, [](Suite& su, const InputCase& c, DType d, const Env& e, uint64_t sd, bool) {
    run_input(su, c, d, e, sd);
  });
});

}  // namespace
}  // namespace emu
