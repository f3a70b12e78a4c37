// launch_path_dispatch / launch_path_combine / launch_path_combine_residual
// against references: rows of row_bytes moved between a batch and buckets by
// a plan (int64 [2, rows]: bucket, rank in bucket). Row sizes and base
// offsets pick every copy unit (16, 8, 4, 2, 1 bytes); more buckets than
// kMaxInlineBuckets take several launches.
#include <cstring>

#include "harness.h"

namespace emu {
namespace {

using pynas::cuda::kMaxInlineBuckets;

struct Plan {
  std::vector<int64_t> host;    // [2, rows]
  std::vector<int64_t> counts;  // rows per bucket
};

// Random buckets for each row, with some buckets left empty.
Plan make_plan(Rng& rng, int64_t rows, int64_t buckets) {
  Plan p;
  p.host.assign(static_cast<size_t>(2 * rows), 0);
  p.counts.assign(static_cast<size_t>(buckets), 0);
  const int64_t used = buckets > 2 ? buckets - buckets / 4 : buckets;  // the last quarter stays empty
  for (int64_t r = 0; r < rows; ++r) {
    // Bias towards the highest used bucket so that a high group is busy too.
    const int64_t b = rng.below(4) == 0 ? used - 1 : rng.below(used);
    p.host[r] = b;
    p.host[rows + r] = p.counts[b]++;
  }
  return p;
}

// ------------------------------------------------------------- dispatch / combine
struct CopyCase {
  const char* what;
  int64_t rows, row_bytes, buckets;
  size_t x_head;       // byte offset of x / out from 64-byte alignment
  size_t bucket_head;  // byte offset of every bucket
  bool null_empty;     // empty buckets passed as null pointers
};

const std::vector<CopyCase> kCopyCases = {
    {"16-byte unit", 37, 64, 3, 0, 0, false},
    {"8-byte unit", 37, 24, 3, 0, 0, false},
    {"4-byte unit", 37, 12, 3, 0, 0, false},
    {"2-byte unit", 37, 6, 3, 0, 0, false},
    {"1-byte unit", 37, 3, 3, 0, 0, false},
    {"x 4 bytes off alignment", 37, 64, 3, 4, 0, false},
    {"buckets 8 bytes off alignment", 37, 64, 5, 0, 8, true},
    {"x 1 byte off alignment", 20, 64, 3, 1, 0, false},
    {"kMaxInlineBuckets buckets", 50, 32, 64, 0, 0, true},
    {"more than kMaxInlineBuckets", 150, 16, 70, 0, 0, true},
    {"more than 2 * kMaxInlineBuckets", 200, 8, 130, 0, 0, false},
    {"one bucket", 10, 40, 1, 0, 0, false},
    {"no rows", 0, 64, 3, 0, 0, true},
    {"empty rows", 5, 0, 3, 0, 0, false},
    {"grid-stride loops", 700, 64, 4, 0, 0, false},
    {"grid-stride loops, bytes", 600, 7, 3, 0, 0, false},
};

std::string copy_ctx(const char* op, const CopyCase& cs, const Env& env) {
  return strf("%s[%s: rows=%lld row_bytes=%lld buckets=%lld x_head=%zu bucket_head=%zu null_empty=%d] env=%s", op,
              cs.what, (long long)cs.rows, (long long)cs.row_bytes, (long long)cs.buckets, cs.x_head, cs.bucket_head,
              cs.null_empty, env.name);
}

void fill_bytes(Rng& rng, DevBuf& b) {
  uint8_t* p = static_cast<uint8_t*>(b.data());
  for (size_t i = 0; i < b.bytes(); ++i) {
    uint8_t v = static_cast<uint8_t>(rng.next());
    p[i] = v == kSentinel ? 0 : v;  // never the sentinel, so a missed byte shows
  }
}

void run_copy(Suite& suite, const CopyCase& cs, const Env& env, uint64_t seed) {
  enter(env);
  Rng rng(seed);
  const Plan plan = make_plan(rng, cs.rows, cs.buckets);
  I64Array dplan(plan.host);
  const size_t rb = static_cast<size_t>(cs.row_bytes);
  DevBuf x(static_cast<size_t>(cs.rows) * rb, cs.x_head);
  fill_bytes(rng, x);
  const auto x_snap = x.snapshot();

  // dispatch: x -> buckets
  {
    const std::string ctx = copy_ctx("path_dispatch", cs, env);
    std::vector<std::unique_ptr<DevBuf>> buckets;
    std::vector<void*> ptrs;
    for (int64_t b = 0; b < cs.buckets; ++b) {
      buckets.push_back(std::make_unique<DevBuf>(static_cast<size_t>(plan.counts[b]) * rb, cs.bucket_head));
      ptrs.push_back(cs.null_empty && plan.counts[b] == 0 ? nullptr : buckets.back()->data());
    }
    {
      LaunchScope scope(suite, ctx);
      const cudaError_t err = pynas::cuda::launch_path_dispatch(x.data(), cs.rows, cs.row_bytes, dplan.data(),
                                                                ptrs.data(), cs.buckets, scope.stream());
      scope.finish(err, cs.rows * cs.row_bytes == 0 ? LaunchScope::kNoLaunches : LaunchScope::kSomeLaunches);
    }
    Compare cmp(suite, ctx, "buckets");
    for (int64_t r = 0; r < cs.rows; ++r) {
      const int64_t b = plan.host[r], rank = plan.host[cs.rows + r];
      const bool same = std::memcmp(static_cast<uint8_t*>(buckets[b]->data()) + rank * rb,
                                    static_cast<uint8_t*>(x.data()) + r * rb, rb) == 0;
      cmp.truth(strf("row %lld -> bucket %lld row %lld", (long long)r, (long long)b, (long long)rank), same,
                "bytes differ");
    }
    for (int64_t b = 0; b < cs.buckets; ++b) {
      if (buckets[b]->head() > 0) {
        for (size_t i = 0; i < buckets[b]->head(); ++i)
          cmp.truth(strf("bucket %lld head", (long long)b), buckets[b]->raw()[i] == kSentinel, "written");
      }
    }
    cmp.finish();
    if (!x.unchanged_since(x_snap)) suite.fail(ctx, "x was modified");
  }

  // combine: buckets -> out (the bucket rows are made from x by the plan)
  {
    const std::string ctx = copy_ctx("path_combine", cs, env);
    std::vector<std::unique_ptr<DevBuf>> buckets;
    std::vector<const void*> ptrs;
    for (int64_t b = 0; b < cs.buckets; ++b) {
      buckets.push_back(std::make_unique<DevBuf>(static_cast<size_t>(plan.counts[b]) * rb, cs.bucket_head));
      ptrs.push_back(cs.null_empty && plan.counts[b] == 0 ? nullptr : buckets.back()->data());
    }
    for (int64_t r = 0; r < cs.rows; ++r) {
      std::memcpy(static_cast<uint8_t*>(buckets[plan.host[r]]->data()) + plan.host[cs.rows + r] * rb,
                  static_cast<uint8_t*>(x.data()) + r * rb, rb);
    }
    std::vector<std::vector<uint8_t>> snaps;
    for (const auto& b : buckets) snaps.push_back(b->snapshot());
    DevBuf out(static_cast<size_t>(cs.rows) * rb, cs.x_head);
    {
      LaunchScope scope(suite, ctx);
      const cudaError_t err = pynas::cuda::launch_path_combine(ptrs.data(), cs.buckets, dplan.data(), cs.rows,
                                                               cs.row_bytes, out.data(), scope.stream());
      scope.finish(err, cs.rows * cs.row_bytes == 0 ? LaunchScope::kNoLaunches : LaunchScope::kSomeLaunches);
    }
    Compare cmp(suite, ctx, "out");
    for (int64_t r = 0; r < cs.rows; ++r) {
      const bool same = std::memcmp(static_cast<uint8_t*>(out.data()) + r * rb,
                                    static_cast<uint8_t*>(x.data()) + r * rb, rb) == 0;
      cmp.truth(strf("out row %lld", (long long)r), same, "bytes differ");
    }
    for (size_t i = 0; i < out.head(); ++i) cmp.truth("out head", out.raw()[i] == kSentinel, "written");
    cmp.finish();
    for (size_t b = 0; b < buckets.size(); ++b) {
      if (!buckets[b]->unchanged_since(snaps[b])) suite.fail(ctx, strf("bucket %zu was modified", b));
    }
  }
}

// ------------------------------------------------------------- combine + residual
struct ResidualCase {
  const char* what;
  int64_t rows, row_elems, buckets;
  bool misaligned_out, misaligned_residual, misaligned_buckets;
};

const std::vector<ResidualCase> kResidualCases = {
    {"packs", 37, 16, 3, false, false, false},
    {"row not a pack multiple", 37, 7, 3, false, false, false},
    {"misaligned residual", 37, 16, 3, false, true, false},
    {"misaligned out", 37, 16, 3, true, false, false},
    {"misaligned buckets", 37, 16, 3, false, false, true},
    {"more than kMaxInlineBuckets", 150, 8, 70, false, false, false},
    {"more than kMaxInlineBuckets, scalar", 120, 5, 66, false, false, false},
    {"no rows", 0, 16, 3, false, false, false},
    {"empty rows", 5, 0, 3, false, false, false},
    {"grid-stride loops", 700, 16, 4, false, false, false},
};

void run_residual(Suite& suite, const ResidualCase& cs, DType dt, const Env& env, uint64_t seed) {
  enter(env);
  const std::string ctx =
      strf("path_combine_residual[%s, %s: rows=%lld row_elems=%lld buckets=%lld misaligned out=%d residual=%d "
           "buckets=%d] env=%s",
           dtype_name(dt), cs.what, (long long)cs.rows, (long long)cs.row_elems, (long long)cs.buckets,
           cs.misaligned_out, cs.misaligned_residual, cs.misaligned_buckets, env.name);
  Rng rng(seed);
  const Plan plan = make_plan(rng, cs.rows, cs.buckets);
  I64Array dplan(plan.host);
  std::vector<Tensor> ys;
  std::vector<const void*> ptrs;
  std::vector<std::pair<const Tensor*, std::vector<uint8_t>>> inputs;
  for (int64_t b = 0; b < cs.buckets; ++b) {
    ys.push_back(Tensor::flat(dt, plan.counts[b] * cs.row_elems, cs.misaligned_buckets));
    ys.back().fill_random(rng, -2, 2);
    ptrs.push_back(ys.back().data());
  }
  Tensor res = Tensor::flat(dt, cs.rows * cs.row_elems, cs.misaligned_residual);
  res.fill_random(rng, -2, 2);
  Tensor out = Tensor::flat(dt, cs.rows * cs.row_elems, cs.misaligned_out);
  for (const Tensor& y : ys) inputs.emplace_back(&y, y.snapshot());
  inputs.emplace_back(&res, res.snapshot());
  {
    LaunchScope scope(suite, ctx);
    const cudaError_t err = pynas::cuda::launch_path_combine_residual(
        dt, ptrs.data(), cs.buckets, dplan.data(), cs.rows, cs.row_elems, res.data(), out.data(), scope.stream());
    scope.finish(err, cs.rows * cs.row_elems == 0 ? LaunchScope::kNoLaunches : LaunchScope::kSomeLaunches);
  }
  Compare cmp(suite, ctx, "out");
  for (int64_t r = 0; r < cs.rows; ++r) {
    const int64_t b = plan.host[r], rank = plan.host[cs.rows + r];
    for (int64_t e = 0; e < cs.row_elems; ++e) {
      const double a = ys[b].at(rank * cs.row_elems + e), c = res.at(r * cs.row_elems + e);
      const double ref = a + c;
      cmp.close(strf("out[%lld, %lld]", (long long)r, (long long)e), out.at(r * cs.row_elems + e), ref,
                tolerance(dt, ref, std::fabs(a) + std::fabs(c), 1));
    }
  }
  cmp.finish();
  check_untouched(suite, ctx, {&out}, inputs);
}

void test_copy(Suite& suite) {
  int i = 0;
  for (const CopyCase& cs : kCopyCases) {
    for (const Env& env : envs_for_case(i)) run_copy(suite, cs, env, 5000 + i);
    ++i;
  }
}

void test_residual(Suite& suite) {
  int i = 0;
  for (const ResidualCase& cs : kResidualCases) {
    for (DType dt : kAllDtypes) {
      for (const Env& env : envs_for_case(i)) run_residual(suite, cs, dt, env, 6000 + i);
    }
    ++i;
  }
}

Register r1("path_dispatch_combine", "launch_path_dispatch, launch_path_combine", test_copy);
Register r2("path_combine_residual", "launch_path_combine_residual", test_residual);

}  // namespace
}  // namespace emu
