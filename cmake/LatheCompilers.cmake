# Compiler launcher, warnings and linker settings shared by every lathe target.

find_program(LATHE_CCACHE ccache)
if(LATHE_CCACHE AND NOT CMAKE_CXX_COMPILER_LAUNCHER)
  set(CMAKE_CXX_COMPILER_LAUNCHER ${LATHE_CCACHE})
  set(CMAKE_C_COMPILER_LAUNCHER ${LATHE_CCACHE})
  set(CMAKE_CUDA_COMPILER_LAUNCHER ${LATHE_CCACHE})
endif()

# Warnings apply to our own code only: torch and the Debian libraries come in as SYSTEM includes.
add_library(lathe_warnings INTERFACE)
target_compile_options(lathe_warnings INTERFACE
  $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Wno-unused-parameter>)

# The binaries must start on machines without a GPU driver: nothing may pull libcuda.so into
# NEEDED. --as-needed drops libraries that no symbol references (the driver stub among them);
# LatheTorch.cmake wraps torch_cuda in --no-as-needed because it registers CUDA at load time.
function(lathe_link_executable target)
  target_link_options(${target} PRIVATE "LINKER:--as-needed")
endfunction()
