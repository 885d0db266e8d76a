# compare_steps.cmake - runs examples/cortex-m4 (on its board: the build
# machine, or a Cortex-M4 under qemu with semihosting), then compares the
# lines "step T: v1 v2 ..." it prints (millionths) with the host's
# (examples/cortex-m4/expected.txt, tools/make_edge_fixtures.py), each value
# within TOL millionths.  CMake's arithmetic is integer only: hence the
# integers.  For ctest; no Python.
#
#   -DEMULATOR="qemu-system-arm|-M|mps2-an386|...|-kernel" (| separated; may be empty)
#   -DRUN=path/to/program  -DEXPECTED=expected.txt  -DTOL=20
cmake_minimum_required(VERSION 3.16)

string(REPLACE "|" ";" emulator "${EMULATOR}")
message("+ ${emulator} ${RUN}")
execute_process(COMMAND ${emulator} "${RUN}" OUTPUT_VARIABLE out ERROR_VARIABLE out RESULT_VARIABLE rc
                TIMEOUT 120)
message("${out}")
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "the example failed (${rc})")
endif()

file(STRINGS "${EXPECTED}" want REGEX "^step [0-9]+:")
string(REGEX MATCHALL "step [0-9]+:[-0-9 ]*" got "${out}")
list(LENGTH want n_want)
list(LENGTH got n_got)
if(NOT n_want EQUAL n_got OR n_want EQUAL 0)
  message(FATAL_ERROR "${n_got} step lines printed; expected ${n_want}")
endif()
set(worst 0)
math(EXPR last "${n_want} - 1")
foreach(i RANGE ${last})
  list(GET want ${i} w)
  list(GET got ${i} g)
  string(REGEX REPLACE "^step [0-9]+: *" "" w "${w}")
  string(REGEX REPLACE "^step [0-9]+: *" "" g "${g}")
  string(STRIP "${g}" g)
  string(REPLACE " " ";" w "${w}")
  string(REPLACE " " ";" g "${g}")
  list(LENGTH w nw)
  list(LENGTH g ng)
  if(NOT nw EQUAL ng)
    message(FATAL_ERROR "step ${i}: ${ng} values printed; expected ${nw}")
  endif()
  math(EXPR lastv "${nw} - 1")
  foreach(j RANGE ${lastv})
    list(GET w ${j} a)
    list(GET g ${j} b)
    math(EXPR d "${a} - ${b}")
    if(d LESS 0)
      math(EXPR d "0 - ${d}")
    endif()
    if(d GREATER worst)
      set(worst ${d})
    endif()
  endforeach()
endforeach()
message("max |difference| from the host's outputs: ${worst} millionths (tolerance ${TOL})")
if(worst GREATER TOL)
  message(FATAL_ERROR "the example's outputs differ from the host's")
endif()
