/* board_int.c - decimal digits without printf (board.h). */
#include "board.h"

char *board_int(char *buf, long v)
{
    char tmp[24];
    int n = 0;
    unsigned long u = v < 0 ? 0ul - (unsigned long)v : (unsigned long)v;
    do {
        tmp[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0) *buf++ = '-';
    while (n) *buf++ = tmp[--n];
    *buf = '\0';
    return buf;
}
