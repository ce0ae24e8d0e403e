// Host allocator settings for a process that runs models.
#pragma once

namespace lathe::core {

/// Keeps freed host memory of up to 32 MiB a block in the process heap for reuse, instead of
/// handing it back to the kernel: a forward pass allocates and frees activations of many MiB
/// in every layer, and glibc's defaults unmap such blocks on free, so each new one is faulted
/// in and zeroed page by page again (a third of a wide int8 layer's time at batch 8 x 128).
/// The settings glibc reads from MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_ are left as
/// the user set them. Call once, early in main().
void keep_freed_host_memory();

}  // namespace lathe::core
