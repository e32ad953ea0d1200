#include "uel/runtime/cpu_allocator.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>
#include <unordered_map>
#include <vector>

#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>
#include <torch/version.h>

#include "uel/core/error.h"

namespace uel::runtime {
namespace {

// LibTorch 2.3 dropped the const of Allocator::allocate.
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 3)
#define UEL_ALLOCATE_CONST
#else
#define UEL_ALLOCATE_CONST const
#endif

constexpr size_t kAlignment = 64;  // what LibTorch's allocator guarantees (AVX-512 loads)
constexpr size_t kCachedFrom = size_t{1} << 20;

// Four classes per power of two: a reused block is at most 25% larger than the request.
size_t size_class(size_t n) {
  if (n < kCachedFrom)
    return (n + kAlignment - 1) / kAlignment * kAlignment;
  int top = 63 - __builtin_clzll(n);
  const size_t step = size_t{1} << (top - 2);
  return (n + step - 1) / step * step;
}

class CachingCpuAllocator final : public c10::Allocator {
 public:
  c10::DataPtr allocate(size_t n) UEL_ALLOCATE_CONST override {
    const size_t size = size_class(std::max<size_t>(n, 1));
    void* data = nullptr;
    if (size >= kCachedFrom) {
      std::lock_guard<std::mutex> lock(mutex_);
      auto it = free_.find(size);
      if (it != free_.end() && !it->second.empty()) {
        data = it->second.back();
        it->second.pop_back();
        cached_bytes_ -= static_cast<int64_t>(size);
        ++hits_;
      } else {
        ++misses_;
      }
    }
    if (data == nullptr) {
      data = fresh(size);
      if (size >= kCachedFrom) {
        std::lock_guard<std::mutex> lock(mutex_);
        large_[data] = size;
      }
    }
    return {data, data, &release, c10::Device(c10::DeviceType::CPU)};
  }

  // Raw allocations (oneDNN's scratch buffers) free through it as well.
  c10::DeleterFnPtr raw_deleter() const override {
    return &release;
  }

  // LibTorch 2.x declares it (pure virtual); 1.13 does not.
  void copy_data(void* dest, const void* src, std::size_t count) const {
    std::memcpy(dest, src, count);
  }

  void set_cap(int64_t cap) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      cap_ = cap;
    }
    trim_to(cap);
  }

  CpuCacheStats stats() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return {hits_, misses_, cached_bytes_};
  }

  static CachingCpuAllocator& instance() {
    static auto* allocator = new CachingCpuAllocator();  // never destroyed: tensors outlive statics
    return *allocator;
  }

 private:
  static void release(void* data) {
    instance().give_back(data);
  }

  void give_back(void* data) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto it = large_.find(data);
      if (it != large_.end()) {
        const size_t size = it->second;
        if (cached_bytes_ + static_cast<int64_t>(size) <= cap_) {
          free_[size].push_back(data);
          cached_bytes_ += static_cast<int64_t>(size);
          return;
        }
        large_.erase(it);
      }
    }
    std::free(data);
  }

  void* fresh(size_t size) const {
    void* data = nullptr;
    if (posix_memalign(&data, kAlignment, size) != 0) {
      // Out of memory: give the cache back and try once more.
      trim_to(0);
      UEL_CHECK(
          posix_memalign(&data, kAlignment, size) == 0,
          "out of memory allocating {} bytes on the CPU; lower --train.batch_size",
          size);
    }
    return data;
  }

  void trim_to(int64_t bytes) const {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto& [size, blocks] : free_) {
      while (cached_bytes_ > bytes && !blocks.empty()) {
        large_.erase(blocks.back());
        std::free(blocks.back());
        blocks.pop_back();
        cached_bytes_ -= static_cast<int64_t>(size);
      }
    }
  }

  mutable std::mutex mutex_;
  mutable std::unordered_map<size_t, std::vector<void*>> free_;  // size class -> cached blocks
  mutable std::unordered_map<void*, size_t> large_;              // every live or cached large block
  mutable int64_t cached_bytes_ = 0;
  mutable int64_t hits_ = 0;
  mutable int64_t misses_ = 0;
  int64_t cap_ = 0;
};

}  // namespace

void install_caching_cpu_allocator(int64_t max_cached_bytes) {
  auto& allocator = CachingCpuAllocator::instance();
  allocator.set_cap(max_cached_bytes);
  c10::SetCPUAllocator(&allocator, /*priority=*/1);
}

CpuCacheStats caching_cpu_allocator_stats() {
  return CachingCpuAllocator::instance().stats();
}

}  // namespace uel::runtime
