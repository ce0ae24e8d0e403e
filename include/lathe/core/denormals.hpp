// Denormal floats on the CPU: flushed to zero by default.
//
// An fp32 GEMM whose inputs are denormal (|x| < 1.2e-38, as the gradients of a saturated
// softmax are) runs about 200x slower on x86 CPUs than on normal numbers; with flush-to-zero
// and denormals-are-zero set, the same product runs at full speed, and no value a model can
// tell from zero changes (scripts/bench/denormal_bench.py measures both).
#pragma once

namespace lathe::core {

/// Sets flush-to-zero and denormals-are-zero on the calling thread, unless the environment says
/// LATHE_KEEP_DENORMALS=1. Call first in main(), before any parallel work: the threads of
/// ATen's OpenMP pool take the mode of the thread that starts them, and nothing reaches them
/// afterwards (an OpenMP pragma in lathe's own code would run on another OpenMP runtime than
/// torch's). Returns whether denormals are flushed.
bool flush_denormals_by_default();

}  // namespace lathe::core
