/* board_semihosting.c - board.h over Arm semihosting: the program traps
 * with BKPT 0xAB and the debugger (or qemu -semihosting) does the work on
 * the host.  Cortex-M (Thumb); no C library needed. */
#include <stdint.h>

#include "board.h"

#define SYS_WRITE0 0x04                 /* r1: a NUL-terminated string */
#define SYS_EXIT 0x18                   /* r1: a reason code */
#define ADP_STOPPED_APPLICATION_EXIT 0x20026
#define ADP_STOPPED_RUNTIME_ERROR 0x20023

static int semihost(int op, const void *arg)
{
    register int r0 __asm__("r0") = op;
    register const void *r1 __asm__("r1") = arg;
    __asm__ volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

void board_write(const char *s)
{
    semihost(SYS_WRITE0, s);
}

void board_exit(int status)
{
    /* 32-bit semihosting's SYS_EXIT takes the reason itself: success, or a
     * run-time error (qemu then exits with status 1). */
    semihost(SYS_EXIT, (const void *)(uintptr_t)(status == 0 ? ADP_STOPPED_APPLICATION_EXIT
                                                               : ADP_STOPPED_RUNTIME_ERROR));
    for (;;) {
    }
}
