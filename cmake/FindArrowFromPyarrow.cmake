# FindArrowFromPyarrow: Apache Arrow C++ (libarrow, libparquet) as the pyarrow wheel ships them.
#
# Debian 12 packages no Arrow, so trainer/data reads csv / parquet / arrow files with the shared libraries and
# headers inside the pyarrow wheel that scripts/setup.sh installs into .venv (pinned in scripts/requirements.txt).
# ANNEAL_PYTHON is asked where they are (pyarrow.get_include(), get_library_dirs(), cpp_build_info.so_version).
# The wheel holds only the versioned files (libarrow.so.2600), not the libarrow.so link names, so the imported
# targets point at the versioned files themselves: nothing in .venv is modified (no create_library_symlinks()).
#
# Defines: ArrowFromPyarrow_FOUND, ArrowFromPyarrow_VERSION, ArrowFromPyarrow_LIBRARY_DIR and the imported
# targets Arrow::arrow and Arrow::parquet (SYSTEM includes). Executables that link them get the wheel's
# directory as their build RPATH (CMake adds it for imported shared libraries), so they run from the build tree
# without LD_LIBRARY_PATH.
#
# The wheel must use the C++11 std::string ABI (_GLIBCXX_USE_CXX11_ABI=1) like our code: checked through the
# dynamic symbols of libarrow (std::__cxx11::basic_string in its exported signatures).
include(FindPackageHandleStandardArgs)

if(NOT ANNEAL_PYTHON OR NOT EXISTS "${ANNEAL_PYTHON}")
  set(_arrow_error "ANNEAL_PYTHON (${ANNEAL_PYTHON}) does not exist: run scripts/setup.sh")
else()
  execute_process(
    COMMAND "${ANNEAL_PYTHON}" -c
            "import pyarrow as pa; print(pa.get_include()); print(pa.get_library_dirs()[0]); print(pa.cpp_build_info.so_version); print(pa.__version__)"
    OUTPUT_VARIABLE _arrow_out ERROR_VARIABLE _arrow_err RESULT_VARIABLE _arrow_rc OUTPUT_STRIP_TRAILING_WHITESPACE)
  if(NOT _arrow_rc EQUAL 0)
    set(_arrow_error "${ANNEAL_PYTHON} cannot import pyarrow (run scripts/setup.sh): ${_arrow_err}")
  endif()
endif()

if(NOT _arrow_error)
  string(REPLACE "\n" ";" _arrow_lines "${_arrow_out}")
  list(GET _arrow_lines 0 ArrowFromPyarrow_INCLUDE_DIR)
  list(GET _arrow_lines 1 ArrowFromPyarrow_LIBRARY_DIR)
  list(GET _arrow_lines 2 _arrow_so_version)
  list(GET _arrow_lines 3 ArrowFromPyarrow_VERSION)
  set(ArrowFromPyarrow_ARROW_LIBRARY "${ArrowFromPyarrow_LIBRARY_DIR}/libarrow.so.${_arrow_so_version}")
  set(ArrowFromPyarrow_PARQUET_LIBRARY "${ArrowFromPyarrow_LIBRARY_DIR}/libparquet.so.${_arrow_so_version}")
  foreach(_lib ${ArrowFromPyarrow_ARROW_LIBRARY} ${ArrowFromPyarrow_PARQUET_LIBRARY})
    if(NOT EXISTS "${_lib}")
      set(_arrow_error "pyarrow ${ArrowFromPyarrow_VERSION} has no ${_lib}")
    endif()
  endforeach()
endif()

if(NOT _arrow_error AND NOT ArrowFromPyarrow_ABI_CHECKED STREQUAL "${ArrowFromPyarrow_ARROW_LIBRARY}")
  find_program(_arrow_nm NAMES nm REQUIRED)
  execute_process(COMMAND "${_arrow_nm}" -D --defined-only "${ArrowFromPyarrow_ARROW_LIBRARY}"
                  COMMAND grep -c "__cxx11"
                  OUTPUT_VARIABLE _arrow_cxx11 OUTPUT_STRIP_TRAILING_WHITESPACE)
  if(NOT _arrow_cxx11 OR _arrow_cxx11 EQUAL 0)
    set(_arrow_error "${ArrowFromPyarrow_ARROW_LIBRARY} uses the pre-C++11 std::string ABI (_GLIBCXX_USE_CXX11_ABI=0); Anneal builds with the C++11 ABI")
  else()
    set(ArrowFromPyarrow_ABI_CHECKED "${ArrowFromPyarrow_ARROW_LIBRARY}" CACHE INTERNAL "")
  endif()
endif()

if(_arrow_error)
  set(ArrowFromPyarrow_FOUND FALSE)
  if(ArrowFromPyarrow_FIND_REQUIRED)
    message(FATAL_ERROR "ArrowFromPyarrow: ${_arrow_error}")
  endif()
  message(STATUS "ArrowFromPyarrow: ${_arrow_error}")
  return()
endif()

find_package_handle_standard_args(ArrowFromPyarrow
  REQUIRED_VARS ArrowFromPyarrow_ARROW_LIBRARY ArrowFromPyarrow_PARQUET_LIBRARY ArrowFromPyarrow_INCLUDE_DIR
  VERSION_VAR ArrowFromPyarrow_VERSION)

if(NOT TARGET Arrow::arrow)
  add_library(Arrow::arrow SHARED IMPORTED)
  set_target_properties(Arrow::arrow PROPERTIES
    IMPORTED_LOCATION "${ArrowFromPyarrow_ARROW_LIBRARY}"
    IMPORTED_SONAME "libarrow.so.${_arrow_so_version}"
    INTERFACE_INCLUDE_DIRECTORIES "${ArrowFromPyarrow_INCLUDE_DIR}"
    INTERFACE_SYSTEM_INCLUDE_DIRECTORIES "${ArrowFromPyarrow_INCLUDE_DIR}")
  add_library(Arrow::parquet SHARED IMPORTED)
  set_target_properties(Arrow::parquet PROPERTIES
    IMPORTED_LOCATION "${ArrowFromPyarrow_PARQUET_LIBRARY}"
    IMPORTED_SONAME "libparquet.so.${_arrow_so_version}"
    INTERFACE_LINK_LIBRARIES Arrow::arrow)
endif()
