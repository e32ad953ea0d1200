# Every dependency through find_package; CUDA and NCCL are optional and detected.

find_package(Torch REQUIRED)
find_package(MPI REQUIRED COMPONENTS C CXX)
find_package(HDF5 REQUIRED COMPONENTS C)
find_package(Boost REQUIRED COMPONENTS program_options)
find_package(fmt REQUIRED)
find_package(ZLIB REQUIRED)
find_package(PNG REQUIRED)
find_package(JPEG REQUIRED)
find_package(Threads REQUIRED)

# uel's objects take LibTorch's _GLIBCXX_USE_CXX11_ABI (TORCH_CXX_FLAGS) while fmt, Boost and
# GTest were built with the compiler's default: two std::string layouts would not link.
if(TORCH_CXX_FLAGS MATCHES "_GLIBCXX_USE_CXX11_ABI=([01])")
  set(_uel_torch_abi ${CMAKE_MATCH_1})
  include(CheckCXXSourceCompiles)
  check_cxx_source_compiles("#include <string>
#if !_GLIBCXX_USE_CXX11_ABI
#error pre-C++11 ABI
#endif
int main() { return 0; }" UEL_COMPILER_CXX11_ABI)
  if(UEL_COMPILER_CXX11_ABI)
    set(_uel_compiler_abi 1)
  else()
    set(_uel_compiler_abi 0)
  endif()
  if(NOT _uel_torch_abi EQUAL _uel_compiler_abi)
    message(FATAL_ERROR "LibTorch (${Torch_DIR}) is built with _GLIBCXX_USE_CXX11_ABI="
      "${_uel_torch_abi} but this compiler's libraries (fmt, Boost, GTest) use "
      "${_uel_compiler_abi}: uel would not link. Use a LibTorch with the C++11 ABI (pip wheels "
      "from torch 2.7 on, or the 'cxx11 ABI' LibTorch download)")
  endif()
endif()

# A LibTorch built with CUDA (the GPU machines' wheel; Debian's is CPU only) brings c10_cuda.
set(UEL_TORCH_CUDA OFF)
if(C10_CUDA_LIBRARY)
  set(UEL_TORCH_CUDA ON)
endif()

# LibTorch's package exports variables, not a target: wrap them once.
if(NOT TARGET uel_torch)
  add_library(uel_torch INTERFACE)
  target_link_libraries(uel_torch INTERFACE ${TORCH_LIBRARIES})
  target_include_directories(uel_torch SYSTEM INTERFACE ${TORCH_INCLUDE_DIRS})
  separate_arguments(_uel_torch_flags UNIX_COMMAND "${TORCH_CXX_FLAGS}")
  target_compile_options(uel_torch INTERFACE ${_uel_torch_flags})
endif()

# CUDA toolkit: AUTO builds the CUDA code wherever the toolkit is found, GPU or not.
set(UEL_HAVE_CUDA OFF)
if(NOT UEL_USE_CUDA STREQUAL "OFF")
  if(NOT CUDAToolkit_ROOT AND EXISTS /usr/local/cuda)
    set(CUDAToolkit_ROOT /usr/local/cuda)
  endif()
  find_package(CUDAToolkit QUIET)
  if(CUDAToolkit_FOUND)
    set(UEL_HAVE_CUDA ON)
  elseif(UEL_USE_CUDA STREQUAL "ON")
    message(FATAL_ERROR "UEL_USE_CUDA=ON but no CUDA toolkit was found; set CUDAToolkit_ROOT "
                        "or configure with -DUEL_USE_CUDA=OFF")
  endif()
endif()

set(UEL_HAVE_NCCL OFF)
if(UEL_HAVE_CUDA AND NOT UEL_USE_NCCL STREQUAL "OFF")
  # Also the nvidia-nccl wheel beside a pip-installed torch (Torch_DIR is
  # site-packages/torch/share/cmake/Torch); its lib/ has only libnccl.so.2.
  get_filename_component(_uel_site_packages "${Torch_DIR}/../../../.." ABSOLUTE)
  find_path(NCCL_INCLUDE_DIR nccl.h
    HINTS ${NCCL_ROOT} ENV NCCL_ROOT ${CUDAToolkit_INCLUDE_DIRS} ${_uel_site_packages}/nvidia/nccl
    PATH_SUFFIXES include)
  find_library(NCCL_LIBRARY NAMES nccl libnccl.so.2
    HINTS ${NCCL_ROOT} ENV NCCL_ROOT ${CUDAToolkit_LIBRARY_DIR} ${_uel_site_packages}/nvidia/nccl
    PATH_SUFFIXES lib lib64)
  if(NCCL_INCLUDE_DIR AND NCCL_LIBRARY)
    set(UEL_HAVE_NCCL ON)
    add_library(uel_nccl INTERFACE)
    target_include_directories(uel_nccl SYSTEM INTERFACE ${NCCL_INCLUDE_DIR})
    target_link_libraries(uel_nccl INTERFACE ${NCCL_LIBRARY} CUDA::cudart)
  endif()
endif()
if(UEL_USE_NCCL STREQUAL "ON" AND NOT UEL_HAVE_NCCL)
  message(FATAL_ERROR "UEL_USE_NCCL=ON but CUDA or nccl.h/libnccl was not found; set NCCL_ROOT "
                      "or configure with -DUEL_USE_NCCL=OFF")
endif()

message(STATUS "uel: LibTorch ${Torch_VERSION} (CUDA ${UEL_TORCH_CUDA}), CUDA code ${UEL_HAVE_CUDA}, NCCL backend ${UEL_HAVE_NCCL}")

# Optional: FAISS's CPU k-means as the reference of `uel bench kmeans` (Debian libfaiss-dev).
find_package(OpenMP QUIET COMPONENTS CXX)
find_package(faiss CONFIG QUIET)
set(UEL_HAVE_FAISS OFF)
if(TARGET faiss AND OpenMP_CXX_FOUND)
  set(UEL_HAVE_FAISS ON)
endif()
message(STATUS "uel: FAISS (bench kmeans reference) ${UEL_HAVE_FAISS}")
