#include "lathe/core/denormals.hpp"

#include <ATen/Context.h>

#include <cstdlib>
#include <cstring>

namespace lathe::core {

bool flush_denormals_by_default() {
  const char* keep = std::getenv("LATHE_KEEP_DENORMALS");
  const bool flush = !(keep && *keep && std::strcmp(keep, "0") != 0);
  return at::globalContext().setFlushDenormal(flush) && flush;
}

}  // namespace lathe::core
