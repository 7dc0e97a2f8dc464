// The socket phases of limits.c (see there for how it is built and run):
// what loopback TCP allows one client and one server at best, in bytes (one
// connection, large writes) and in writes (many connections, small writes).
#define _POSIX_C_SOURCE 200809L

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
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

// Fan-out writes: one small message to each of many consumers in turn, as a
// server fans an event out over WebSockets. 1,000 connections are 2,000 fds
// here (both ends are ours), within the usual hard limit; a typical small
// events message (one event, its frame headers) is about 200 bytes.
#define FANOUT_SOCKETS 1000
#define FANOUT_MESSAGE_BYTES 200
#define FANOUT_PASSES 3
#define FANOUT_PASS_S 0.5
// The sockets' fds, the listener, the epoll fd, stdio and a few to spare.
#define FANOUT_FDS_MAX (2 * FANOUT_SOCKETS + 16)
// The receiver reads whatever is queued on a socket in one recv; 64 KiB is
// far more than one socket gets between two of its turns.
#define FANOUT_RECV_BUFFER_BYTES (64 * KiB)
#define FANOUT_EPOLL_EVENTS_MAX 256

static void set_timeout(const char *phase, int fd, int option) {
  struct timeval tv = {.tv_sec = TCP_IO_TIMEOUT_S, .tv_usec = 0};
  if (setsockopt(fd, SOL_SOCKET, option, &tv, sizeof tv) != 0) die(phase, "setsockopt(SO_RCVTIMEO/SO_SNDTIMEO)");
}

// A listener on 127.0.0.1 and an ephemeral port (in *addr on return): never
// collides with a server someone else is benchmarking.
static int listen_loopback(const char *phase, struct sockaddr_in *addr) {
  int lfd = socket(AF_INET, SOCK_STREAM, 0);
  if (lfd < 0) die(phase, "socket");
  memset(addr, 0, sizeof *addr);
  addr->sin_family = AF_INET;
  addr->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr->sin_port = 0;
  if (bind(lfd, (struct sockaddr *)addr, sizeof *addr) != 0) die(phase, "bind(127.0.0.1:0)");
  // Each phase accepts a connection before it makes the next one.
  if (listen(lfd, 1) != 0) die(phase, "listen");
  socklen_t len = sizeof *addr;
  if (getsockname(lfd, (struct sockaddr *)addr, &len) != 0) die(phase, "getsockname");
  return lfd;
}

// Waits at most TCP_IO_TIMEOUT_S for a connection.
static int accept_within_timeout(const char *phase, int lfd) {
  struct pollfd pfd = {.fd = lfd, .events = POLLIN};
  int ready;
  do ready = poll(&pfd, 1, TCP_IO_TIMEOUT_S * 1000);
  while (ready < 0 && errno == EINTR);
  if (ready < 0) die(phase, "poll");
  if (ready == 0) die_msg(phase, "no connection within the timeout");
  int fd = accept(lfd, NULL, NULL);
  if (fd < 0) die(phase, "accept");
  return fd;
}

static void start_thread(const char *phase, pthread_t *tid, void *(*fn)(void *), void *arg) {
  int rc = pthread_create(tid, NULL, fn, arg);
  if (rc != 0) {
    errno = rc;
    die(phase, "pthread_create");
  }
}

static void join_thread(const char *phase, pthread_t tid) {
  int rc = pthread_join(tid, NULL);
  if (rc != 0) {
    errno = rc;
    die(phase, "pthread_join");
  }
}

// ---------------------------------------------------------------- loopback TCP

struct receiver {
  int listen_fd;
  uint64_t bytes;
  double done_s;
};

static void *receive_all(void *arg) {
  struct receiver *r = arg;
  int fd = accept_within_timeout("tcp receiver", r->listen_fd);
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
  struct sockaddr_in addr;
  int lfd = listen_loopback(phase, &addr);

  // A thread, not a fork: the receiver's count and end time come back without IPC.
  struct receiver r = {.listen_fd = lfd, .bytes = 0, .done_s = 0.0};
  pthread_t tid;
  start_thread(phase, &tid, receive_all, &r);

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
  join_thread(phase, tid);
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

// ---------------------------------------------------------------- fan-out writes

// 2,000 fds is past the common soft limit of 1,024; Node raises its own soft
// limit to the hard one at start (and `npm run bench:limits` runs us from Node),
// so do the same by hand, and say so when even the hard limit is too low.
static void ensure_fds(const char *phase) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0) die(phase, "getrlimit(RLIMIT_NOFILE)");
  if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur >= FANOUT_FDS_MAX) return;
  if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < FANOUT_FDS_MAX) {
    char msg[160];
    snprintf(msg, sizeof msg, "needs %d fds (FANOUT_SOCKETS %d, both ends), the hard RLIMIT_NOFILE is %llu",
             FANOUT_FDS_MAX, FANOUT_SOCKETS, (unsigned long long)rl.rlim_max);
    die_msg(phase, msg);
  }
  rl.rlim_cur = FANOUT_FDS_MAX;
  if (setrlimit(RLIMIT_NOFILE, &rl) != 0) die(phase, "setrlimit(RLIMIT_NOFILE)");
}

static void set_nonblocking(const char *phase, int fd) {
  int flags = fcntl(fd, F_GETFL);
  if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0) die(phase, "fcntl(O_NONBLOCK)");
}

struct fanout_receiver {
  int epoll_fd;
  size_t open; // sockets whose sender has not yet shut down, as seen here
  uint64_t bytes;
};

// The consumers: one thread, level-triggered epoll, one recv per ready socket
// (whatever is left is reported again by the next epoll_wait).
static void *drain_all(void *arg) {
  const char *phase = "fan-out receiver";
  struct fanout_receiver *r = arg;
  unsigned char *buf = alloc_or_die(phase, FANOUT_RECV_BUFFER_BYTES);
  struct epoll_event events[FANOUT_EPOLL_EVENTS_MAX];
  while (r->open > 0) {
    int ready = epoll_wait(r->epoll_fd, events, FANOUT_EPOLL_EVENTS_MAX, TCP_IO_TIMEOUT_S * 1000);
    if (ready < 0) {
      if (errno == EINTR) continue;
      die(phase, "epoll_wait");
    }
    if (ready == 0) die_msg(phase, "no data on any socket within the timeout");
    for (int i = 0; i < ready; i++) {
      int fd = events[i].data.fd;
      ssize_t n = recv(fd, buf, FANOUT_RECV_BUFFER_BYTES, 0);
      if (n > 0) {
        r->bytes += (uint64_t)n;
      } else if (n == 0) {
        // The sender's shutdown(SHUT_WR): this socket is done; level-triggered
        // epoll would report its EOF forever.
        if (epoll_ctl(r->epoll_fd, EPOLL_CTL_DEL, fd, NULL) != 0) die(phase, "epoll_ctl(EPOLL_CTL_DEL)");
        r->open--;
      } else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
        die(phase, "recv");
      }
    }
  }
  free(buf);
  return NULL;
}

struct socket_writes measure_socket_writes(void) {
  const char *phase = "fan-out";
  ensure_fds(phase);
  int *server = malloc(FANOUT_SOCKETS * sizeof *server); // the sender's ends (accepted)
  int *client = malloc(FANOUT_SOCKETS * sizeof *client); // the receiver's ends
  // Bytes of a socket's current message still to write after a partial write.
  size_t *unsent = calloc(FANOUT_SOCKETS, sizeof *unsent);
  if (server == NULL || client == NULL || unsent == NULL) die(phase, "malloc");

  struct sockaddr_in addr;
  int lfd = listen_loopback(phase, &addr);
  int epoll_fd = epoll_create1(0);
  if (epoll_fd < 0) die(phase, "epoll_create1");
  int one = 1;
  for (int i = 0; i < FANOUT_SOCKETS; i++) {
    client[i] = socket(AF_INET, SOCK_STREAM, 0);
    if (client[i] < 0) die(phase, "socket");
    set_timeout(phase, client[i], SO_SNDTIMEO); // bounds connect() too
    if (connect(client[i], (struct sockaddr *)&addr, sizeof addr) != 0) die(phase, "connect(127.0.0.1)");
    server[i] = accept_within_timeout(phase, lfd);
    // What a server does to the sockets it accepts: uWebSockets.js (uSockets'
    // loop.c) sets TCP_NODELAY on every one, so each small write goes out as
    // its own segment rather than waiting for the previous one's ACK (Nagle).
    if (setsockopt(server[i], IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0) die(phase, "setsockopt(TCP_NODELAY)");
    set_nonblocking(phase, server[i]);
    set_nonblocking(phase, client[i]);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = client[i]};
    if (epoll_ctl(epoll_fd, EPOLL_CTL_ADD, client[i], &ev) != 0) die(phase, "epoll_ctl(EPOLL_CTL_ADD)");
  }

  struct fanout_receiver r = {.epoll_fd = epoll_fd, .open = FANOUT_SOCKETS, .bytes = 0};
  pthread_t tid;
  start_thread(phase, &tid, drain_all, &r);

  unsigned char msg[FANOUT_MESSAGE_BYTES];
  fill_pattern(msg, sizeof msg);
  uint64_t writes = 0, full = 0, sent = 0;
  double best_per_s = 0.0;
  // Best of N short passes, as for memcpy: another tenant or another benchmark
  // on these cores only ever slows a pass down.
  for (int pass = 0; pass < FANOUT_PASSES; pass++) {
    uint64_t pass_writes = 0;
    double t0 = now_s(), elapsed;
    // Non-blocking, round robin, as a server's event loop writes: a socket
    // whose buffer is full (EAGAIN) is skipped this round, where a server would
    // queue the message and wait for the socket to be writable; the rest of a
    // partial write goes first on the socket's next turn, so its stream stays
    // whole messages. Only a message written to its end counts as a write.
    do {
      for (int i = 0; i < FANOUT_SOCKETS; i++) {
        size_t left = unsent[i] > 0 ? unsent[i] : FANOUT_MESSAGE_BYTES;
        ssize_t n;
        // MSG_NOSIGNAL: a receiver that died is an error message, not a silent SIGPIPE.
        do n = send(server[i], msg + (FANOUT_MESSAGE_BYTES - left), left, MSG_NOSIGNAL);
        while (n < 0 && errno == EINTR);
        if (n < 0) {
          if (errno != EAGAIN && errno != EWOULDBLOCK) die(phase, "send");
          full++;
          continue;
        }
        sent += (uint64_t)n;
        unsent[i] = left - (size_t)n;
        if (unsent[i] == 0) pass_writes++;
      }
      // The clock once a round, not once a write: a round is a few ms.
      elapsed = now_s() - t0;
    } while (elapsed < FANOUT_PASS_S);
    writes += pass_writes;
    double per_s = (double)pass_writes / elapsed;
    if (per_s > best_per_s) best_per_s = per_s;
  }

  for (int i = 0; i < FANOUT_SOCKETS; i++) {
    if (shutdown(server[i], SHUT_WR) != 0) die(phase, "shutdown");
  }
  join_thread(phase, tid);
  if (r.bytes != sent) die_msg(phase, "the receiver counted a different number of bytes than were sent");
  if (best_per_s == 0.0) die_msg(phase, "no write completed in any pass: every socket's buffer stayed full");
  for (int i = 0; i < FANOUT_SOCKETS; i++) {
    if (close(server[i]) != 0 || close(client[i]) != 0) die(phase, "close");
  }
  if (close(epoll_fd) != 0 || close(lfd) != 0) die(phase, "close");
  free(server);
  free(client);
  free(unsent);

  struct socket_writes res = {.per_s = best_per_s, .us = 1e6 / best_per_s};
  fprintf(stderr,
          "limits: fan-out: %llu writes of %d B round robin over %d sockets (TCP_NODELAY, non-blocking) in %d passes "
          "of %.1f s; best pass %.0f/s, %.3f us a write; %llu found a full socket buffer\n",
          (unsigned long long)writes, FANOUT_MESSAGE_BYTES, FANOUT_SOCKETS, FANOUT_PASSES, FANOUT_PASS_S, res.per_s,
          res.us, (unsigned long long)full);
  return res;
}
