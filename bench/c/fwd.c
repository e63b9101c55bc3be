/*
 * fwd: a minimal TUN-to-TUN forwarder in C, the baseline for tunswitch's forwarding benchmark.
 *
 *   cc -O2 -o fwd fwd.c
 *   ./fwd <tunA> <tunB> [<tunC>] [--vnet]
 *
 * It creates (or attaches to) two TUN devices (IFF_TUN | IFF_NO_PI), then forever:
 * poll() both fds for input; whatever is read from one is written, packet by packet, to the
 * other. No parsing, no policy: this is the cost floor of "read a packet from a TUN, write it
 * to another TUN" with one syscall per packet each way.
 *
 * With a third device C (the benchmark's second sender), A and C both send to B, and B's
 * packets go to C when their IPv4 destination is the source address last seen on C (learnt
 * like a bridge learns MACs), else to A. One 4-byte compare per packet from B.
 *
 * --vnet  adds IFF_VNET_HDR with a 12-byte header (struct virtio_net_hdr_mrg_rxbuf) and
 *         TUNSETOFFLOAD(CSUM | TSO4 | TSO6): the kernel hands over unsegmented TCP super-
 *         packets (up to 64 KiB) with their header, and the header is passed through as is, so
 *         the receiving side segments/checksums them. Both devices get the same offloads.
 *
 * Put the devices in namespaces after starting it, e.g. (as root):
 *   ./fwd tswfa tswfb &
 *   ip netns add a; ip netns add b
 *   ip link set tswfa netns a name eth0; ip link set tswfb netns b name eth0
 *   ip -n a addr add 10.199.5.1/32 dev eth0; ip -n a link set eth0 up
 *   ip -n a route add 10.199.5.2/32 dev eth0
 *   ip -n b addr add 10.199.5.2/32 dev eth0; ip -n b link set eth0 up
 *   ip -n b route add 10.199.5.1/32 dev eth0
 *   ip netns exec a ping -c 3 10.199.5.2
 *
 * SIGINT/SIGTERM prints packet/byte/drop counts per direction to stderr and exits.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#define VNET_HDR_LEN 12
#define BUF_LEN (65536 + VNET_HDR_LEN)
/* Packets moved per direction per poll() wake-up before looking at the other side. */
#define BURST 64

static volatile sig_atomic_t stop;

static void on_signal(int sig) {
  (void)sig;
  stop = 1;
}

static int tun_open(const char *name, int vnet) {
  struct ifreq ifr;
  if (strlen(name) >= IFNAMSIZ) {
    fprintf(stderr, "fwd: interface name \"%s\" is longer than %d bytes\n", name, IFNAMSIZ - 1);
    exit(2);
  }
  int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    fprintf(stderr, "fwd: open /dev/net/tun: %s\n", strerror(errno));
    exit(1);
  }
  memset(&ifr, 0, sizeof ifr);
  ifr.ifr_flags = IFF_TUN | IFF_NO_PI | (vnet ? IFF_VNET_HDR : 0);
  memcpy(ifr.ifr_name, name, strlen(name));
  if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
    fprintf(stderr, "fwd: TUNSETIFF %s: %s\n", name, strerror(errno));
    exit(1);
  }
  if (vnet) {
    int sz = VNET_HDR_LEN;
    if (ioctl(fd, TUNSETVNETHDRSZ, &sz) < 0) {
      fprintf(stderr, "fwd: TUNSETVNETHDRSZ %s: %s\n", name, strerror(errno));
      exit(1);
    }
    if (ioctl(fd, TUNSETOFFLOAD, (unsigned long)(TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6)) < 0) {
      fprintf(stderr, "fwd: TUNSETOFFLOAD %s: %s\n", name, strerror(errno));
      exit(1);
    }
  }
  return fd;
}

struct dir_stats {
  unsigned long long packets, bytes, drops;
};

/* Three-port mode: C's learnt IPv4 source address (network order) and its fd; -1: none. */
static unsigned char c_addr[4];
static int c_learnt;
static int c_fd = -1;
static int ip_off;

/* Moves up to BURST packets from src to dst. Returns 1 if src may still have more.
 * learn: remember the IPv4 source of src's packets as C's; route: send packets whose IPv4
 * destination is C's address to c_fd instead of dst. */
static int pump(int src, int dst, unsigned char *buf, struct dir_stats *st, int learn, int route) {
  for (int i = 0; i < BURST; i++) {
    ssize_t n = read(src, buf, BUF_LEN);
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR) return 0;
      fprintf(stderr, "fwd: read: %s\n", strerror(errno));
      exit(1);
    }
    int out = dst;
    const unsigned char *ip = buf + ip_off;
    if (n >= ip_off + 20 && (ip[0] >> 4) == 4) {
      if (learn) {
        memcpy(c_addr, ip + 12, 4);
        c_learnt = 1;
      } else if (route && c_learnt && memcmp(ip + 16, c_addr, 4) == 0) {
        out = c_fd;
      }
    }
    ssize_t w = write(out, buf, (size_t)n);
    if (w < 0) {
      /* EAGAIN: the other side's queue is full; drop like a switch port would. EIO/EINVAL:
       * the kernel refused the packet. Either way count it and carry on. */
      st->drops++;
      continue;
    }
    st->packets++;
    st->bytes += (unsigned long long)n;
  }
  return 1;
}

int main(int argc, char **argv) {
  int vnet = 0;
  if (argc >= 2 && strcmp(argv[argc - 1], "--vnet") == 0) {
    vnet = 1;
    argc--;
  }
  if (argc != 3 && argc != 4) {
    fprintf(stderr, "usage: %s <tunA> <tunB> [<tunC>] [--vnet]\n", argv[0]);
    return 2;
  }
  int a = tun_open(argv[1], vnet), b = tun_open(argv[2], vnet);
  if (argc == 4) c_fd = tun_open(argv[3], vnet);
  ip_off = vnet ? VNET_HDR_LEN : 0;
  static unsigned char buf[BUF_LEN];
  struct dir_stats ab = {0, 0, 0}, ba = {0, 0, 0}, cb = {0, 0, 0};
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal; /* no SA_RESTART: poll() returns EINTR and we exit */
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  fprintf(stderr, "fwd: forwarding %s <-> %s%s%s%s\n", argv[1], argv[2], c_fd >= 0 ? " <-> " : "", c_fd >= 0 ? argv[3] : "",
          vnet ? " (vnet hdr, offloads)" : "");

  struct pollfd pfd[3] = {{a, POLLIN, 0}, {b, POLLIN, 0}, {c_fd, POLLIN, 0}};
  nfds_t nfds = c_fd >= 0 ? 3 : 2;
  while (!stop) {
    int r = poll(pfd, nfds, -1);
    if (r < 0) {
      if (errno == EINTR) continue;
      fprintf(stderr, "fwd: poll: %s\n", strerror(errno));
      return 1;
    }
    int gone = 0;
    for (nfds_t i = 0; i < nfds; i++) gone |= pfd[i].revents & (POLLERR | POLLHUP | POLLNVAL);
    if (gone) {
      fprintf(stderr, "fwd: a device went away\n");
      break;
    }
    if (pfd[0].revents & POLLIN) pump(a, b, buf, &ab, 0, 0);
    if (pfd[1].revents & POLLIN) pump(b, a, buf, &ba, 0, c_fd >= 0);
    if (nfds == 3 && pfd[2].revents & POLLIN) pump(c_fd, b, buf, &cb, 1, 0);
  }
  fprintf(stderr, "fwd: %s->%s packets %llu bytes %llu drops %llu; %s->%s packets %llu bytes %llu drops %llu",
          argv[1], argv[2], ab.packets, ab.bytes, ab.drops, argv[2], argv[1], ba.packets, ba.bytes, ba.drops);
  if (c_fd >= 0) fprintf(stderr, "; %s->%s packets %llu bytes %llu drops %llu", argv[3], argv[2], cb.packets, cb.bytes, cb.drops);
  fprintf(stderr, "\n");
  close(a);
  close(b);
  if (c_fd >= 0) close(c_fd);
  return 0;
}
