/* startup.c - reset for a Cortex-M4F with no operating system: the vector
 * table, the FPU switched on, .data copied from flash and .bss zeroed, then
 * main() and board_exit() with its result.  The memory map is the linker
 * script's (mps2-an386.ld: qemu's MPS2 AN386 board). */
#include <stdint.h>
#include <string.h>

#include "board.h"

int main(void);

extern uint32_t _sidata[], _sdata[], _edata[], _sbss[], _ebss[], _estack[];

void Reset_Handler(void);
void Fault_Handler(void);

/* Initial stack pointer, reset, then NMI, HardFault, MemManage, BusFault,
 * UsageFault: every fault ends the program with a failure. */
__attribute__((section(".vectors"), used))
static void (*const vectors[])(void) = {
    (void (*)(void))(uintptr_t)_estack,
    Reset_Handler,
    Fault_Handler,
    Fault_Handler,
    Fault_Handler,
    Fault_Handler,
    Fault_Handler,
};

void Fault_Handler(void)
{
    board_write("fault: the program stopped\n");
    board_exit(1);
}

void Reset_Handler(void)
{
    /* CPACR: full access to coprocessors 10 and 11 (the FPU), before any
     * floating-point instruction runs. */
    volatile uint32_t *const cpacr = (volatile uint32_t *)0xE000ED88u;
    *cpacr |= 0xFu << 20;
    __asm__ volatile("dsb\n\tisb" ::: "memory");

    memcpy(_sdata, _sidata, (size_t)((char *)_edata - (char *)_sdata));
    memset(_sbss, 0, (size_t)((char *)_ebss - (char *)_sbss));
    board_exit(main());
}
