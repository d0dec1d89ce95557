/* rsocket_echo.c - a plain BSD-socket echo server and verifying client. Nothing in it knows
 * about rsockets: test_rsockets.sh runs it with Debian's librspreload.so preloaded, which
 * turns its sockets into rsockets.
 *   rsocket_echo server PORT         echo one connection until end of stream (poll() driven)
 *   rsocket_echo client PORT BYTES   send BYTES of a pattern, read them back, verify
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static unsigned char pattern(size_t i) { return (unsigned char)(i * 7 + (i >> 11)); }

int main(int argc, char **argv)
{
	if (argc < 3)
		return 2;
	struct sockaddr_in a = {0};
	a.sin_family = AF_INET;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	a.sin_port = htons((unsigned short)atoi(argv[2]));
	static unsigned char buf[65536];
	int s = socket(AF_INET, SOCK_STREAM, 0);
	if (s < 0) { perror("socket"); return 1; }
	if (!strcmp(argv[1], "server")) {
		int one = 1;
		setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
		if (bind(s, (struct sockaddr *)&a, sizeof a) || listen(s, 4)) { perror("bind/listen"); return 1; }
		struct pollfd p = { s, POLLIN, 0 };
		if (poll(&p, 1, 60000) != 1) { fprintf(stderr, "poll on listener timed out\n"); return 1; }
		int c = accept(s, NULL, NULL);
		if (c < 0) { perror("accept"); return 1; }
		size_t total = 0;
		for (;;) {
			p.fd = c; p.events = POLLIN; p.revents = 0;
			if (poll(&p, 1, 60000) != 1) { fprintf(stderr, "poll timed out\n"); return 1; }
			ssize_t n = recv(c, buf, sizeof buf, 0);
			if (n < 0) { perror("recv"); return 1; }
			if (n == 0) break;
			for (ssize_t off = 0; off < n; ) {
				ssize_t w = send(c, buf + off, n - off, 0);
				if (w <= 0) { perror("send"); return 1; }
				off += w;
			}
			total += n;
		}
		printf("server echoed %zu bytes\n", total);
		close(c);
		close(s);
		return 0;
	}
	size_t want = argc > 3 ? strtoull(argv[3], NULL, 0) : 1 << 20;
	if (connect(s, (struct sockaddr *)&a, sizeof a)) { perror("connect"); return 1; }
	size_t sent = 0, got = 0;
	while (got < want) {
		if (sent < want && sent - got < 32768) {
			size_t n = want - sent < 8192 ? want - sent : 8192;
			unsigned char out[8192];
			for (size_t i = 0; i < n; ++i) out[i] = pattern(sent + i);
			ssize_t w = write(s, out, n);
			if (w <= 0) { perror("write"); return 1; }
			sent += (size_t)w;
			continue;
		}
		ssize_t n = read(s, buf, sizeof buf);
		if (n <= 0) { fprintf(stderr, "read: early end at %zu of %zu\n", got, want); return 1; }
		for (ssize_t i = 0; i < n; ++i)
			if (buf[i] != pattern(got + i)) { fprintf(stderr, "mismatch at byte %zu\n", got + i); return 1; }
		got += (size_t)n;
	}
	shutdown(s, SHUT_WR);
	if (read(s, buf, 1) != 0) { fprintf(stderr, "no end of stream after shutdown\n"); return 1; }
	printf("client verified %zu bytes\n", got);
	close(s);
	return 0;
}
