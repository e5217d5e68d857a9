# NngPatched.cmake - the nng semcached links: Debian's nng 1.5.2 source with
# scripts/patches/ applied (in 1.5.2 a peer that disconnects during the
# handshake can stop a listener for good, nng_close can hang for ever
# when a pipe closes mid-transfer, a TLS connection whose peer left or
# stalled is never closed, the HTTP server has no time-out, no cap on
# connections, spins when out of descriptors and its stop cuts answers
# not yet written, connections in their
# SP handshake are held with no limit on how many, and a REP socket keeps
# up to 64 replies of any size for a client that does not read them, with
# no time limit, and drops those past 64 of one that pipelines more, and
# says nothing of a reply it frees unwritten), built as a static library with TLS as
# Debian builds it, in a CMake run of its own (ExternalProject: none of our
# warning or sanitizer flags reach it). Defines the imported target
# semcache_nng. SEMCACHE_NNG_PATCHED=OFF (or a failed fetch under AUTO)
# links the system's libnng instead, with the bugs.
set(SEMCACHE_NNG_PATCHED AUTO CACHE STRING
    "Link nng built from Debian's source with scripts/patches: AUTO, ON or OFF")
set_property(CACHE SEMCACHE_NNG_PATCHED PROPERTY STRINGS AUTO ON OFF)
set(NNG_SRC_DIR ${CMAKE_SOURCE_DIR}/build/nng-src CACHE PATH
    "Where Debian's nng source, patched, is kept (fetched when absent)")

function(nng_system why)
  if(SEMCACHE_NNG_PATCHED STREQUAL "ON")
    message(FATAL_ERROR "nng: ${why} (SEMCACHE_NNG_PATCHED=ON)")
  endif()
  if(why)
    message(WARNING "nng: ${why}; linking the system's libnng 1.5.2, whose "
                    "listeners a disconnect during the handshake can stop, "
                    "whose close can hang, whose TLS connections can "
                    "outlive their peers and whose HTTP server has no read "
                    "time-out, no cap on connections, spins when out "
                    "of descriptors and cuts unwritten answers as it "
                    "stops, and which holds replies a client "
                    "does not read without a cap or time limit")
  endif()
  find_library(NNG_SYSTEM_LIB nng REQUIRED)
  add_library(semcache_nng INTERFACE)
  target_link_libraries(semcache_nng INTERFACE ${NNG_SYSTEM_LIB})
endfunction()

if(NOT SEMCACHE_NNG_PATCHED MATCHES "^(AUTO|ON|OFF)$")
  message(FATAL_ERROR "SEMCACHE_NNG_PATCHED must be AUTO, ON or OFF")
endif()
if(SEMCACHE_NNG_PATCHED STREQUAL "OFF")
  nng_system("")
  return()
endif()
# The script does nothing when NNG_SRC_DIR already holds the sources with
# today's patches, and fetches afresh when one was added or changed; a
# change to scripts/patches re-runs this configure step.
file(GLOB nng_patches CONFIGURE_DEPENDS
     ${CMAKE_SOURCE_DIR}/scripts/patches/nng-*.patch)
set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${nng_patches})
# How many, for semcached's start line (SC_NNG_NPATCHES).
list(LENGTH nng_patches nng_npatches)
execute_process(
  COMMAND ${CMAKE_SOURCE_DIR}/scripts/fetch-nng-src.sh ${NNG_SRC_DIR}
  RESULT_VARIABLE fetch_rc)
if(NOT fetch_rc EQUAL 0 OR NOT EXISTS ${NNG_SRC_DIR}/.semcache-patched)
  nng_system("could not fetch and patch Debian's nng source")
  return()
endif()
find_library(MBEDTLS_LIB mbedtls)
find_library(MBEDX509_LIB mbedx509)
find_library(MBEDCRYPTO_LIB mbedcrypto)
if(NOT MBEDTLS_LIB OR NOT MBEDX509_LIB OR NOT MBEDCRYPTO_LIB)
  nng_system("libmbedtls-dev not found (nng's TLS)")
  return()
endif()

include(ExternalProject)
# SEMCACHE_TSAN: nng's threads and locks are instrumented like ours, or
# ThreadSanitizer cannot see the ordering its mutexes give our callbacks.
# NNG_RACE_DETECTOR is nng's own switch that takes a lock where it relies
# on owning an aio alone; its aio.c sets it for clang's TSan, not gcc's.
set(nng_c_flags -w)
if(SEMCACHE_TSAN)
  set(nng_c_flags
      "-w -g -fsanitize=thread -fno-omit-frame-pointer -DNNG_RACE_DETECTOR")
endif()
set(nng_prefix ${CMAKE_BINARY_DIR}/nng)
set(nng_lib ${nng_prefix}/lib/${CMAKE_STATIC_LIBRARY_PREFIX}nng${CMAKE_STATIC_LIBRARY_SUFFIX})
ExternalProject_Add(nng_patched
  SOURCE_DIR ${NNG_SRC_DIR}
  BINARY_DIR ${CMAKE_BINARY_DIR}/nng-build
  INSTALL_DIR ${nng_prefix}
  CMAKE_ARGS -DCMAKE_BUILD_TYPE=Release
             -DCMAKE_C_COMPILER=${CMAKE_C_COMPILER}
             -DCMAKE_C_FLAGS=${nng_c_flags}
             -DCMAKE_INSTALL_PREFIX=<INSTALL_DIR>
             -DCMAKE_INSTALL_LIBDIR=lib
             -DCMAKE_POSITION_INDEPENDENT_CODE=ON
             -DBUILD_SHARED_LIBS=OFF -DNNG_ENABLE_TLS=ON
             -DNNG_TESTS=OFF -DNNG_TOOLS=OFF -DNNG_ENABLE_NNGCAT=OFF
  BUILD_BYPRODUCTS ${nng_lib})
# Sources fetched afresh (new patches) build afresh.
ExternalProject_Add_StepDependencies(nng_patched configure
  ${NNG_SRC_DIR}/.semcache-patched)
file(MAKE_DIRECTORY ${nng_prefix}/include)
add_library(semcache_nng STATIC IMPORTED GLOBAL)
set_target_properties(semcache_nng PROPERTIES
  IMPORTED_LOCATION ${nng_lib}
  INTERFACE_INCLUDE_DIRECTORIES ${nng_prefix}/include
  INTERFACE_LINK_LIBRARIES
    "${MBEDTLS_LIB};${MBEDX509_LIB};${MBEDCRYPTO_LIB};Threads::Threads"
  # Code built against this nng may call what only the patches add
  # (nng_http_server_set_read_timeout) and tests may expect their fixes.
  INTERFACE_COMPILE_DEFINITIONS "SC_NNG_PATCHED=1;SC_NNG_NPATCHES=${nng_npatches}")
add_dependencies(semcache_nng nng_patched)
message(STATUS "nng: Debian's nng source with scripts/patches, static (${nng_lib})")
