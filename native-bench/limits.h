// What limits.c and limits-sockets.c share: the units, the helpers every phase
// uses to time itself and to fail, and the socket phases main() runs.
#ifndef TICKER_LIMITS_H
#define TICKER_LIMITS_H

#include <stddef.h>

#define KiB ((size_t)1024)
#define MiB (1024 * KiB)
#define GiB (1024 * MiB)

// Both print what failed to stderr, remove the scratch files and exit 1.
_Noreturn void die(const char *phase, const char *what);
_Noreturn void die_msg(const char *phase, const char *msg);
double now_s(void);
void *alloc_or_die(const char *phase, size_t bytes);
void fill_pattern(unsigned char *buf, size_t bytes);

// limits-sockets.c
double measure_tcp_gbit_s(void);

struct socket_writes {
  double per_s; // small writes completed per second by one sender thread
  double us;    // and what each took it
};
struct socket_writes measure_socket_writes(void);

#endif
