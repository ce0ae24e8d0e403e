# Compiler launcher, warnings and linker settings shared by every lathe target.

# ccache: the precompiled header needs pch_defines/time_macros sloppiness, and a base directory
# lets a fresh clone elsewhere reuse the cache of an earlier one.
find_program(LATHE_CCACHE ccache)
if(LATHE_CCACHE AND NOT CMAKE_CXX_COMPILER_LAUNCHER)
  set(_lathe_launcher ${CMAKE_COMMAND} -E env
      CCACHE_SLOPPINESS=pch_defines,time_macros,include_file_mtime,include_file_ctime
      CCACHE_BASEDIR=${PROJECT_SOURCE_DIR} CCACHE_NOHASHDIR=1 ${LATHE_CCACHE})
  set(CMAKE_CXX_COMPILER_LAUNCHER ${_lathe_launcher})
  set(CMAKE_C_COMPILER_LAUNCHER ${_lathe_launcher})
  set(CMAKE_CUDA_COMPILER_LAUNCHER ${_lathe_launcher})
endif()

# Warnings apply to our own code only: torch and the Debian libraries come in as SYSTEM includes.
add_library(lathe_warnings INTERFACE)
target_compile_options(lathe_warnings INTERFACE
  $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Wno-unused-parameter>)

# The binaries must start on machines without a GPU driver: nothing may pull libcuda.so into
# NEEDED. --as-needed drops libraries that no symbol references (the driver stub among them);
# LatheTorch.cmake wraps torch_cuda in --no-as-needed because it registers CUDA at load time.
#
# The torch wheel's libraries export their own copies of some libstdc++ symbols (std::filesystem
# among them) that crash when called from our code. Putting libstdc++ first in NEEDED makes the
# dynamic linker bind those symbols to the system libstdc++.
function(lathe_link_executable target)
  target_link_options(${target} PRIVATE "LINKER:--as-needed"
                      "SHELL:-Wl,--push-state,--no-as-needed -lstdc++ -Wl,--pop-state")
endfunction()
