// The one place where a .cu file learns whether it is compiled by nvcc for a GPU or as C++ for the CPU emulator.
#pragma once
#if defined(__CUDACC__)
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>
#define VRWKV_LAUNCH(kernel, grid, block, stream, ...) \
    kernel<<<(grid), (block), 0, static_cast<cudaStream_t>(stream)>>>(__VA_ARGS__)
#define VRWKV_CUDA_CHECK_LAUNCH()                                                                       \
    do {                                                                                                \
        const cudaError_t err_ = cudaGetLastError();                                                    \
        if (err_ != cudaSuccess) throw std::runtime_error(std::string("vrwkv: ") + cudaGetErrorString(err_)); \
    } while (0)
#else
#include "cuda_on_cpu/cuda_on_cpu.h"
#endif
