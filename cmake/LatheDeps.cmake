# Debian-packaged dependencies (scripts/setup.sh installs them).

find_package(yaml-cpp REQUIRED)
find_package(fmt REQUIRED)
find_package(cxxopts REQUIRED)
find_package(nlohmann_json 3.10 REQUIRED)
find_package(PkgConfig REQUIRED)
pkg_check_modules(UTF8PROC REQUIRED IMPORTED_TARGET libutf8proc)
# The tokenizers' regex pre-tokenizers (Split, tiktoken patterns): PCRE2 with JIT and Unicode properties.
pkg_check_modules(PCRE2 REQUIRED IMPORTED_TARGET libpcre2-8)

if(LATHE_WITH_MPI)
  find_package(MPI COMPONENTS CXX)
  if(NOT MPI_CXX_FOUND)
    message(FATAL_ERROR "lathe: LATHE_WITH_MPI=ON but no MPI was found (apt-get install libopenmpi-dev) "
                        "- or configure with -DLATHE_WITH_MPI=OFF")
  endif()
endif()

# ONNX (the exporter): Debian's libonnx-dev and protobuf. The library is found by name: the
# torch package's CMake files define a protobuf::libprotobuf target of their own that links nothing.
find_library(LATHE_PROTOBUF_LIB protobuf)
find_library(LATHE_ONNX_LIB onnx)
find_library(LATHE_ONNX_PROTO_LIB onnx_proto)
find_path(LATHE_ONNX_INCLUDE_DIR onnx/onnx_pb.h)
if(NOT LATHE_ONNX_LIB OR NOT LATHE_ONNX_PROTO_LIB OR NOT LATHE_ONNX_INCLUDE_DIR OR NOT LATHE_PROTOBUF_LIB)
  message(FATAL_ERROR "lathe: libonnx was not found (apt-get install libonnx-dev libprotobuf-dev)")
endif()
add_library(lathe_onnx INTERFACE)
target_include_directories(lathe_onnx SYSTEM INTERFACE ${LATHE_ONNX_INCLUDE_DIR})
target_compile_definitions(lathe_onnx INTERFACE ONNX_ML=1 ONNX_NAMESPACE=onnx)
target_link_libraries(lathe_onnx INTERFACE ${LATHE_ONNX_LIB} ${LATHE_ONNX_PROTO_LIB} ${LATHE_PROTOBUF_LIB})
