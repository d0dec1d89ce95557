# Sanitizer and fuzzing instrumentation for the whole build (included by the top level).
#
#   ECA_SANITIZE  "" | address | thread | undefined | address,undefined   (ON = address,undefined)
#   ECA_FUZZ      ON: libFuzzer coverage instrumentation everywhere and the tests/fuzz targets
#                 (clang only; usually together with ECA_SANITIZE=address,undefined)
#
# GCC links the runtime as a shared library into everything; clang links it statically into
# our executables and leaves the libraries' references to it open. Either way a program we do
# not build (perftest, rping, ...) must get the shared runtime preloaded: eca-run sets
# LD_PRELOAD to ECA_SANITIZER_PRELOAD for it.
# UBSan is built recoverable; make its reports fatal at run time with
# UBSAN_OPTIONS=halt_on_error=1 (tests/sanitizer.env has the settings the CI uses).

set(ECA_SANITIZER_PRELOAD "")
# Libraries are linked with --no-undefined unless instrumentation leaves runtime symbols that
# only the executable (libFuzzer) or a preloaded runtime provides.
set(ECA_NO_UNDEFINED -Wl,--no-undefined)

if(ECA_SANITIZE STREQUAL "ON" OR ECA_SANITIZE STREQUAL "1" OR ECA_SANITIZE STREQUAL "TRUE")
  set(ECA_SANITIZE "address,undefined")
elseif(ECA_SANITIZE STREQUAL "OFF" OR ECA_SANITIZE STREQUAL "0" OR ECA_SANITIZE STREQUAL "FALSE")
  set(ECA_SANITIZE "")
endif()

if(ECA_SANITIZE)
  string(REPLACE "," ";" _eca_san_list "${ECA_SANITIZE}")
  foreach(s ${_eca_san_list})
    if(NOT s MATCHES "^(address|thread|undefined)$")
      message(FATAL_ERROR "ECA_SANITIZE: unknown sanitizer '${s}' (address, thread, undefined)")
    endif()
  endforeach()
  if("address" IN_LIST _eca_san_list AND "thread" IN_LIST _eca_san_list)
    message(FATAL_ERROR "ECA_SANITIZE: address and thread cannot be combined")
  endif()
  set(_eca_san_flags -fsanitize=${ECA_SANITIZE} -fno-omit-frame-pointer)
  add_compile_options(${_eca_san_flags})
  add_link_options(-fsanitize=${ECA_SANITIZE})
  if(CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
    # C programs (examples/) link our C++ libraries: they need UBSan's C++ part as well.
    add_link_options(-fsanitize-link-c++-runtime $<$<LINK_LANGUAGE:C>:-lstdc++>)
  elseif("thread" IN_LIST _eca_san_list)
    # GCC warns at every std::atomic_thread_fence (Boost.Asio has many): TSan does not model
    # stand-alone fences, so synchronisation that relies on fences alone can be reported as a
    # race. Such a report names the fence's function; see docs/testing.md.
    add_compile_options(-Wno-tsan)
  endif()

  # The runtime a foreign program must preload: ASan's or TSan's (UBSan alone needs none
  # with GCC; with clang its standalone runtime).
  if("address" IN_LIST _eca_san_list)
    set(_eca_rt asan)
  elseif("thread" IN_LIST _eca_san_list)
    set(_eca_rt tsan)
  else()
    set(_eca_rt ubsan)
  endif()
  if(CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
    execute_process(COMMAND ${CMAKE_CXX_COMPILER} -print-file-name=libclang_rt.${_eca_rt}-x86_64.so
                    OUTPUT_VARIABLE _eca_rt_path OUTPUT_STRIP_TRAILING_WHITESPACE)
    if(_eca_rt STREQUAL "ubsan")
      execute_process(COMMAND ${CMAKE_CXX_COMPILER} -print-file-name=libclang_rt.ubsan_standalone-x86_64.so
                      OUTPUT_VARIABLE _eca_rt_path OUTPUT_STRIP_TRAILING_WHITESPACE)
    endif()
  else()
    execute_process(COMMAND ${CMAKE_CXX_COMPILER} -print-file-name=lib${_eca_rt}.so
                    OUTPUT_VARIABLE _eca_rt_path OUTPUT_STRIP_TRAILING_WHITESPACE)
  endif()
  if(_eca_rt_path AND EXISTS ${_eca_rt_path})
    get_filename_component(ECA_SANITIZER_PRELOAD ${_eca_rt_path} REALPATH)
  endif()
  message(STATUS "eca-iwarp: sanitizers ${ECA_SANITIZE}; runtime ${ECA_SANITIZER_PRELOAD}")
  if(CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
    # Libraries instrumented by clang reference runtime symbols the linker cannot see here.
    set(ECA_NO_UNDEFINED "")
  endif()
endif()

if(CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
  # rdma-core's ibv_reg_mr() macro combines two enum types; clang warns at every call in C++20.
  add_compile_options($<$<COMPILE_LANGUAGE:CXX>:-Wno-deprecated-enum-enum-conversion>)
endif()

if(ECA_FUZZ)
  if(NOT CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
    message(FATAL_ERROR "ECA_FUZZ needs clang (e.g. CC=clang-14 CXX=clang++-14)")
  endif()
  add_compile_options(-fsanitize=fuzzer-no-link)
  set(ECA_NO_UNDEFINED "")
endif()
