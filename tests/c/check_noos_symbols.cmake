# check_noos_symbols.cmake - a GRULITE_NO_OS library must ask nothing of an
# operating system: none of its undefined symbols may be an allocator,
# stdio, threads, files, the environment or process control.  What it may
# use: memcpy / memset / memcmp / strcmp / strlen and libm.
#
#   cmake -DNM=nm -DLIB=libgrulite.a -P check_noos_symbols.cmake
cmake_minimum_required(VERSION 3.16)

execute_process(COMMAND "${NM}" "${LIB}" OUTPUT_VARIABLE syms RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "${NM} ${LIB} failed")
endif()
string(REGEX MATCHALL "[ \t]U [A-Za-z_][A-Za-z0-9_.]*" undefined "${syms}")
set(names)
foreach(u IN LISTS undefined)
  string(REGEX REPLACE "^[ \t]U " "" u "${u}")
  list(APPEND names ${u})
endforeach()
list(REMOVE_DUPLICATES names)
list(SORT names)
message("undefined symbols: ${names}")
set(bad)
foreach(n IN LISTS names)
  if(n MATCHES "^_*(malloc|calloc|realloc|free|posix_memalign|aligned_alloc|memalign|sbrk|_sbrk|f?open|f?close|f?read|f?write|fseek|ftell|fflush|mmap|munmap|fstat|stat|v?s?n?printf|v?fprintf|puts|fputs|putchar|pthread_.*|getenv|secure_getenv|sysconf|getauxval|clock_gettime|time|exit|_exit|abort|qsort|strtol|strtod)$")
    list(APPEND bad ${n})
  endif()
endforeach()
if(bad)
  message(FATAL_ERROR "the no-OS library needs an operating system's ${bad}")
endif()
