/* board_hosted.c - board.h on a desktop: stdout and exit(). */
#include <stdio.h>
#include <stdlib.h>

#include "board.h"

void board_write(const char *s)
{
    fputs(s, stdout);
    fflush(stdout);
}

void board_exit(int status)
{
    exit(status);
}
