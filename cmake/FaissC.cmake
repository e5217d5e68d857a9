# FaissC.cmake - find FAISS and its C API, building the C API when missing.
#
# Debian's libfaiss-dev ships the C API headers but only the C++ library. When
# no compiled C API is found, Debian's own faiss source package is fetched
# (scripts/fetch-faiss-src.sh) and its c_api/ sources are compiled here into a
# static library linked against the installed libfaiss.a. Defines the target
# semcache_faiss and SEMCACHE_HAVE_FAISS when FAISS is usable.
set(SEMCACHE_HAVE_FAISS OFF)
if(SEMCACHE_FAISS STREQUAL "OFF")
  message(STATUS "FAISS: disabled (SEMCACHE_FAISS=OFF)")
  return()
endif()
if(NOT SEMCACHE_FAISS MATCHES "^(AUTO|ON)$")
  message(FATAL_ERROR "SEMCACHE_FAISS must be AUTO, ON or OFF, not '${SEMCACHE_FAISS}'")
endif()

set(FAISS_SRC_DIR ${CMAKE_SOURCE_DIR}/build/faiss-src CACHE PATH
    "Where Debian's faiss C API sources are kept (fetched when absent)")

function(faiss_missing why)
  if(SEMCACHE_FAISS STREQUAL "ON")
    message(FATAL_ERROR "FAISS: ${why} (SEMCACHE_FAISS=ON)")
  endif()
  message(WARNING "FAISS: ${why}; building without FAISS (benchmarks lose their FAISS columns)")
endfunction()

find_path(FAISS_INCLUDE_DIR faiss/c_api/faiss_c.h)
find_library(FAISS_LIB NAMES libfaiss.a faiss)
find_library(LAPACK_LIB lapack)
find_package(OpenMP COMPONENTS C)
if(NOT FAISS_INCLUDE_DIR OR NOT FAISS_LIB OR NOT LAPACK_LIB OR NOT OpenMP_C_FOUND)
  faiss_missing("libfaiss-dev, liblapack-dev or OpenMP not found")
  return()
endif()

find_library(FAISS_C_LIB NAMES faiss_c)
if(FAISS_C_LIB)
  message(STATUS "FAISS: using the installed C API ${FAISS_C_LIB}")
  add_library(semcache_faiss INTERFACE)
  target_link_libraries(semcache_faiss INTERFACE ${FAISS_C_LIB})
else()
  if(NOT EXISTS ${FAISS_SRC_DIR}/c_api/Index_c.cpp)
    message(STATUS "FAISS: no compiled C API; fetching Debian's faiss source")
    execute_process(
      COMMAND ${CMAKE_SOURCE_DIR}/scripts/fetch-faiss-src.sh ${FAISS_SRC_DIR}
      RESULT_VARIABLE fetch_rc)
    if(NOT fetch_rc EQUAL 0 OR NOT EXISTS ${FAISS_SRC_DIR}/c_api/Index_c.cpp)
      faiss_missing("could not fetch Debian's faiss source package")
      return()
    endif()
  endif()
  enable_language(CXX)
  set(c_api ${FAISS_SRC_DIR}/c_api)
  add_library(faiss_c STATIC
    ${c_api}/AutoTune_c.cpp ${c_api}/Clustering_c.cpp ${c_api}/IndexFlat_c.cpp
    ${c_api}/IndexIVFFlat_c.cpp ${c_api}/IndexIVF_c.cpp ${c_api}/IndexLSH_c.cpp
    ${c_api}/IndexPreTransform_c.cpp ${c_api}/VectorTransform_c.cpp
    ${c_api}/IndexShards_c.cpp ${c_api}/IndexReplicas_c.cpp ${c_api}/Index_c.cpp
    ${c_api}/IndexBinary_c.cpp ${c_api}/IndexScalarQuantizer_c.cpp
    ${c_api}/MetaIndexes_c.cpp ${c_api}/clone_index_c.cpp ${c_api}/error_impl.cpp
    ${c_api}/index_factory_c.cpp ${c_api}/index_io_c.cpp
    ${c_api}/impl/AuxIndexStructures_c.cpp ${c_api}/utils/distances_c.cpp)
  # Foreign code: its warnings are not ours to fix.
  target_compile_options(faiss_c PRIVATE -w -fopenmp)
  set_target_properties(faiss_c PROPERTIES POSITION_INDEPENDENT_CODE ON)
  message(STATUS "FAISS: building the C API from ${FAISS_SRC_DIR}")
  add_library(semcache_faiss INTERFACE)
  target_link_libraries(semcache_faiss INTERFACE faiss_c)
endif()
target_include_directories(semcache_faiss INTERFACE ${FAISS_INCLUDE_DIR})
target_link_libraries(semcache_faiss INTERFACE ${FAISS_LIB} OpenMP::OpenMP_C
                      ${OPENBLAS_LIB} ${LAPACK_LIB} stdc++ m)
target_compile_definitions(semcache_faiss INTERFACE SEMCACHE_HAVE_FAISS=1)
set(SEMCACHE_HAVE_FAISS ON)
