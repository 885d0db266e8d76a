/*
 * message_check.c - the library's own printf (src/core/message.c, which
 * every message and tensor name goes through, so that no build needs
 * stdio) against the C library's snprintf, conversion by conversion, and
 * its truncation.  Built with message.c itself (its functions are not
 * exported); prints "N passed, M failed".
 */
#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"

static int passed, failed;

/* Formats with both and compares text and returned length. */
#define SAME(fmt, ...) same(__LINE__, fmt, __VA_ARGS__)

static void same(int line, const char *fmt, ...)
{
    char want[256], got[256];
    va_list ap, ap2;
    va_start(ap, fmt);
    va_copy(ap2, ap);
    const int nw = vsnprintf(want, sizeof want, fmt, ap);
    const int ng = gl_vformat(got, sizeof got, fmt, ap2);
    va_end(ap2);
    va_end(ap);
    if (nw == ng && strcmp(want, got) == 0) {
        passed++;
    } else {
        failed++;
        printf("FAIL line %d: \"%s\": snprintf \"%s\" (%d), gl_vformat \"%s\" (%d)\n", line, fmt,
               want, nw, got, ng);
    }
}

int main(void)
{
    SAME("plain text, no conversions%s", "");
    SAME("%d %d %d %d", 0, -1, 2147483647, -2147483647 - 1);
    SAME("%ld %ld", 1234567890L, -987654321L);
    SAME("%lu %lu", 0UL, 4294967295UL);
    SAME("%llu %llu", 18446744073709551615ULL, 12345ULL);
    SAME("%lld", -9223372036854775807LL - 1);
    SAME("%x %lx %08lx %08lx", 255u, 0xdeadbeefUL, 0x1234UL, 0xcbf43926UL);
    SAME("%5d|%-5d|%05d|%05d", 42, 42, 42, -42);
    SAME("%s|%.3s|%.32s|%8s|%-8s|", "layer", "abcdef", "avx2", "ab", "ab");
    SAME("%c%c %%", 'o', 'k');
    SAME("%zu", (size_t)123456);
    static const double values[] = {
        0.0, 1.0, -1.0, 0.5, 0.1, 1.5, 2.0, 100.0, 123456.0, 1234567.0, 1e6, 999999.0,
        9999995.0, 0.0001, 0.00012345, 0.00001, 1e-10, 3.14159265358979, -2.5e-7, 1e21,
        1.0 / 3.0, 2.0 / 3.0, 0.2, 6.02214076e23, 1.0e-300, DBL_MAX, DBL_MIN, 65504.0,
        0.1666666666666666, 1e-5, 12.5, 0.02,
    };
    for (size_t i = 0; i < sizeof values / sizeof values[0]; i++) {
        SAME("%g", values[i]);
        SAME("%g", -values[i]);
        SAME("alpha %g / beta %g", values[i], 0.5 * values[i]);
    }
    SAME("%g %g %g", (double)INFINITY, (double)-INFINITY, (double)NAN);
    SAME("%.3g %.1g %.0g %.10g", 3.14159, 0.25, 7.0, 1.0 / 7.0);

    /* Truncation: NUL-terminated within the buffer, the whole length returned. */
    char small[8];
    memset(small, 'X', sizeof small);
    const int n = gl_format(small, sizeof small, "tensor %s", "l0.d0.w_ih");
    if (n == 17 && strcmp(small, "tensor ") == 0) passed++;
    else { failed++; printf("FAIL truncation: \"%s\" (%d)\n", small, n); }
    char one[1] = { 'X' };
    if (gl_format(one, 1, "%d", 12) == 2 && one[0] == '\0') passed++;
    else { failed++; printf("FAIL one-byte buffer\n"); }
    if (gl_format(NULL, 0, "%s", "abc") == 3) passed++;
    else { failed++; printf("FAIL NULL buffer\n"); }

    /* gl_fail: the message, and the code returned. */
    char msg[64];
    if (gl_fail(msg, sizeof msg, GRULITE_E_CONFIG, "layer %d: clip %g", 2, -1.0) == GRULITE_E_CONFIG &&
        strcmp(msg, "layer 2: clip -1") == 0)
        passed++;
    else { failed++; printf("FAIL gl_fail: \"%s\"\n", msg); }
    if (gl_fail(NULL, 0, GRULITE_E_ARG, "ignored %d", 1) == GRULITE_E_ARG) passed++;
    else { failed++; printf("FAIL gl_fail without a buffer\n"); }

    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
