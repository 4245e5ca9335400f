// Runs the CUDA GroupNorm kernels of gnvideo/ops/csrc (included unchanged) on the CPU through cuda_emu.h, with the
// launch plans of group_norm_cuda.cu (group_norm_cuda_launch.h, a fixed SM count), forward and backward.
//
//   harness [--sms N] [--schedule SEED] CASE OUT [CASE OUT ...]
//
// CASE: one ASCII header line "key=value ..." (dtype f64|f32|f16|bf16, N, C, S, G, eps, act none|relu|silu,
// cl 0|1, w 0|1, b 0|1, x_off, dy_off: element offsets of x and dy from a 64-byte-aligned address), then the raw
// arrays x (N*C*S of the dtype, storage order of the layout), w (C, accumulation type), b (C), dy (like x).
// OUT: one header line with the plan and counters, then y, mean (N*G, accumulation type), rstd, dx, dweight (C),
// dbias (C). y and dx are in x's layout. Exit code 0, or 86 with "EMU ERROR: ..." on stderr for a kernel fault
// (emulation check, a write outside a buffer, an unwritten output element).
// Mirrors group_norm_fwd_cuda / group_norm_bwd_cuda: weights in the accumulation type, y and dx freshly allocated
// (aligned), channels-last with too many lanes computed on an NCHW copy.
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cinttypes>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "cuda_emu.h"
#include "group_norm_cuda_launch.h"

namespace {

using gnvideo::cuda_detail::acc_t;
using gnvideo::cuda_detail::Pair;
using gnvideo::cuda_detail::Plan;
using gnvideo::cuda_detail::Welford;

constexpr size_t kGuard = 256;  // bytes of 0xFF on each side of every buffer
constexpr unsigned char kFill = 0xFF;

// A "device" allocation: 64-byte aligned payload at `off` bytes from the aligned start, NaN-filled guards around it.
struct Buffer {
  std::vector<unsigned char> raw;
  size_t off = 0, bytes = 0;
  std::string name;
  Buffer(std::string n, size_t nbytes, size_t offset_bytes) : off(offset_bytes), bytes(nbytes), name(std::move(n)) {
    raw.assign(kGuard * 2 + 64 + offset_bytes + nbytes, kFill);
  }
  unsigned char* base() {
    auto a = reinterpret_cast<uintptr_t>(raw.data()) + kGuard;
    a = (a + 63) / 64 * 64;
    return reinterpret_cast<unsigned char*>(a);
  }
  template <typename T>
  T* as() {
    return reinterpret_cast<T*>(base() + off);
  }
  void check_guards() {
    unsigned char* p = base() + off;
    for (size_t i = 0; i < kGuard; ++i) {
      if (p[-1 - static_cast<ptrdiff_t>(i)] != kFill || p[bytes + i] != kFill) {
        emu::fail("write outside buffer " + name + " (" + std::to_string(i) + " bytes from its edge)");
      }
    }
  }
};

// Byte pattern 0xFF..FF is a NaN of every floating type: an output element still holding it was never written.
void check_written(const unsigned char* p, size_t elem, size_t n, const std::string& name) {
  for (size_t i = 0; i < n; ++i) {
    bool all = true;
    for (size_t k = 0; k < elem; ++k) all = all && p[i * elem + k] == kFill;
    if (all) emu::fail(name + " element " + std::to_string(i) + " was never written");
  }
}

struct Case {
  std::string dtype, act;
  int64_t N = 0, C = 0, S = 0, G = 0, x_off = 0, dy_off = 0;
  double eps = 1e-5;
  bool cl = false, has_w = false, has_b = false;
};

Case parse_header(const std::string& line) {
  std::map<std::string, std::string> kv;
  std::istringstream in(line);
  std::string tok;
  while (in >> tok) {
    const auto eq = tok.find('=');
    if (eq == std::string::npos) emu::fail("bad case header token '" + tok + "'");
    kv[tok.substr(0, eq)] = tok.substr(eq + 1);
  }
  auto get = [&](const char* k) {
    auto it = kv.find(k);
    if (it == kv.end()) emu::fail(std::string("case header lacks ") + k);
    return it->second;
  };
  Case c;
  c.dtype = get("dtype");
  c.act = get("act");
  c.N = std::stoll(get("N"));
  c.C = std::stoll(get("C"));
  c.S = std::stoll(get("S"));
  c.G = std::stoll(get("G"));
  c.eps = std::stod(get("eps"));
  c.cl = get("cl") == "1";
  c.has_w = get("w") == "1";
  c.has_b = get("b") == "1";
  c.x_off = std::stoll(get("x_off"));
  c.dy_off = std::stoll(get("dy_off"));
  return c;
}

int act_code(const std::string& a) {
  if (a == "none") return gnvideo::kActNone;
  if (a == "relu") return gnvideo::kActRelu;
  if (a == "silu") return gnvideo::kActSilu;
  emu::fail("unknown activation " + a);
}

// (N, S, C) <-> (N, C, S) copies (the NCHW fallback of wide channels-last inputs).
template <typename T>
void transpose(const T* in, T* out, int64_t N, int64_t R, int64_t K) {  // in (N, R, K) -> out (N, K, R)
  for (int64_t n = 0; n < N; ++n)
    for (int64_t r = 0; r < R; ++r)
      for (int64_t k = 0; k < K; ++k) out[(n * K + k) * R + r] = in[(n * R + r) * K + k];
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

struct Launcher {
  template <typename... P, typename... Args>
  void operator()(void (*kernel)(P...), int64_t blocks, int threads, int bound, Args... args) const {
    emu::launch(kernel, blocks, threads, bound, args...);
  }
};

std::string plan_text(const char* tag, const Plan& p, int64_t part_bytes) {
  char buf[320];
  std::snprintf(buf, sizeof buf,
                " %s_cl=%d %s_vec=%d %s_fits=%d %s_threads=%d %s_bound=%d %s_nchunks=%" PRId64 " %s_blocks=%" PRId64
                " %s_part_bytes=%" PRId64,
                tag, p.cl, tag, p.vec, tag, p.fits, tag, p.threads, tag, p.bound, tag, p.nchunks, tag, p.blocks, tag,
                part_bytes);
  return buf;
}

template <typename T, int V>
void forward(const Plan& p, const Case& c, const T* x, T* y, const acc_t<T>* w, const acc_t<T>* b, acc_t<T>* mean,
             acc_t<T>* rstd) {
  using A = acc_t<T>;
  Buffer part("fwd partials", gnvideo::cuda_detail::fwd_part_elems(p, c.N, c.C) * sizeof(A), 0);
  gnvideo::cuda_detail::run_fwd<T, V>(Launcher{}, p, c.N, c.C, c.S, c.G, static_cast<A>(c.eps), act_code(c.act), x,
                                      y, w, b, mean, rstd, part.as<Welford<A>>());
  part.check_guards();
}

template <typename T, int V>
void backward(const Plan& p, const Case& c, const T* dy, const T* x, T* dx, const acc_t<T>* mean,
              const acc_t<T>* rstd, const acc_t<T>* w, const acc_t<T>* b, acc_t<T>* dw, acc_t<T>* db) {
  using A = acc_t<T>;
  Buffer part("bwd partials", gnvideo::cuda_detail::bwd_part_elems(p, c.N, c.C) * sizeof(A), 0);
  Buffer per_nc("per_nc", c.N * c.C * 2 * sizeof(A), 0);
  Buffer coef("coef", c.N * c.G * 2 * sizeof(A), 0);
  gnvideo::cuda_detail::run_bwd<T, V>(Launcher{}, p, c.N, c.C, c.S, c.G, act_code(c.act), dy, x, dx, mean, rstd, w, b,
                                      dw, db, part.as<Pair<A>>(), per_nc.as<Pair<A>>(), coef.as<Pair<A>>());
  part.check_guards();
  per_nc.check_guards();
  coef.check_guards();
}

template <typename T>
std::string run_case(const Case& c, std::istream& in, std::ostream& out, int64_t sms) {
  using A = acc_t<T>;
  constexpr int kPack = 16 / sizeof(T);
  const int64_t E = c.N * c.C * c.S, NG = c.N * c.G;
  Buffer xb("x", E * sizeof(T), c.x_off * sizeof(T));
  Buffer dyb("dy", E * sizeof(T), c.dy_off * sizeof(T));
  Buffer wb("weight", c.C * sizeof(A), 0), bb("bias", c.C * sizeof(A), 0);
  auto read = [&](Buffer& buf) {
    in.read(reinterpret_cast<char*>(buf.base() + buf.off), static_cast<std::streamsize>(buf.bytes));
    if (!in) emu::fail("case file too short reading " + buf.name);
  };
  read(xb);
  if (c.has_w) read(wb);
  if (c.has_b) read(bb);
  read(dyb);
  Buffer yb("y", E * sizeof(T), 0), dxb("dx", E * sizeof(T), 0);
  Buffer meanb("mean", NG * sizeof(A), 0), rstdb("rstd", NG * sizeof(A), 0);
  Buffer dwb("dweight", c.C * sizeof(A), 0), dbb("dbias", c.C * sizeof(A), 0);
  const A* w = c.has_w ? wb.as<A>() : nullptr;
  const A* b = c.has_b ? bb.as<A>() : nullptr;

  // Layout and plan as group_norm_fwd_cuda: channels-last in place when it fits, else an NCHW copy.
  const T* xk = xb.as<T>();
  const T* dyk = dyb.as<T>();
  T* yk = yb.as<T>();
  T* dxk = dxb.as<T>();
  auto plan = [&](bool cl, std::initializer_list<const void*> ptrs) {
    bool ok = true;
    for (const void* q : ptrs) ok = ok && aligned16(q);
    return gnvideo::cuda_detail::make_plan(c.N, c.C, c.S, cl, kPack, ok, sms, sizeof(T), sizeof(Welford<A>));
  };
  Plan pf = plan(c.cl, {xk, yk});
  using gnvideo::cuda_detail::bwd_part_elems;
  using gnvideo::cuda_detail::fwd_part_elems;
  std::string info = plan_text("fwd", pf, fwd_part_elems(pf, c.N, c.C) * sizeof(A));
  std::vector<T> xc, yc, dyc, dxc;
  const bool copy = c.cl && !pf.fits;
  if (copy) {
    xc.resize(E), yc.resize(E), dyc.resize(E), dxc.resize(E);
    transpose(xb.as<T>(), xc.data(), c.N, c.S, c.C);
    transpose(dyb.as<T>(), dyc.data(), c.N, c.S, c.C);
    std::memset(static_cast<void*>(yc.data()), kFill, E * sizeof(T));
    std::memset(static_cast<void*>(dxc.data()), kFill, E * sizeof(T));
    xk = xc.data(), yk = yc.data(), dyk = dyc.data(), dxk = dxc.data();
    pf = plan(false, {xk, yk});
    info += plan_text("copy", pf, fwd_part_elems(pf, c.N, c.C) * sizeof(A));
  }
  if (pf.vec) {
    forward<T, kPack>(pf, c, xk, yk, w, b, meanb.as<A>(), rstdb.as<A>());
  } else {
    forward<T, 1>(pf, c, xk, yk, w, b, meanb.as<A>(), rstdb.as<A>());
  }
  Plan pb = plan(copy ? false : c.cl, {xk, dyk, dxk});
  info += plan_text("bwd", pb, bwd_part_elems(pb, c.N, c.C) * sizeof(A));
  if (pb.vec) {
    backward<T, kPack>(pb, c, dyk, xk, dxk, meanb.as<A>(), rstdb.as<A>(), w, b, dwb.as<A>(), dbb.as<A>());
  } else {
    backward<T, 1>(pb, c, dyk, xk, dxk, meanb.as<A>(), rstdb.as<A>(), w, b, dwb.as<A>(), dbb.as<A>());
  }
  if (copy) {
    transpose(yc.data(), yb.as<T>(), c.N, c.C, c.S);
    transpose(dxc.data(), dxb.as<T>(), c.N, c.C, c.S);
  }
  for (Buffer* buf : {&xb, &dyb, &wb, &bb, &yb, &dxb, &meanb, &rstdb, &dwb, &dbb}) buf->check_guards();
  check_written(yb.as<unsigned char>(), sizeof(T), E, "y");
  check_written(dxb.as<unsigned char>(), sizeof(T), E, "dx");
  check_written(meanb.as<unsigned char>(), sizeof(A), NG, "mean");
  check_written(rstdb.as<unsigned char>(), sizeof(A), NG, "rstd");
  check_written(dwb.as<unsigned char>(), sizeof(A), c.C, "dweight");
  check_written(dbb.as<unsigned char>(), sizeof(A), c.C, "dbias");
  out << "ok" << info << " copy=" << (copy ? 1 : 0) << "\n";
  for (Buffer* buf : {&yb, &meanb, &rstdb, &dxb, &dwb, &dbb}) {
    out.write(reinterpret_cast<const char*>(buf->base() + buf->off), static_cast<std::streamsize>(buf->bytes));
  }
  return info;
}

}  // namespace

int main(int argc, char** argv) {
  int64_t sms = 132;
  std::vector<std::string> files;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--sms" && i + 1 < argc) {
      sms = std::stoll(argv[++i]);
    } else if (a == "--schedule" && i + 1 < argc) {
      emu::config().schedule_seed = std::stoull(argv[++i]);
    } else {
      files.push_back(a);
    }
  }
  if (files.empty() || files.size() % 2 != 0) {
    std::fprintf(stderr, "usage: %s [--sms N] [--schedule SEED] CASE OUT [CASE OUT ...]\n", argv[0]);
    return 2;
  }
  for (size_t i = 0; i < files.size(); i += 2) {
    std::ifstream in(files[i], std::ios::binary);
    if (!in) emu::fail("cannot open case file " + files[i]);
    std::string header;
    std::getline(in, header);
    const Case c = parse_header(header);
    std::ofstream out(files[i + 1], std::ios::binary);
    if (!out) emu::fail("cannot write " + files[i + 1]);
    if (c.dtype == "f64") {
      run_case<double>(c, in, out, sms);
    } else if (c.dtype == "f32") {
      run_case<float>(c, in, out, sms);
    } else if (c.dtype == "f16") {
      run_case<c10::Half>(c, in, out, sms);
    } else if (c.dtype == "bf16") {
      run_case<c10::BFloat16>(c, in, out, sms);
    } else {
      emu::fail("unknown dtype " + c.dtype);
    }
    if (!out) emu::fail("write to " + files[i + 1] + " failed");
  }
  const auto& cfg = emu::config();
  std::printf("emulated %" PRId64 " launches, %" PRId64 " fibers, %" PRId64 " fiber switches\n", cfg.launches,
              cfg.fibers_run, cfg.switches);
  return 0;
}
