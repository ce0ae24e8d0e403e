#include "lathe/core/host_memory.hpp"

#include <malloc.h>

#include <cstdlib>

namespace lathe::core {

void keep_freed_host_memory() {
#if defined(__GLIBC__)
  // 32 MiB is the largest mmap threshold glibc accepts on 64-bit systems; fixing it also stops
  // the dynamic threshold, and the trim threshold keeps up to 1 GiB of free heap top.
  if (!std::getenv("MALLOC_MMAP_THRESHOLD_")) mallopt(M_MMAP_THRESHOLD, 32 * 1024 * 1024);
  if (!std::getenv("MALLOC_TRIM_THRESHOLD_")) mallopt(M_TRIM_THRESHOLD, 1024 * 1024 * 1024);
#endif
}

}  // namespace lathe::core
