/*
 * txcsum: turns an interface's transmit checksum offload on or off (the one ethtool setting
 * the benchmark needs, without depending on ethtool):
 *
 *   cc -O2 -o txcsum txcsum.c
 *   ip netns exec NS ./txcsum eth0 off
 *
 * With tx checksum offload off the kernel also drops TSO on the device (TSO needs it), so the
 * stack hands over MTU-sized packets with complete checksums. Open vSwitch's userspace
 * datapath needs exactly that on veth ports unless its own userspace TSO support is enabled.
 */
#include <errno.h>
#include <linux/ethtool.h>
#include <linux/sockios.h>
#include <net/if.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv) {
  if (argc != 3 || (strcmp(argv[2], "on") != 0 && strcmp(argv[2], "off") != 0)) {
    fprintf(stderr, "usage: %s <ifname> on|off\n", argv[0]);
    return 2;
  }
  if (strlen(argv[1]) >= IFNAMSIZ) {
    fprintf(stderr, "txcsum: interface name \"%s\" is too long\n", argv[1]);
    return 2;
  }
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    fprintf(stderr, "txcsum: socket: %s\n", strerror(errno));
    return 1;
  }
  struct ethtool_value ev = {.cmd = ETHTOOL_STXCSUM, .data = strcmp(argv[2], "on") == 0};
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  memcpy(ifr.ifr_name, argv[1], strlen(argv[1]));
  ifr.ifr_data = (void *)&ev;
  if (ioctl(fd, SIOCETHTOOL, &ifr) < 0) {
    fprintf(stderr, "txcsum: %s: ETHTOOL_STXCSUM: %s\n", argv[1], strerror(errno));
    close(fd);
    return 1;
  }
  close(fd);
  return 0;
}
