# check_exports.cmake - the libraries define and export only grulite_ names.
#
#     cmake -DNM=nm -DHEADER=include/grulite.h -DSHARED=libgrulite.so \
#           [-DSTATIC=libgrulite.a] -P tests/c/check_exports.cmake
#
# Shared library (ELF): the defined dynamic symbols are exactly the
# GRULITE_API functions of the header (nothing else leaks, nothing is
# missing).  Static library: every global symbol is grulite_* (public) or
# gl_* (internal, hidden in the shared library), so linking it never clashes
# with a program's own names.  Prints "N passed, M failed".
cmake_minimum_required(VERSION 3.16)

foreach(var NM HEADER SHARED)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "check_exports.cmake: -D${var}=... is required")
  endif()
endforeach()

set(passed 0)
set(failed 0)
# check(ok what): ok is a value TRUE / FALSE.
macro(check ok what)
  if(${ok})
    math(EXPR passed "${passed} + 1")
  else()
    math(EXPR failed "${failed} + 1")
    message("FAIL ${what}")
  endif()
endmacro()

# Defined global symbols of a library, from nm's "address type name" lines.
function(defined_symbols out)
  execute_process(COMMAND ${NM} ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE text
                  ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "${NM} ${ARGN} failed (${rc}): ${err}")
  endif()
  string(REPLACE "\n" ";" lines "${text}")
  set(names)
  foreach(line IN LISTS lines)
    # "0000000000001234 T grulite_forward" (ELF may add @@VERSION)
    if(line MATCHES "^[0-9a-fA-F]* *([A-Za-z]) ([^ @]+)")
      set(type "${CMAKE_MATCH_1}")
      set(name "${CMAKE_MATCH_2}")
      if(NOT type MATCHES "^[UwvN]$")   # undefined, weak undefined, debug
        list(APPEND names "${name}")
      endif()
    endif()
  endforeach()
  list(REMOVE_DUPLICATES names)
  list(SORT names)
  set(${out} "${names}" PARENT_SCOPE)
endfunction()

# The API: every GRULITE_API declaration of the header.
file(READ "${HEADER}" header)
string(REGEX MATCHALL "GRULITE_API[^;(]*[ *](grulite_[a-z0-9_]+)[ ]*\\(" decls "${header}")
set(api)
foreach(d IN LISTS decls)
  string(REGEX REPLACE ".*[ *](grulite_[a-z0-9_]+)[ ]*\\($" "\\1" name "${d}")
  list(APPEND api "${name}")
endforeach()
list(REMOVE_DUPLICATES api)
list(SORT api)
list(LENGTH api n_api)
set(ok FALSE)
if(n_api GREATER 20)
  set(ok TRUE)
endif()
check(${ok} "the header declares ${n_api} GRULITE_API functions; expected more than 20")

# Symbols the linker itself defines in every ELF shared object.
set(linker_symbols _init _fini _edata _end __bss_start __bss_start__ __bss_end__ _bss_end__
    __end__ __data_start _DYNAMIC _GLOBAL_OFFSET_TABLE_)

defined_symbols(dynamic -D --defined-only "${SHARED}")
set(exported)
foreach(sym IN LISTS dynamic)
  list(FIND linker_symbols "${sym}" i)
  if(i EQUAL -1)
    list(APPEND exported "${sym}")
  endif()
endforeach()
list(LENGTH exported n_exported)
foreach(sym IN LISTS exported)
  set(ok FALSE)
  list(FIND api "${sym}" i)
  if(sym MATCHES "^grulite_" AND NOT i EQUAL -1)
    set(ok TRUE)
  endif()
  check(${ok} "shared library exports ${sym}, not a GRULITE_API function of the header")
endforeach()
foreach(sym IN LISTS api)
  set(ok TRUE)
  list(FIND exported "${sym}" i)
  if(i EQUAL -1)
    set(ok FALSE)
  endif()
  check(${ok} "${sym} is declared in the header but not exported")
endforeach()
message("shared library: ${n_exported} exported symbols, ${n_api} API functions in the header")

if(DEFINED STATIC AND NOT STATIC STREQUAL "")
  defined_symbols(globals -g --defined-only "${STATIC}")
  list(LENGTH globals n_globals)
  foreach(sym IN LISTS globals)
    set(ok FALSE)
    if(sym MATCHES "^(grulite|gl)_")
      set(ok TRUE)
    endif()
    check(${ok} "static library defines ${sym}, neither grulite_ nor gl_")
  endforeach()
  message("static library: ${n_globals} global symbols, all grulite_* or gl_*")
endif()

message("${passed} passed, ${failed} failed")
if(failed GREATER 0)
  message(FATAL_ERROR "export check failed")
endif()
