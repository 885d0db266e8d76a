# run_example.cmake - runs examples/grulite_run, then compares what it wrote
# with the expected output (npy_close).  For ctest; no Python.
#
#   -DEMULATOR="qemu-aarch64|-L|/sysroot" (list with | separators; may be empty)
#   -DRUN=path/to/grulite_run  -DARGS="model.grl|input.npy|..."  (| separated)
#   -DSTDIN=file (optional: standard input)  -DSTDOUT=file (optional: capture)
#   -DCOMPARE=path/to/npy_close  -DGOT=file  -DEXPECTED=file.npy  -DTOL=1e-5
cmake_minimum_required(VERSION 3.16)

string(REPLACE "|" ";" emulator "${EMULATOR}")
string(REPLACE "|" ";" args "${ARGS}")
set(io)
if(DEFINED STDIN AND NOT STDIN STREQUAL "")
  list(APPEND io INPUT_FILE "${STDIN}")
endif()
if(DEFINED STDOUT AND NOT STDOUT STREQUAL "")
  list(APPEND io OUTPUT_FILE "${STDOUT}")
endif()

file(REMOVE "${GOT}")
message("+ ${RUN} ${args}")
execute_process(COMMAND ${emulator} "${RUN}" ${args} ${io} RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "grulite_run failed (${rc})")
endif()
execute_process(COMMAND ${emulator} "${COMPARE}" "${GOT}" "${EXPECTED}" "${TOL}"
                RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "the output differs from ${EXPECTED}")
endif()
