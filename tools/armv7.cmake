# Cross build for 32-bit ARM Linux (armv7-a, hard float, NEON with
# VFPv4), tests run under qemu user emulation:
#
#     apt-get install -y gcc-arm-linux-gnueabihf qemu-user
#     cmake -S . -B build-armv7 -DCMAKE_TOOLCHAIN_FILE=tools/armv7.cmake
#     cmake --build build-armv7 && ctest --test-dir build-armv7
#
# ARMV7_SYSROOT (default /usr/arm-linux-gnueabihf, Debian's cross libc) is
# where qemu finds the dynamic loader and libraries.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR armv7l)

set(CMAKE_C_COMPILER arm-linux-gnueabihf-gcc)
# NEON with VFPv4 (its fused multiply-add) and IEEE halves, which the NEON
# kernels need (src/core/kernels/kernels.h): Cortex-A7 / A15 and later, e.g.
# the Raspberry Pi 2 and up running a 32-bit system.
set(CMAKE_C_FLAGS_INIT "-march=armv7-a -mfpu=neon-vfpv4 -mfloat-abi=hard -mfp16-format=ieee")
if(NOT DEFINED ARMV7_SYSROOT)
  set(ARMV7_SYSROOT /usr/arm-linux-gnueabihf)
endif()
set(CMAKE_CROSSCOMPILING_EMULATOR qemu-arm -L ${ARMV7_SYSROOT})

# Libraries and headers from the target's tree only; programs from the host.
set(CMAKE_FIND_ROOT_PATH ${ARMV7_SYSROOT})
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)
