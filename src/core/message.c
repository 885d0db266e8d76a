/* message.c - the library's own small printf for error messages and
 * tensor names, so that no build needs stdio (a build without an
 * operating system has none: docs/edge.md).  It knows what the library
 * writes: %d %i %u %x %s %c %p %g %%, the l and ll modifiers, a width
 * with 0 or - flags, and a precision for %s and %g.  Output is truncated
 * to the buffer and always NUL-terminated, as snprintf's. */
#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <string.h>

#include "internal.h"

typedef struct gl_out {
    char *buf;
    size_t cap, len;       /* len counts every character, written or not */
} gl_out;

static void put_char(gl_out *o, char c)
{
    if (o->len + 1 < o->cap) o->buf[o->len] = c;
    o->len++;
}

/* s (n characters) padded to width: spaces on the left, or on the right
 * (left), or zeros after any sign (zero). */
static void put_field(gl_out *o, const char *s, size_t n, int width, int left, int zero)
{
    size_t pad = width > 0 && (size_t)width > n ? (size_t)width - n : 0;
    if (zero && !left && n && (s[0] == '-')) { put_char(o, *s++); n--; }
    if (!left)
        for (; pad; pad--) put_char(o, zero ? '0' : ' ');
    for (size_t i = 0; i < n; i++) put_char(o, s[i]);
    for (; pad; pad--) put_char(o, ' ');
}

/* Digits of v in base (10 or 16) at the end of buf[32]; returns the start. */
static char *digits(char *end, unsigned long long v, unsigned base)
{
    char *p = end;
    do {
        *--p = "0123456789abcdef"[v % base];
        v /= base;
    } while (v);
    return p;
}

/* 10^k for k >= 0 (exact up to 10^22). */
static double pow10i(int k)
{
    double p = 1.0;
    while (k-- > 0) p *= 10.0;
    return p;
}

/* %g with `prec` significant digits (0 means 1), as C's printf: the
 * exponent form below 1e-4 and from 10^prec up, trailing zeros dropped,
 * halves to even.  No libm (a microcontroller's double pow / log10 are
 * large): one scaling by an exact power of ten, exact for what messages
 * print (up to about 15 digits). */
static size_t format_g(char *buf, double v, int prec)
{
    char *p = buf;
    if (v != v) {
        const char *nan = signbit(v) ? "-nan" : "nan";
        memcpy(buf, nan, strlen(nan) + 1);
        return strlen(nan);
    }
    if (signbit(v)) { *p++ = '-'; v = -v; }
    if (v > DBL_MAX) { memcpy(p, "inf", 4); return (size_t)(p - buf) + 3; }
    if (prec <= 0) prec = 1;
    if (prec > 15) prec = 15;
    if (v == 0.0) { *p++ = '0'; return (size_t)(p - buf); }

    int e = 0, off = 0;                           /* 10^e <= v < 10^(e+1) */
    double w = v;
    if (w < 1e-280) { w *= 1e300; off = -300; }   /* 10^-e would overflow */
    if (w >= 1.0)
        while (w >= pow10i(e + 1)) e++;
    else
        while (w * pow10i(-e) < 1.0) e--;
    e += off;
    /* m = v / 10^(e - prec + 1), rounded: an integer of prec digits. */
    int s = e - prec + 1;
    double x = v;
    if (s >= 0) {
        x = v / pow10i(s);
    } else {
        if (-s > 300) { x *= 1e300; s += 300; }
        x *= pow10i(-s);
    }
    unsigned long long m = (unsigned long long)x, top = (unsigned long long)pow10i(prec);
    const double frac = x - (double)m;
    if (frac > 0.5 || (frac == 0.5 && (m & 1))) m++;
    if (m >= top) { m /= 10; e++; }
    char d[32];
    char *end = d + sizeof d;
    char *ds = digits(end, (unsigned long long)m, 10);
    int nd = (int)(end - ds);
    while (nd > 1 && ds[nd - 1] == '0') nd--;          /* trailing zeros */

    if (e < -4 || e >= prec) {                         /* d.ddde+XX */
        *p++ = ds[0];
        if (nd > 1) { *p++ = '.'; memcpy(p, ds + 1, (size_t)nd - 1); p += nd - 1; }
        *p++ = 'e';
        *p++ = e < 0 ? '-' : '+';
        char eb[8];
        char *ee = digits(eb + sizeof eb, (unsigned long long)(e < 0 ? -e : e), 10);
        if (eb + sizeof eb - ee < 2) *p++ = '0';
        while (ee < eb + sizeof eb) *p++ = *ee++;
    } else if (e < 0) {                                /* 0.000ddd */
        *p++ = '0';
        *p++ = '.';
        for (int i = -1; i > e; i--) *p++ = '0';
        memcpy(p, ds, (size_t)nd);
        p += nd;
    } else {                                           /* ddd.ddd */
        for (int i = 0; i <= e; i++) *p++ = i < nd ? ds[i] : '0';
        if (nd > e + 1) {
            *p++ = '.';
            memcpy(p, ds + e + 1, (size_t)(nd - e - 1));
            p += nd - e - 1;
        }
    }
    return (size_t)(p - buf);
}

int gl_vformat(char *buf, size_t cap, const char *fmt, va_list ap)
{
    gl_out o = { buf, cap, 0 };
    for (const char *f = fmt; *f; f++) {
        if (*f != '%') { put_char(&o, *f); continue; }
        f++;
        int left = 0, zero = 0, width = 0, prec = -1, longs = 0;
        for (;; f++) {
            if (*f == '-') left = 1;
            else if (*f == '0') zero = 1;
            else break;
        }
        while (*f >= '0' && *f <= '9') width = 10 * width + (*f++ - '0');
        if (*f == '.') {
            prec = 0;
            for (f++; *f >= '0' && *f <= '9'; f++) prec = 10 * prec + (*f - '0');
        }
        while (*f == 'l') { longs++; f++; }
        if (*f == 'z') { longs = 3; f++; }
        char num[48];
        char *end = num + sizeof num;
        switch (*f) {
        case 'd': case 'i': {
            long long v = longs == 3 ? (long long)va_arg(ap, ptrdiff_t)
                          : longs == 2 ? va_arg(ap, long long)
                          : longs == 1 ? va_arg(ap, long) : va_arg(ap, int);
            const unsigned long long mag = v < 0 ? 0ull - (unsigned long long)v : (unsigned long long)v;
            char *s = digits(end, mag, 10);
            if (v < 0) *--s = '-';
            put_field(&o, s, (size_t)(end - s), width, left, zero);
            break;
        }
        case 'u': case 'x': {
            const unsigned long long v = longs == 3 ? (unsigned long long)va_arg(ap, size_t)
                                         : longs == 2 ? va_arg(ap, unsigned long long)
                                         : longs == 1 ? va_arg(ap, unsigned long)
                                         : va_arg(ap, unsigned);
            char *s = digits(end, v, *f == 'x' ? 16 : 10);
            put_field(&o, s, (size_t)(end - s), width, left, zero);
            break;
        }
        case 'p': {
            char *s = digits(end, (unsigned long long)(uintptr_t)va_arg(ap, void *), 16);
            *--s = 'x';
            *--s = '0';
            put_field(&o, s, (size_t)(end - s), width, left, 0);
            break;
        }
        case 'g': {
            const size_t n = format_g(num, va_arg(ap, double), prec < 0 ? 6 : prec);
            put_field(&o, num, n, width, left, zero);
            break;
        }
        case 's': {
            const char *s = va_arg(ap, const char *);
            if (!s) s = "(null)";
            size_t n = 0;
            while (s[n] && (prec < 0 || n < (size_t)prec)) n++;
            put_field(&o, s, n, width, left, 0);
            break;
        }
        case 'c': {
            const char c = (char)va_arg(ap, int);
            put_field(&o, &c, 1, width, left, 0);
            break;
        }
        case '%': put_char(&o, '%'); break;
        default:                       /* not a conversion the library writes */
            put_char(&o, '%');
            if (!*f) f--;
            else put_char(&o, *f);
            break;
        }
    }
    if (cap) buf[o.len < cap ? o.len : cap - 1] = '\0';
    return o.len > (size_t)INT32_MAX ? INT32_MAX : (int)o.len;
}

int gl_format(char *buf, size_t cap, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    const int n = gl_vformat(buf, cap, fmt, ap);
    va_end(ap);
    return n;
}

int gl_fail(char *msg, size_t msg_size, int code, const char *fmt, ...)
{
    if (msg && msg_size) {
        va_list ap;
        va_start(ap, fmt);
        gl_vformat(msg, msg_size, fmt, ap);
        va_end(ap);
    }
    return code;
}
