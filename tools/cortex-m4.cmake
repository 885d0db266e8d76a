# Cross build for a Cortex-M4F microcontroller with no operating system
# (GRULITE_NO_OS: docs/edge.md), tests run on qemu's MPS2 AN386 board with
# semihosting for their output:
#
#     apt-get install -y gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm
#     cmake -S . -B build-m4 -DCMAKE_TOOLCHAIN_FILE=tools/cortex-m4.cmake
#     cmake --build build-m4 && ctest --test-dir build-m4
#
# The library is built at -Os (MinSizeRel) with its functions in sections
# of their own, so a program links only what it calls.  Programs start in
# examples/cortex-m4/startup.c, are laid out by mps2-an386.ld, and link
# newlib's libc (memcpy, memset) and libm (expf, tanhf) only: no heap, no
# stdio, no system calls.
set(CMAKE_SYSTEM_NAME Generic)
set(CMAKE_SYSTEM_PROCESSOR arm)

set(CMAKE_C_COMPILER arm-none-eabi-gcc)
# Bare-metal programs need a startup and a linker script: compiler checks
# build a static library instead of linking a program.
set(CMAKE_TRY_COMPILE_TARGET_TYPE STATIC_LIBRARY)

set(_m4 "-mcpu=cortex-m4 -mthumb -mfloat-abi=hard -mfpu=fpv4-sp-d16")
set(CMAKE_C_FLAGS_INIT "${_m4} -ffunction-sections -fdata-sections")
get_filename_component(_grulite_root "${CMAKE_CURRENT_LIST_DIR}/.." ABSOLUTE)
set(CMAKE_EXE_LINKER_FLAGS_INIT
    "${_m4} -nostartfiles --specs=nosys.specs -Wl,--gc-sections -T ${_grulite_root}/examples/cortex-m4/mps2-an386.ld")
set(CMAKE_C_STANDARD_LIBRARIES "-lm" CACHE STRING "libm for every program")

if(NOT CMAKE_BUILD_TYPE)
  set(CMAKE_BUILD_TYPE MinSizeRel CACHE STRING "Build type")
endif()
set(GRULITE_NO_OS ON CACHE BOOL "No operating system")
set(GRULITE_BOARD semihosting CACHE STRING "Board of the no-OS programs")

# The board: a Cortex-M4 with 4 MiB of code and 4 MiB of data memory;
# semihosting carries the programs' output and exit status to the host.
set(CMAKE_CROSSCOMPILING_EMULATOR qemu-system-arm -M mps2-an386 -display none -monitor none
    -serial none -semihosting-config enable=on,target=native -kernel)

set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)
