// Machine limits: what this machine allows at best, measured without Node,
// so that a benchmark report can set Ticker's figures against the hardware's
// (a publish path at 40% of loopback TCP or at 90% of fdatasync/s reads very
// differently). Prints one JSON object on stdout, shaped like MachineLimits in
// loadtest/lib/results.ts; one line per phase on stderr says how it went. The
// memory and disk phases are here, the socket phases in limits-sockets.c.
//
//   cc -O2 -std=c11 -pthread -o limits native-bench/limits.c native-bench/limits-sockets.c
//   ./limits [dir]     # dir: where the disk phases write (default "."),
//                      # so it must be on the file system being judged
//
// Usually run through `npm run bench:limits` (loadtest/workloads/limits.ts). Every phase
// is bounded in time and the whole program in well under 10 s on our machines;
// a watchdog ends it after WATCHDOG_S whatever happens. Any failed call prints
// what failed to stderr, removes the scratch files and exits 1.
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "limits.h"

// memcpy: 64 MiB is far beyond any cache here (L3 is a few tens of MiB at
// most), so this is DRAM bandwidth, the ceiling for any copy of event data.
#define MEMCPY_BUFFER_BYTES (64 * MiB)
#define MEMCPY_PASSES 5
#define MEMCPY_PASS_S 0.1

// Sequential write: 256 MiB in 1 MiB writes, like a segment being filled.
#define SEQ_WRITE_TOTAL_BYTES (256 * MiB)
#define SEQ_WRITE_CHUNK_BYTES (1 * MiB)
#define SEQ_WRITE_MAX_S 3.0

// Append + fdatasync: the cost of one durable append to a log.
#define SYNC_APPEND_BYTES (4 * KiB)
#define SYNC_APPENDS_MAX 5000
#define SYNC_DURATION_S 2.0

// Phases above are bounded, but a single fdatasync or a stuck device cannot be;
// past this the numbers are worthless anyway.
#define WATCHDOG_S 20

// Scratch files, removed on exit, on failure and by the watchdog.
static char seq_path[PATH_MAX];
static char sync_path[PATH_MAX];

static void remove_scratch(void) {
  // unlink() is async-signal-safe, so the watchdog may call this too.
  if (seq_path[0] != '\0') unlink(seq_path);
  if (sync_path[0] != '\0') unlink(sync_path);
}

_Noreturn void die(const char *phase, const char *what) {
  int err = errno;
  fprintf(stderr, "limits: %s: %s failed: %s\n", phase, what, strerror(err));
  remove_scratch();
  exit(1);
}

_Noreturn void die_msg(const char *phase, const char *msg) {
  fprintf(stderr, "limits: %s: %s\n", phase, msg);
  remove_scratch();
  exit(1);
}

static void on_watchdog(int sig) {
  (void)sig;
  static const char msg[] = "limits: watchdog: the run exceeded its time limit (a phase is stuck: disk or loopback?)\n";
  ssize_t ignored = write(STDERR_FILENO, msg, sizeof msg - 1);
  (void)ignored;
  remove_scratch();
  _exit(1);
}

double now_s(void) {
  struct timespec ts;
  // MONOTONIC: wall-clock steps (NTP) must not shorten or stretch a phase.
  if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0) die("clock", "clock_gettime(CLOCK_MONOTONIC)");
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void *alloc_or_die(const char *phase, size_t bytes) {
  void *p = NULL;
  // Page-aligned, so a copy or a write never straddles a page it need not.
  int rc = posix_memalign(&p, 4096, bytes);
  if (rc != 0) {
    errno = rc;
    die(phase, "posix_memalign");
  }
  return p;
}

// Non-zero, non-repeating-per-page bytes: nothing on the way (a compressing or
// deduplicating virtual disk, zero-page tricks) gets an easier job than real data.
void fill_pattern(unsigned char *buf, size_t bytes) {
  uint32_t x = 0x9e3779b9u;
  for (size_t i = 0; i < bytes; i++) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    buf[i] = (unsigned char)x;
  }
}

static void write_all(const char *phase, int fd, const unsigned char *buf, size_t bytes) {
  while (bytes > 0) {
    ssize_t n = write(fd, buf, bytes);
    if (n < 0) {
      if (errno == EINTR) continue;
      die(phase, "write");
    }
    if (n == 0) die_msg(phase, "write returned 0 bytes");
    buf += n;
    bytes -= (size_t)n;
  }
}

// Both scratch files are created before any phase runs, so a directory we
// cannot write to fails at once rather than after the CPU phases.
static int open_scratch(char *path, const char *dir, const char *name, int extra_flags) {
  int n = snprintf(path, PATH_MAX, "%s/limits-%s-%ld.tmp", dir, name, (long)getpid());
  if (n < 0 || n >= PATH_MAX) die_msg("setup", "scratch directory path is too long");
  // O_EXCL: never truncate or later unlink a file that is not ours.
  int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | extra_flags, 0600);
  if (fd < 0) {
    path[0] = '\0';
    die("setup", "creating a scratch file in the given directory (open)");
  }
  return fd;
}

// ---------------------------------------------------------------- memcpy

static volatile unsigned char memcpy_sink;

static double measure_memcpy_gib_s(void) {
  unsigned char *a = alloc_or_die("memcpy", MEMCPY_BUFFER_BYTES);
  unsigned char *b = alloc_or_die("memcpy", MEMCPY_BUFFER_BYTES);
  // Touch every page first: first-touch page faults cost more than the copy
  // itself and are not what we want to know.
  memset(a, 0x5a, MEMCPY_BUFFER_BYTES);
  memset(b, 0xa5, MEMCPY_BUFFER_BYTES);

  // Best of N short passes rather than one long average: on a shared VM the
  // noise (a neighbour, a migration, an interrupt storm) only ever slows a
  // pass down, so the fastest pass is the closest to what the hardware does.
  double best = 0.0;
  for (int pass = 0; pass < MEMCPY_PASSES; pass++) {
    size_t copies = 0;
    double t0 = now_s(), elapsed;
    do {
      memcpy(b, a, MEMCPY_BUFFER_BYTES);
      // Read the result and swap roles, so no copy is provably dead to the compiler.
      memcpy_sink ^= b[copies % MEMCPY_BUFFER_BYTES];
      unsigned char *t = a;
      a = b;
      b = t;
      copies++;
      elapsed = now_s() - t0;
    } while (elapsed < MEMCPY_PASS_S);
    // Bytes copied per second (each byte is read once and written once).
    double gib_s = (double)copies * (double)MEMCPY_BUFFER_BYTES / elapsed / (double)GiB;
    if (gib_s > best) best = gib_s;
  }
  free(a);
  free(b);
  fprintf(stderr, "limits: memcpy: best of %d passes of %.1f s, 64 MiB buffers: %.2f GiB/s\n", MEMCPY_PASSES,
          MEMCPY_PASS_S, best);
  return best;
}

// ---------------------------------------------------------------- append + fdatasync

static int cmp_double(const void *x, const void *y) {
  double a = *(const double *)x, b = *(const double *)y;
  return (a > b) - (a < b);
}

// Nearest rank: the smallest sample with at least pct% of samples at or below it.
static double percentile(const double *sorted, size_t n, unsigned pct) {
  size_t rank = (n * pct + 99) / 100;
  return sorted[rank == 0 ? 0 : rank - 1];
}

struct sync_result {
  double per_s, p50_ms, p99_ms;
};

static struct sync_result measure_fdatasync(int fd) {
  const char *phase = "fdatasync";
  unsigned char *buf = alloc_or_die(phase, SYNC_APPEND_BYTES);
  fill_pattern(buf, SYNC_APPEND_BYTES);
  static double latency_ms[SYNC_APPENDS_MAX];

  // fdatasync, not fsync: it is what a log needs for an append (the data, and
  // the new file size that makes it readable) without also forcing timestamps
  // out, and it is what Ticker's log calls (src/log/log.ts).
  // The first one also commits the file's creation, a cost a log pays once
  // per segment, not per append, so it is left out of the figures.
  write_all(phase, fd, buf, SYNC_APPEND_BYTES);
  if (fdatasync(fd) != 0) die(phase, "fdatasync");

  size_t n = 0;
  double t0 = now_s(), t = t0;
  while (n < SYNC_APPENDS_MAX && t - t0 < SYNC_DURATION_S) {
    double a = t;
    write_all(phase, fd, buf, SYNC_APPEND_BYTES);
    if (fdatasync(fd) != 0) die(phase, "fdatasync");
    t = now_s();
    latency_ms[n++] = (t - a) * 1e3;
  }
  double elapsed = t - t0;
  free(buf);
  if (close(fd) != 0) die(phase, "close");

  qsort(latency_ms, n, sizeof latency_ms[0], cmp_double);
  struct sync_result res = {
      .per_s = (double)n / elapsed,
      .p50_ms = percentile(latency_ms, n, 50),
      .p99_ms = percentile(latency_ms, n, 99),
  };
  fprintf(stderr,
          "limits: fdatasync: %zu appends of %zu KiB in %.2f s: %.0f/s, p50 %.3f ms, p99 %.3f ms, max %.3f ms\n", n,
          SYNC_APPEND_BYTES / KiB, elapsed, res.per_s, res.p50_ms, res.p99_ms, latency_ms[n - 1]);
  return res;
}

// ---------------------------------------------------------------- sequential write

static double measure_seq_write_mib_s(int fd) {
  const char *phase = "seq write";
  unsigned char *buf = alloc_or_die(phase, SEQ_WRITE_CHUNK_BYTES);
  fill_pattern(buf, SEQ_WRITE_CHUNK_BYTES);

  // 256 MiB fits in the page cache many times over, so write() alone would
  // measure memcpy into the cache; the final fdatasync waits until it is all
  // on the device, and only the two together are a disk figure.
  size_t written = 0;
  double t0 = now_s();
  while (written < SEQ_WRITE_TOTAL_BYTES && now_s() - t0 < SEQ_WRITE_MAX_S) {
    write_all(phase, fd, buf, SEQ_WRITE_CHUNK_BYTES);
    written += SEQ_WRITE_CHUNK_BYTES;
  }
  if (fdatasync(fd) != 0) die(phase, "fdatasync");
  double elapsed = now_s() - t0;
  free(buf);
  if (close(fd) != 0) die(phase, "close");

  double mib_s = (double)written / elapsed / (double)MiB;
  fprintf(stderr, "limits: seq write: %zu MiB in 1 MiB writes + fdatasync in %.3f s: %.0f MiB/s%s\n", written / MiB,
          elapsed, mib_s, written < SEQ_WRITE_TOTAL_BYTES ? " (stopped at the time limit)" : "");
  return mib_s;
}

// ----------------------------------------------------------------

int main(int argc, char **argv) {
  if (argc > 2) die_msg("usage", "limits [dir]   (dir: where the disk phases write, default \".\")");
  const char *dir = argc == 2 ? argv[1] : ".";
  struct stat st;
  if (stat(dir, &st) != 0) die("setup", "stat(dir)");
  if (!S_ISDIR(st.st_mode)) die_msg("setup", "the argument is not a directory");

  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_watchdog;
  if (sigemptyset(&sa.sa_mask) != 0) die("setup", "sigemptyset");
  if (sigaction(SIGALRM, &sa, NULL) != 0) die("setup", "sigaction(SIGALRM)");
  alarm(WATCHDOG_S);

  int sync_fd = open_scratch(sync_path, dir, "fdatasync", O_APPEND);
  int seq_fd = open_scratch(seq_path, dir, "seq-write", 0);

  double t0 = now_s();
  // CPU-bound phases first, disk after; the scratch files are removed only at
  // the end, because freeing 256 MiB on a file system mounted with `discard`
  // sends the device work that would land in the next phase's fdatasyncs.
  double memcpy_gib_s = measure_memcpy_gib_s();
  double tcp_gbit_s = measure_tcp_gbit_s();
  struct socket_writes writes = measure_socket_writes();
  struct sync_result sync = measure_fdatasync(sync_fd);
  double seq_mib_s = measure_seq_write_mib_s(seq_fd);
  if (unlink(sync_path) != 0) die("cleanup", "unlink(fdatasync scratch file)");
  sync_path[0] = '\0';
  if (unlink(seq_path) != 0) die("cleanup", "unlink(seq write scratch file)");
  seq_path[0] = '\0';
  alarm(0);
  fprintf(stderr, "limits: all phases in %.1f s\n", now_s() - t0);

  printf("{\"memcpy_gib_s\":%.2f,\"seq_write_mib_s\":%.1f,\"fdatasync_per_s\":%.1f,"
         "\"fdatasync_p50_ms\":%.3f,\"fdatasync_p99_ms\":%.3f,\"tcp_loopback_gbit_s\":%.2f,"
         "\"socket_writes_per_s\":%.0f,\"socket_write_us\":%.3f}\n",
         memcpy_gib_s, seq_mib_s, sync.per_s, sync.p50_ms, sync.p99_ms, tcp_gbit_s, writes.per_s, writes.us);
  if (fflush(stdout) != 0 || ferror(stdout)) die("output", "writing the JSON to stdout");
  return 0;
}
