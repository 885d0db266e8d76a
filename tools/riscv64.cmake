# Cross build for 64-bit RISC-V Linux (the generic kernels), tests run under
# qemu user emulation:
#
#     apt-get install -y gcc-riscv64-linux-gnu qemu-user
#     cmake -S . -B build-riscv64 -DCMAKE_TOOLCHAIN_FILE=tools/riscv64.cmake
#     cmake --build build-riscv64 && ctest --test-dir build-riscv64
#
# RISCV64_SYSROOT (default /usr/riscv64-linux-gnu, Debian's cross libc) is
# where qemu finds the dynamic loader and libraries.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR riscv64)

set(CMAKE_C_COMPILER riscv64-linux-gnu-gcc)
if(NOT DEFINED RISCV64_SYSROOT)
  set(RISCV64_SYSROOT /usr/riscv64-linux-gnu)
endif()
set(CMAKE_CROSSCOMPILING_EMULATOR qemu-riscv64 -L ${RISCV64_SYSROOT})

# Libraries and headers from the target's tree only; programs from the host.
set(CMAKE_FIND_ROOT_PATH ${RISCV64_SYSROOT})
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)
