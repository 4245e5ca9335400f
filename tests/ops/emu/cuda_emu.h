// CUDA-on-CPU for tests: enough of CUDA C++ to compile and run the GroupNorm kernels (gnvideo/ops/csrc) unchanged
// with g++ (C++17), so CI executes them on every run without a GPU.
//
// Model: blocks run one after another (in index order or a seeded random order); each thread of a block is a fiber
// (ucontext) with its own stack, so __syncthreads and warp shuffles block and resume exactly where the hardware would.
// Warps are 32 consecutive threads. A fiber runs until it reaches a barrier, a shuffle or its end; the scheduler
// then picks the next runnable fiber: the lowest-numbered one (default, which runs a released warp ahead of the
// others and so exposes missing barriers) or a seeded random one (schedule_seed != 0).
// Checked, reported as "EMU ERROR: ..." and exit code 86 instead of a hang:
//   - a __syncthreads that some thread of the block never reaches (it exited, or waits elsewhere: deadlock);
//   - a shuffle whose mask names a lane that does not exist (partial warp) or has exited, or whose lanes disagree
//     on the mask; a width other than 32;
//   - a launch with more threads than the kernel's __launch_bounds__ (passed by the launcher) or a multi-dimensional
//     grid or block.
// __shared__ variables are function statics (one per kernel instantiation, shared by the fibers of the running block),
// which shared.ld gathers between __start_emu_shared and __stop_emu_shared (build with -fdata-sections); every byte
// of that range is set to 0xFF (a NaN in every floating type) before each block, so a read before the block's own
// write shows up as NaN. -fsanitize=bounds reports an index past a __shared__ array's size; under AddressSanitizer
// the fill skips any bytes ASan poisoned.
#pragma once

#include <ucontext.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#define EMU_ASAN 1
#else
#define EMU_ASAN 0
#endif

// ---- CUDA C++ keywords -----------------------------------------------------------------------------------------
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __launch_bounds__(...)
#define __shared__ static

struct uint3 {
  unsigned int x, y, z;
};
struct dim3 {
  unsigned int x, y, z;
  constexpr dim3(unsigned int x_ = 1, unsigned int y_ = 1, unsigned int z_ = 1) : x(x_), y(y_), z(z_) {}
};

extern "C" char __start_emu_shared[];
extern "C" char __stop_emu_shared[];

namespace emu {

[[noreturn]] inline void fail(const std::string& msg) {
  std::fprintf(stderr, "EMU ERROR: %s\n", msg.c_str());
  std::fflush(stderr);
  std::fflush(stdout);
  std::_Exit(86);
}

struct Config {
  uint64_t schedule_seed = 0;  // 0: lowest-numbered runnable fiber first; else seeded random picks and block order
  size_t stack_bytes = 64u << 10;  // ASan clears the shadow of the whole stack on every swapcontext: keep it small
  int64_t launches = 0;        // statistics
  int64_t fibers_run = 0;
  int64_t switches = 0;
};

inline Config& config() {
  static Config c;
  return c;
}

namespace detail {

enum class St { Ready, Barrier, Shuffle, Done };

struct Fiber {
  ucontext_t ctx;
  uint3 tid;
  St st = St::Done;
  unsigned shfl_mask = 0;
  int shfl_count = 0;  // shuffles done by this lane (parity selects the exchange buffer)
  void* stack = nullptr;
};

struct Warp {
  int lanes = 0;                   // threads that exist in this warp (32 except a partial last warp)
  int arrived[2] = {0, 0};         // lanes waiting in the exchange of each parity
  unsigned mask[2] = {0, 0};
  unsigned char buf[2][32][8];
};

struct Block {
  std::vector<Fiber> fibers;
  std::vector<Warp> warps;
  int nthreads = 0;
  int at_barrier = 0;
  int done = 0;
  Fiber* cur = nullptr;
  ucontext_t main_ctx;
  const void* body = nullptr;      // std::function-like thunk for the kernel call
  void (*run)(const void*) = nullptr;
#if EMU_ASAN
  void* main_fake_stack = nullptr;
  const void* main_stack_bottom = nullptr;
  size_t main_stack_size = 0;
#endif
};

inline Block& blk() {
  static Block b;
  return b;
}

inline uint3& block_idx() {
  static uint3 v{0, 0, 0};
  return v;
}
inline dim3& block_dim() {
  static dim3 v;
  return v;
}
inline dim3& grid_dim() {
  static dim3 v;
  return v;
}

inline const uint3& thread_idx() {
  Fiber* f = blk().cur;
  if (f == nullptr) fail("threadIdx read outside a kernel");
  return f->tid;
}

inline std::string where(const Fiber& f) {
  return "block " + std::to_string(block_idx().x) + " thread " + std::to_string(f.tid.x);
}

// Switch from the running fiber back to the scheduler.
inline void yield_to_main() {
  Block& b = blk();
  Fiber* f = b.cur;
#if EMU_ASAN
  void* fake = nullptr;
  __sanitizer_start_switch_fiber(f->st == St::Done ? nullptr : &fake, b.main_stack_bottom, b.main_stack_size);
#endif
  swapcontext(&f->ctx, &b.main_ctx);
#if EMU_ASAN
  __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#endif
}

inline void fiber_entry() {
  Block& b = blk();
#if EMU_ASAN
  __sanitizer_finish_switch_fiber(nullptr, &b.main_stack_bottom, &b.main_stack_size);
#endif
  b.run(b.body);
  Fiber* f = b.cur;
  f->st = St::Done;
  ++b.done;
  if (b.at_barrier > 0) {
    fail("__syncthreads not reached by every thread: " + where(*f) + " exited while " +
         std::to_string(b.at_barrier) + " thread(s) wait at a barrier");
  }
  const int w = static_cast<int>(f->tid.x) / 32, lane = static_cast<int>(f->tid.x) % 32;
  for (int par = 0; par < 2; ++par) {
    if (b.warps[w].arrived[par] > 0 && (b.warps[w].mask[par] >> lane & 1u)) {
      fail("shuffle mask names lane " + std::to_string(lane) + " of warp " + std::to_string(w) + ", but " +
           where(*f) + " exited");
    }
  }
  yield_to_main();  // never resumed
  fail("a finished fiber was resumed");
}

// Fill shared memory with 0xFF bytes (NaN for half, bfloat16, float, double); under ASan only unpoisoned bytes.
inline void poison_shared() {
  char* a = __start_emu_shared;
  char* e = __stop_emu_shared;
#if EMU_ASAN
  static std::vector<std::pair<char*, char*>> ranges;
  static bool scanned = false;
  if (!scanned) {
    scanned = true;
    for (char* p = a; p < e;) {
      while (p < e && __asan_address_is_poisoned(p)) ++p;
      char* q = p;
      while (q < e && !__asan_address_is_poisoned(q)) ++q;
      if (q > p) ranges.emplace_back(p, q);
      p = q;
    }
  }
  for (auto& r : ranges) std::memset(r.first, 0xFF, static_cast<size_t>(r.second - r.first));
#else
  std::memset(a, 0xFF, static_cast<size_t>(e - a));
#endif
}

inline uint64_t splitmix(uint64_t& s) {
  uint64_t z = (s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

inline void run_block(int nthreads, uint64_t& rng) {
  Block& b = blk();
  Config& cfg = config();
  if (static_cast<int>(b.fibers.size()) < nthreads) b.fibers.resize(nthreads);
  b.nthreads = nthreads;
  b.at_barrier = 0;
  b.done = 0;
  b.warps.assign((nthreads + 31) / 32, Warp{});
  for (int w = 0; w < static_cast<int>(b.warps.size()); ++w) b.warps[w].lanes = std::min(32, nthreads - 32 * w);
  static ucontext_t proto;
  static bool have_proto = false;
  if (!have_proto) {
    getcontext(&proto);
    have_proto = true;
  }
  for (int t = 0; t < nthreads; ++t) {
    Fiber& f = b.fibers[t];
    if (f.stack == nullptr) f.stack = std::malloc(cfg.stack_bytes);
    f.ctx = proto;
    f.ctx.uc_stack.ss_sp = f.stack;
    f.ctx.uc_stack.ss_size = cfg.stack_bytes;
    f.ctx.uc_link = nullptr;
    makecontext(&f.ctx, reinterpret_cast<void (*)()>(&fiber_entry), 0);
    f.tid = uint3{static_cast<unsigned>(t), 0, 0};
    f.st = St::Ready;
    f.shfl_count = 0;
  }
  poison_shared();
  std::vector<int> ready;
  ready.reserve(nthreads);
  while (b.done < nthreads) {
    ready.clear();
    for (int t = 0; t < nthreads; ++t)
      if (b.fibers[t].st == St::Ready) ready.push_back(t);
    if (ready.empty()) {
      std::string msg = "deadlock in block " + std::to_string(block_idx().x) + ":";
      int shown = 0;
      for (int t = 0; t < nthreads && shown < 8; ++t) {
        const St s = b.fibers[t].st;
        if (s == St::Done) continue;
        msg += " thread " + std::to_string(t) + (s == St::Barrier ? " at __syncthreads;" : " in a shuffle;");
        ++shown;
      }
      msg += " " + std::to_string(b.done) + " thread(s) exited";
      fail(msg);
    }
    // Run the picked fiber, then keep running the lowest-numbered ready fibers (or random ones) one at a time.
    const int t = cfg.schedule_seed == 0 ? ready.front() : ready[splitmix(rng) % ready.size()];
    Fiber& f = b.fibers[t];
    b.cur = &f;
    ++cfg.switches;
#if EMU_ASAN
    void* fake = nullptr;
    __sanitizer_start_switch_fiber(&fake, f.stack, cfg.stack_bytes);
#endif
    swapcontext(&b.main_ctx, &f.ctx);
#if EMU_ASAN
    __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#endif
    b.cur = nullptr;
  }
  cfg.fibers_run += nthreads;
}

template <typename F>
void call_thunk(const void* p) {
  (*static_cast<const F*>(p))();
}

}  // namespace detail

inline void syncthreads() {
  using namespace detail;
  Block& b = blk();
  Fiber* f = b.cur;
  if (f == nullptr) fail("__syncthreads outside a kernel");
  f->st = St::Barrier;
  if (++b.at_barrier == b.nthreads) {
    for (int t = 0; t < b.nthreads; ++t) b.fibers[t].st = St::Ready;
    b.at_barrier = 0;
  } else if (b.done > 0) {
    fail("__syncthreads not reached by every thread: " + std::to_string(b.done) + " thread(s) of block " +
         std::to_string(block_idx().x) + " exited before " + where(*f) + " arrived");
  }
  yield_to_main();
}

// Exchange through the warp: every lane in `mask` deposits `v`; returns lane src's value (src computed by the caller).
template <typename T>
T shfl(unsigned mask, T v, int delta, int width, int mode) {
  using namespace detail;
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value, "shuffle of a type the emulation lacks");
  Block& b = blk();
  Fiber* f = b.cur;
  if (f == nullptr) fail("shuffle outside a kernel");
  if (width != 32) fail("shuffle width " + std::to_string(width) + " is not emulated");
  const int w = static_cast<int>(f->tid.x) / 32, lane = static_cast<int>(f->tid.x) % 32;
  Warp& wp = b.warps[w];
  if (!(mask >> lane & 1u)) fail("shuffle called by " + where(*f) + " whose lane is not in the mask");
  for (int l = 0; l < 32; ++l) {
    if (!(mask >> l & 1u)) continue;
    if (l >= wp.lanes) {
      fail("shuffle mask names lane " + std::to_string(l) + " of warp " + std::to_string(w) + ", which does not exist (" +
           std::to_string(wp.lanes) + " threads in the warp; blockDim.x = " + std::to_string(b.nthreads) + ")");
    }
    if (b.fibers[w * 32 + l].st == St::Done) {
      fail("shuffle mask names lane " + std::to_string(l) + " of warp " + std::to_string(w) + ", which has exited");
    }
  }
  const int par = f->shfl_count & 1;
  ++f->shfl_count;
  if (wp.arrived[par] == 0) {
    wp.mask[par] = mask;
  } else if (wp.mask[par] != mask) {
    fail("lanes of warp " + std::to_string(w) + " disagree on the shuffle mask");
  }
  std::memcpy(wp.buf[par][lane], &v, sizeof(T));
  f->st = St::Shuffle;
  f->shfl_mask = mask;
  if (++wp.arrived[par] == __builtin_popcount(mask)) {
    for (int l = 0; l < 32; ++l)
      if (mask >> l & 1u) b.fibers[w * 32 + l].st = St::Ready;
    wp.arrived[par] = 0;
  }
  yield_to_main();
  int src = lane;
  if (mode == 0) src = lane + delta < 32 ? lane + delta : lane;  // down
  else if (mode == 1) src = lane - delta >= 0 ? lane - delta : lane;  // up
  else src = lane ^ delta;  // xor
  if (!(mask >> src & 1u)) {
    fail("shuffle reads lane " + std::to_string(src) + " which is not in the mask (" + where(*f) + ")");
  }
  T out;
  std::memcpy(&out, wp.buf[par][src], sizeof(T));
  return out;
}

// Runs kernel(args...) over a 1-D grid of 1-D blocks. `bound` is the kernel's __launch_bounds__.
template <typename... P, typename... Args>
void launch(void (*kernel)(P...), int64_t blocks, int threads, int bound, Args... args) {
  using namespace detail;
  Config& cfg = config();
  if (blocks < 0 || blocks > INT32_MAX) fail("grid of " + std::to_string(blocks) + " blocks");
  if (threads <= 0 || threads > 1024) fail("block of " + std::to_string(threads) + " threads");
  if (threads > bound) {
    fail("launch of " + std::to_string(threads) + " threads exceeds the kernel's __launch_bounds__(" +
         std::to_string(bound) + ")");
  }
  ++cfg.launches;
  auto body = [&]() { kernel(static_cast<P>(args)...); };
  Block& b = blk();
  b.body = &body;
  b.run = &call_thunk<decltype(body)>;
  grid_dim() = dim3(static_cast<unsigned>(blocks));
  block_dim() = dim3(static_cast<unsigned>(threads));
  std::vector<int64_t> order(static_cast<size_t>(blocks));
  for (int64_t i = 0; i < blocks; ++i) order[i] = i;
  uint64_t rng = cfg.schedule_seed * 0x2545F4914F6CDD1Dull + static_cast<uint64_t>(cfg.launches);
  if (cfg.schedule_seed != 0) {
    for (int64_t i = blocks - 1; i > 0; --i) std::swap(order[i], order[detail::splitmix(rng) % (i + 1)]);
  }
  for (int64_t i : order) {
    block_idx() = uint3{static_cast<unsigned>(i), 0, 0};
    run_block(threads, rng);
  }
}

}  // namespace emu

#define threadIdx (::emu::detail::thread_idx())
#define blockIdx (::emu::detail::block_idx())
#define blockDim (::emu::detail::block_dim())
#define gridDim (::emu::detail::grid_dim())

inline void __syncthreads() { ::emu::syncthreads(); }

// Fast division: the hardware's is within 2 ulp of a / b (0 once |b| > 2^126); the emulation computes a / b exactly
// rounded, so results that depend on those last bits are not reproduced bit for bit.
inline float __fdividef(float a, float b) { return a / b; }

template <typename T>
T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  return ::emu::shfl(mask, v, static_cast<int>(delta), width, 0);
}
template <typename T>
T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  return ::emu::shfl(mask, v, static_cast<int>(delta), width, 1);
}
template <typename T>
T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
  return ::emu::shfl(mask, v, lane_mask, width, 2);
}
