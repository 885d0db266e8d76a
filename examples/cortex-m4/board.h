/* board.h - what a program with no operating system needs from its board:
 * a way to print and a way to stop.  board_semihosting.c does both through
 * Arm semihosting (a debugger, or qemu -semihosting, carries them to the
 * host); board_hosted.c through stdio, for running the same program on a
 * desktop.  startup.c (Cortex-M) calls main() and board_exit(its result). */
#ifndef GRULITE_BOARD_H
#define GRULITE_BOARD_H

/* Writes a NUL-terminated string. */
void board_write(const char *s);

/* Ends the program: status 0 is success. */
void board_exit(int status);

/* Appends the decimal digits of v to buf (at least 12 bytes free); returns
 * the end of what was written (NUL-terminated).  No printf needed. */
char *board_int(char *buf, long v);

#endif
