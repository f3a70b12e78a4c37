// Runs the emulated-kernel tests.
//
//   cuemu_tests [--symbols FILE] [--record FILE] [TEST...]   run tests (default: all)
//   cuemu_tests --list
//   cuemu_tests --symbols FILE --coverage SITES RECORD...     check coverage
//
// --symbols: "address name" of every kernel instantiation in this binary
// (made from `nm -C` at build time). --record: where to write which kernels
// and launch sites ran. --coverage: fails unless the records together ran
// every kernel instantiation and every launch site (file:line, from SITES).
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>

#include "harness.h"

namespace {

std::string short_name(std::string s) {
  for (const char* junk : {"pynas::cuda::(anonymous namespace)::", "pynas::cuda::detail::", "(anonymous namespace)::"}) {
    for (size_t p; (p = s.find(junk)) != std::string::npos;) s.erase(p, std::strlen(junk));
  }
  return s;
}

int check_coverage(const char* sites_path, int nrec, char** recs) {
  std::set<std::string> sites;
  {
    std::ifstream in(sites_path);
    for (std::string l; std::getline(in, l);)
      if (!l.empty()) sites.insert(l);
  }
  std::set<unsigned long long> ran;
  std::set<std::string> ran_sites;
  for (int i = 0; i < nrec; ++i) {
    std::ifstream in(recs[i]);
    if (!in) {
      std::printf("coverage: cannot read record %s\n", recs[i]);
      return 1;
    }
    for (std::string l; std::getline(in, l);) {
      if (l.rfind("K ", 0) == 0) ran.insert(std::strtoull(l.c_str() + 2, nullptr, 16));
      if (l.rfind("S ", 0) == 0) ran_sites.insert(l.substr(2));
    }
  }
  const auto symbols = cuemu::kernel_symbols();
  int missing = 0;
  std::map<std::string, std::pair<int, int>> per_kernel;  // base name -> (ran, total)
  for (const auto& s : symbols) {
    std::string base = short_name(s.second);
    if (base.rfind("void ", 0) == 0) base = base.substr(5);
    base = base.substr(0, base.find('<'));
    auto& pk = per_kernel[base];
    ++pk.second;
    if (ran.count(reinterpret_cast<uintptr_t>(s.first))) {
      ++pk.first;
    } else {
      if (missing < 30) std::printf("  NOT RUN: kernel %s\n", short_name(s.second).c_str());
      ++missing;
    }
  }
  int missing_sites = 0;
  for (const auto& s : sites) {
    if (!ran_sites.count(s)) {
      std::printf("  NOT RUN: launch site %s\n", s.c_str());
      ++missing_sites;
    }
  }
  std::printf("coverage: kernel instantiations run, per kernel:\n");
  int ran_total = 0;
  for (const auto& pk : per_kernel) {
    std::printf("  %-34s %3d / %d\n", pk.first.c_str(), pk.second.first, pk.second.second);
    ran_total += pk.second.first;
  }
  std::printf("coverage: %d / %zu kernel instantiations, %zu / %zu launch sites\n", ran_total, symbols.size(),
              sites.size() - missing_sites, sites.size());
  if (symbols.empty()) {
    std::printf("coverage: FAIL: no kernel symbols loaded\n");
    return 1;
  }
  if (missing || missing_sites) {
    std::printf("coverage: FAIL: %d kernel instantiation(s) and %d launch site(s) never ran\n", missing,
                missing_sites);
    return 1;
  }
  std::printf("coverage: PASS\n");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  const char* record = nullptr;
  std::set<std::string> wanted;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--list") {
      for (const auto& t : emu::registry()) std::printf("%-28s %s\n", t.name, t.launcher);
      return 0;
    } else if (a == "--symbols" && i + 1 < argc) {
      if (cuemu::load_kernel_symbols(argv[++i]) == 0) std::printf("warning: no kernel symbols in %s\n", argv[i]);
    } else if (a == "--record" && i + 1 < argc) {
      record = argv[++i];
    } else if (a == "--coverage" && i + 1 < argc) {
      return check_coverage(argv[i + 1], argc - i - 2, argv + i + 2);
    } else {
      wanted.insert(a);
    }
  }
  for (const auto& w : wanted) {
    bool found = false;
    for (const auto& t : emu::registry()) found = found || w == t.name;
    if (!found) {
      std::printf("unknown test %s (see --list)\n", w.c_str());
      return 2;
    }
  }
  emu::configure_envs();
  int failed = 0;
  for (const auto& t : emu::registry()) {
    if (!wanted.empty() && !wanted.count(t.name)) continue;
    emu::Suite suite(t.name);
    std::printf("[ RUN  ] %s  (%s)\n", t.name, t.launcher);
    const auto t0 = std::chrono::steady_clock::now();
    t.fn(suite);
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    for (const auto& n : suite.notes()) std::printf("         %s\n", n.c_str());
    std::printf("[ %s ] %s: %ld launcher calls, %ld values checked, %d failure(s), %.1f s\n",
                suite.failures() ? "FAIL" : " OK ", t.name, suite.runs(), suite.checks(), suite.failures(), secs);
    if (suite.failures()) ++failed;
  }
  if (record != nullptr) {
    std::ofstream out(record);
    std::set<const void*> kernels;
    std::set<std::string> sites;
    for (const auto& e : cuemu::log()) {
      if (e.kind != cuemu::Enqueued::kLaunch || e.error != 0) continue;
      kernels.insert(e.kernel);
      sites.insert(std::string(e.file) + ":" + std::to_string(e.line));
    }
    for (const void* k : kernels) out << "K " << k << "\n";
    for (const auto& s : sites) out << "S " << s << "\n";
  }
  const cuemu::Counters c = cuemu::counters();
  std::printf("emulated: %ld blocks, %ld threads\n", c.blocks_run, c.threads_run);
  return failed ? 1 : 0;
}
