// The socket phases of limits.c (see there for how it is built and run):
// what loopback TCP allows one client and one server at best.
#define _POSIX_C_SOURCE 200809L

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "limits.h"

// Loopback TCP: 1 GiB in 256 KiB writes, about what a busy server's writes are.
#define TCP_TOTAL_BYTES (1 * GiB)
#define TCP_WRITE_BYTES (256 * KiB)
#define TCP_MAX_S 3.0
// A peer that stops reading or never connects must not hang the program.
#define TCP_IO_TIMEOUT_S 5

// ---------------------------------------------------------------- loopback TCP

struct receiver {
  int listen_fd;
  uint64_t bytes;
  double done_s;
};

static void set_timeout(const char *phase, int fd, int option) {
  struct timeval tv = {.tv_sec = TCP_IO_TIMEOUT_S, .tv_usec = 0};
  if (setsockopt(fd, SOL_SOCKET, option, &tv, sizeof tv) != 0) die(phase, "setsockopt(SO_RCVTIMEO/SO_SNDTIMEO)");
}

static void *receive_all(void *arg) {
  struct receiver *r = arg;
  struct pollfd pfd = {.fd = r->listen_fd, .events = POLLIN};
  int ready;
  do ready = poll(&pfd, 1, TCP_IO_TIMEOUT_S * 1000);
  while (ready < 0 && errno == EINTR);
  if (ready < 0) die("tcp receiver", "poll");
  if (ready == 0) die_msg("tcp receiver", "no connection within the timeout");
  int fd = accept(r->listen_fd, NULL, NULL);
  if (fd < 0) die("tcp receiver", "accept");
  set_timeout("tcp receiver", fd, SO_RCVTIMEO);

  unsigned char *buf = alloc_or_die("tcp receiver", TCP_WRITE_BYTES);
  for (;;) {
    ssize_t n = recv(fd, buf, TCP_WRITE_BYTES, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      die("tcp receiver", errno == EAGAIN || errno == EWOULDBLOCK ? "recv (timed out)" : "recv");
    }
    if (n == 0) break; // the sender's shutdown(SHUT_WR): everything has arrived
    r->bytes += (uint64_t)n;
  }
  r->done_s = now_s();
  free(buf);
  if (close(fd) != 0) die("tcp receiver", "close");
  return NULL;
}

double measure_tcp_gbit_s(void) {
  const char *phase = "tcp";
  int lfd = socket(AF_INET, SOCK_STREAM, 0);
  if (lfd < 0) die(phase, "socket");
  struct sockaddr_in addr;
  memset(&addr, 0, sizeof addr);
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0; // ephemeral: never collides with a server someone else is benchmarking
  if (bind(lfd, (struct sockaddr *)&addr, sizeof addr) != 0) die(phase, "bind(127.0.0.1:0)");
  if (listen(lfd, 1) != 0) die(phase, "listen");
  socklen_t len = sizeof addr;
  if (getsockname(lfd, (struct sockaddr *)&addr, &len) != 0) die(phase, "getsockname");

  // A thread, not a fork: the receiver's count and end time come back without IPC.
  struct receiver r = {.listen_fd = lfd, .bytes = 0, .done_s = 0.0};
  pthread_t tid;
  int rc = pthread_create(&tid, NULL, receive_all, &r);
  if (rc != 0) {
    errno = rc;
    die(phase, "pthread_create");
  }

  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) die(phase, "socket");
  if (connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) die(phase, "connect(127.0.0.1)");
  set_timeout(phase, fd, SO_SNDTIMEO);

  unsigned char *buf = alloc_or_die(phase, TCP_WRITE_BYTES);
  fill_pattern(buf, TCP_WRITE_BYTES);
  uint64_t sent = 0;
  double t0 = now_s();
  while (sent < TCP_TOTAL_BYTES && now_s() - t0 < TCP_MAX_S) {
    size_t off = 0;
    while (off < TCP_WRITE_BYTES) {
      // MSG_NOSIGNAL: a receiver that died is an error message, not a silent SIGPIPE.
      ssize_t n = send(fd, buf + off, TCP_WRITE_BYTES - off, MSG_NOSIGNAL);
      if (n < 0) {
        if (errno == EINTR) continue;
        die(phase, errno == EAGAIN || errno == EWOULDBLOCK ? "send (timed out)" : "send");
      }
      off += (size_t)n;
    }
    sent += TCP_WRITE_BYTES;
  }
  if (shutdown(fd, SHUT_WR) != 0) die(phase, "shutdown");
  rc = pthread_join(tid, NULL);
  if (rc != 0) {
    errno = rc;
    die(phase, "pthread_join");
  }
  // Timed to the last byte received, not sent: a send only fills the socket buffer.
  double elapsed = r.done_s - t0;
  if (r.bytes != sent) die_msg(phase, "the receiver counted a different number of bytes than were sent");
  free(buf);
  if (close(fd) != 0) die(phase, "close");
  if (close(lfd) != 0) die(phase, "close");

  // Gbit/s in decimal bits (1e9), as network links are rated.
  double gbit_s = (double)sent * 8.0 / elapsed / 1e9;
  fprintf(stderr, "limits: tcp: %.0f MiB over 127.0.0.1 in %.3f s, %zu KiB writes: %.2f Gbit/s%s\n",
          (double)sent / (double)MiB, elapsed, TCP_WRITE_BYTES / KiB, gbit_s,
          sent < TCP_TOTAL_BYTES ? " (stopped at the time limit)" : "");
  return gbit_s;
}
