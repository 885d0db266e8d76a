# Cross build for 64-bit ARM Linux, tests run under qemu user emulation:
#
#     apt-get install -y gcc-aarch64-linux-gnu qemu-user
#     cmake -S . -B build-arm -DCMAKE_TOOLCHAIN_FILE=tools/aarch64.cmake
#     cmake --build build-arm && ctest --test-dir build-arm
#
# AARCH64_SYSROOT (default /usr/aarch64-linux-gnu, Debian's cross libc) is
# where qemu finds the dynamic loader and libraries.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)

set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
if(NOT DEFINED AARCH64_SYSROOT)
  set(AARCH64_SYSROOT /usr/aarch64-linux-gnu)
endif()
# -cpu max: a CPU with the Armv8.2 dot products, so the neondot kernels run too.
set(CMAKE_CROSSCOMPILING_EMULATOR qemu-aarch64 -cpu max -L ${AARCH64_SYSROOT})

# Libraries and headers from the target's tree only; programs from the host.
set(CMAKE_FIND_ROOT_PATH ${AARCH64_SYSROOT})
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)
