// cuda_on_cpu: runs the kernels' own CUDA source on the CPU with the same grid, block and shared-memory
// decomposition, so that their logic (indexing, staging, barriers) is tested on machines without a GPU.
//
// Include instead of the CUDA runtime when compiling a .cu file as C++20 (g++ -x c++ -std=c++20).  Blocks run one
// after another; the threads of a block run in one of two ways:
//  * Fibers (default): every CUDA thread is a ucontext fiber on the calling OS thread; __syncthreads() yields to a
//    scheduler that resumes the live fibers in forward, reverse or seeded-shuffled order each round, so a missing
//    barrier changes the result deterministically.
//  * Threads: one OS thread per CUDA thread and a std::barrier, for ThreadSanitizer (-fsanitize=thread), which then
//    reports shared-memory races that a missing barrier opens.
// Not modelled: weak GPU memory ordering, warp-synchronous execution, exact __expf / FMA rounding.
#pragma once
#if defined(__CUDACC__)
#error "cuda_on_cpu.h is for compiling CUDA source as C++; nvcc uses the real runtime"
#endif

#include <ucontext.h>

#include <algorithm>
#include <atomic>
#include <barrier>
#include <cmath>
#include <cstdint>
#include <functional>
#include <memory>
#include <numeric>
#include <random>
#include <stdexcept>
#include <thread>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
// Blocks run one at a time, so one static copy per kernel instantiation is the block's shared memory (and, as on a
// GPU, it keeps stale values from the previous block).
#define __shared__ static

struct dim3 {
    unsigned x = 1, y = 1, z = 1;
    constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
using uint3 = dim3;
using cudaStream_t = void*;

namespace cuda_on_cpu {

enum class Mode : int { kFibersForward = 0, kFibersReverse = 1, kFibersShuffled = 2, kThreads = 3 };

struct Config {
    Mode mode = Mode::kFibersForward;
    uint64_t seed = 0;                        // of the shuffled schedule
    size_t fiber_stack = 256 * 1024;
};
inline Config& config() {
    static Config c;
    return c;
}

// The executing CUDA thread's coordinates: per OS thread, and rewritten by the fiber scheduler before each resume.
inline thread_local dim3 tl_thread_idx, tl_block_idx, tl_block_dim, tl_grid_dim;

class FiberBlock;
inline thread_local FiberBlock* tl_fibers = nullptr;
inline thread_local std::barrier<>* tl_barrier = nullptr;

class FiberBlock {
  public:
    FiberBlock(const dim3& block, const std::function<void()>& body) : body_(body), block_(block) {}

    void run() {
        const unsigned n = block_.x * block_.y * block_.z;
        const size_t stack = config().fiber_stack;
        fibers_.resize(n);
        for (unsigned i = 0; i < n; ++i) {
            Fiber& f = fibers_[i];
            f.stack.reset(new char[stack]);
            f.idx = dim3(i % block_.x, (i / block_.x) % block_.y, i / (block_.x * block_.y));
            getcontext(&f.ctx);
            f.ctx.uc_stack.ss_sp = f.stack.get();
            f.ctx.uc_stack.ss_size = stack;
            f.ctx.uc_link = &scheduler_;
            makecontext(&f.ctx, &FiberBlock::entry, 0);
        }
        std::vector<unsigned> order(n);
        std::iota(order.begin(), order.end(), 0u);
        std::mt19937_64 rng(config().seed);
        tl_fibers = this;
        for (size_t live = n; live > 0;) {        // one round: every live fiber runs to its next barrier or its end
            if (config().mode == Mode::kFibersReverse) std::reverse(order.begin(), order.end());
            if (config().mode == Mode::kFibersShuffled) std::shuffle(order.begin(), order.end(), rng);
            for (unsigned i : order) {
                if (fibers_[i].done) continue;
                current_ = i;
                tl_thread_idx = fibers_[i].idx;
                swapcontext(&scheduler_, &fibers_[i].ctx);
                if (fibers_[i].done) --live;
            }
        }
        tl_fibers = nullptr;
    }

    void yield() { swapcontext(&fibers_[current_].ctx, &scheduler_); }

  private:
    struct Fiber {
        ucontext_t ctx{};
        std::unique_ptr<char[]> stack;
        dim3 idx;
        bool done = false;
    };
    static void entry() {
        FiberBlock* self = tl_fibers;
        self->body_();
        self->fibers_[self->current_].done = true;   // uc_link returns to the scheduler
    }
    const std::function<void()>& body_;
    dim3 block_;
    std::vector<Fiber> fibers_;
    ucontext_t scheduler_{};
    unsigned current_ = 0;
};

inline void syncthreads() {
    if (tl_fibers) tl_fibers->yield();
    else if (tl_barrier) tl_barrier->arrive_and_wait();
}

inline void run_block_threads(const dim3& block, const std::function<void()>& body) {
    const unsigned n = block.x * block.y * block.z;
    std::barrier<> bar(n);
    const dim3 bidx = tl_block_idx, grid = tl_grid_dim;
    std::vector<std::thread> threads;
    threads.reserve(n);
    for (unsigned i = 0; i < n; ++i) {
        threads.emplace_back([&, i] {
            tl_thread_idx = dim3(i % block.x, (i / block.x) % block.y, i / (block.x * block.y));
            tl_block_idx = bidx;
            tl_block_dim = block;
            tl_grid_dim = grid;
            tl_barrier = &bar;
            body();
            tl_barrier = nullptr;
            bar.arrive_and_drop();                  // an exited thread no longer holds the others at a barrier
        });
    }
    for (auto& t : threads) t.join();
}

// Runs body() as every thread of every block of the grid.
inline void launch(const dim3& grid, const dim3& block, const std::function<void()>& body) {
    tl_grid_dim = grid;
    tl_block_dim = block;
    for (unsigned z = 0; z < grid.z; ++z)
        for (unsigned y = 0; y < grid.y; ++y)
            for (unsigned x = 0; x < grid.x; ++x) {
                tl_block_idx = dim3(x, y, z);
                if (config().mode == Mode::kThreads) run_block_threads(block, body);
                else FiberBlock(block, body).run();
            }
}

}  // namespace cuda_on_cpu

#define threadIdx (::cuda_on_cpu::tl_thread_idx)
#define blockIdx (::cuda_on_cpu::tl_block_idx)
#define blockDim (::cuda_on_cpu::tl_block_dim)
#define gridDim (::cuda_on_cpu::tl_grid_dim)
#define __syncthreads() ::cuda_on_cpu::syncthreads()

// Device intrinsics the kernels use (glibc declares __expf but does not export it).
inline float __expf(float x) { return std::exp(x); }
inline float __fdividef(float a, float b) { return a / b; }

// Launch: kernel<<<grid, block, 0, stream>>>(args...) under nvcc, the emulator here.  Arguments are captured by
// value, as a real launch copies them.
#define VRWKV_LAUNCH(kernel, grid, block, stream, ...) \
    ((void)(stream), ::cuda_on_cpu::launch((grid), (block), [=] { kernel(__VA_ARGS__); }))
#define VRWKV_CUDA_CHECK_LAUNCH() ((void)0)
