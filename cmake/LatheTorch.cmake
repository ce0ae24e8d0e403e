# Finds LibTorch and exposes it as the interface target `lathe_torch`.
#
# Order: an explicit Torch_DIR (the LibTorch zip from pytorch.org), else the torch wheel of
# LATHE_PYTHON (default: the project venv made by scripts/setup.sh), found through
# torch.utils.cmake_prefix_path.

# LATHE_PYTHON also runs the Python reference tests, so it is resolved even with Torch_DIR.
if(NOT LATHE_PYTHON)
  if(EXISTS ${PROJECT_SOURCE_DIR}/.venv/bin/python)
    set(LATHE_PYTHON ${PROJECT_SOURCE_DIR}/.venv/bin/python CACHE FILEPATH "" FORCE)
  else()
    find_program(_lathe_python3 NAMES python3 python)
    set(LATHE_PYTHON ${_lathe_python3} CACHE FILEPATH "" FORCE)
  endif()
endif()

if(NOT Torch_DIR)
  execute_process(
    COMMAND ${LATHE_PYTHON} -c "import torch.utils; print(torch.utils.cmake_prefix_path)"
    OUTPUT_VARIABLE _lathe_torch_prefix OUTPUT_STRIP_TRAILING_WHITESPACE
    RESULT_VARIABLE _lathe_torch_rc ERROR_QUIET)
  if(NOT _lathe_torch_rc EQUAL 0)
    message(FATAL_ERROR
      "lathe: cannot import torch with ${LATHE_PYTHON}. Run scripts/setup.sh (it installs the "
      "torch==2.11.0 wheel into .venv), or pass -DTorch_DIR=<libtorch>/share/cmake/Torch.")
  endif()
  list(APPEND CMAKE_PREFIX_PATH ${_lathe_torch_prefix})
endif()

# nvcc 13 rejects the architectures torch guesses on a machine without a GPU: default to Hopper.
if(NOT TORCH_CUDA_ARCH_LIST)
  if(DEFINED ENV{TORCH_CUDA_ARCH_LIST})
    set(TORCH_CUDA_ARCH_LIST $ENV{TORCH_CUDA_ARCH_LIST})
  else()
    set(TORCH_CUDA_ARCH_LIST 9.0)
  endif()
endif()
set(TORCH_CUDA_ARCH_LIST ${TORCH_CUDA_ARCH_LIST} CACHE STRING "CUDA architectures for LibTorch's CMake")
set(ENV{TORCH_CUDA_ARCH_LIST} ${TORCH_CUDA_ARCH_LIST})

find_package(Torch 2.11 REQUIRED)

# LATHE_WITH_CUDA follows the LibTorch that was found, unless the user turns it off.
if(TARGET torch_cuda)
  set(_lathe_torch_has_cuda ON)
else()
  set(_lathe_torch_has_cuda OFF)
endif()
option(LATHE_WITH_CUDA "Build CUDA/NCCL support (on when the found LibTorch has CUDA)" ${_lathe_torch_has_cuda})
if(LATHE_WITH_CUDA AND NOT _lathe_torch_has_cuda)
  message(FATAL_ERROR "lathe: LATHE_WITH_CUDA=ON but the LibTorch at ${Torch_DIR} has no CUDA")
endif()

# Own interface target: torch's include directories as SYSTEM (no warnings from its headers),
# only the libraries lathe uses, and torch_cuda kept NEEDED with --no-as-needed because it
# registers the CUDA backend from a static initialiser (no symbol of it is referenced).
#
# The wheel's include directory also carries its own copies of protobuf and fmt, which would
# shadow Debian's (libonnx is built against Debian's protobuf; we link Debian's libfmt). Torch is
# therefore seen through a directory of links to its include tree without those two.
set(_lathe_torch_inc ${PROJECT_BINARY_DIR}/torch-include)
if(EXISTS ${_lathe_torch_inc}/.prefix)
  file(READ ${_lathe_torch_inc}/.prefix _lathe_old_prefix)
  if(NOT _lathe_old_prefix STREQUAL TORCH_INSTALL_PREFIX)
    file(REMOVE_RECURSE ${_lathe_torch_inc})
  endif()
endif()
file(MAKE_DIRECTORY ${_lathe_torch_inc})
file(WRITE ${_lathe_torch_inc}/.prefix ${TORCH_INSTALL_PREFIX})
file(GLOB _lathe_torch_inc_entries RELATIVE ${TORCH_INSTALL_PREFIX}/include ${TORCH_INSTALL_PREFIX}/include/*)
foreach(_entry IN LISTS _lathe_torch_inc_entries)
  if(NOT _entry MATCHES "^(google|fmt)$" AND NOT EXISTS ${_lathe_torch_inc}/${_entry})
    file(CREATE_LINK ${TORCH_INSTALL_PREFIX}/include/${_entry} ${_lathe_torch_inc}/${_entry} SYMBOLIC)
  endif()
endforeach()
list(TRANSFORM TORCH_INCLUDE_DIRS REPLACE "^${TORCH_INSTALL_PREFIX}/include" "${_lathe_torch_inc}"
     OUTPUT_VARIABLE _lathe_torch_include_dirs)
add_library(lathe_torch INTERFACE)
target_include_directories(lathe_torch SYSTEM INTERFACE ${_lathe_torch_include_dirs})
target_compile_options(lathe_torch INTERFACE ${TORCH_CXX_FLAGS})
get_target_property(_lathe_torch_defs torch INTERFACE_COMPILE_DEFINITIONS)
if(_lathe_torch_defs)
  target_compile_definitions(lathe_torch INTERFACE ${_lathe_torch_defs})
endif()
target_link_libraries(lathe_torch INTERFACE ${TORCH_INSTALL_PREFIX}/lib/libtorch.so
  ${TORCH_INSTALL_PREFIX}/lib/libtorch_cpu.so ${TORCH_INSTALL_PREFIX}/lib/libc10.so)
if(LATHE_WITH_CUDA)
  target_link_libraries(lathe_torch INTERFACE
    "-Wl,--no-as-needed,${TORCH_INSTALL_PREFIX}/lib/libtorch_cuda.so,--as-needed"
    ${TORCH_INSTALL_PREFIX}/lib/libc10_cuda.so)
  # NCCL's header (for ProcessGroupNCCL and the version lathe env reports): the CUDA toolkit's,
  # else the nvidia-nccl wheel's.
  find_path(LATHE_NCCL_INCLUDE_DIR nccl.h
    HINTS ${CUDAToolkit_INCLUDE_DIRS} /usr/local/cuda/include
          ${TORCH_INSTALL_PREFIX}/../nvidia/nccl/include ${TORCH_INSTALL_PREFIX}/../nvidia/cu13/include)
  if(NOT LATHE_NCCL_INCLUDE_DIR)
    message(FATAL_ERROR "lathe: nccl.h not found; install NCCL or pass -DLATHE_NCCL_INCLUDE_DIR=")
  endif()
  target_include_directories(lathe_torch SYSTEM INTERFACE ${CUDAToolkit_INCLUDE_DIRS})
endif()
# The wheel's libraries find their CUDA dependencies through their own RUNPATH; let the linker
# follow it when it checks them, and let our binaries find libtorch at run time.
target_link_options(lathe_torch INTERFACE "LINKER:-rpath,${TORCH_INSTALL_PREFIX}/lib"
  "LINKER:-rpath-link,${TORCH_INSTALL_PREFIX}/lib")
message(STATUS "lathe: LibTorch ${Torch_VERSION} at ${TORCH_INSTALL_PREFIX} (CUDA: ${LATHE_WITH_CUDA}, arch ${TORCH_CUDA_ARCH_LIST})")
