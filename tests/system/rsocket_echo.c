/* rsocket_echo.c - a plain BSD-socket echo server and verifying client. Nothing in it knows
 * about rsockets: test_rsockets.sh runs it with Debian's librspreload.so preloaded, which
 * turns its sockets into rsockets.
 *   rsocket_echo server PORT         echo one connection until end of stream (poll() driven)
 *   rsocket_echo client PORT BYTES   send BYTES of a pattern, read them back, verify
 * on 127.0.0.1; "server6" and "client6" do the same with IPv6 sockets on ::1.
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
	const int v6 = argv[1][strlen(argv[1]) - 1] == '6';
	struct sockaddr_storage st = {0};
	struct sockaddr_in *a4 = (struct sockaddr_in *)&st;
	struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&st;
	const unsigned short port = htons((unsigned short)atoi(argv[2]));
	if (v6) {
		a6->sin6_family = AF_INET6;
		a6->sin6_addr = in6addr_loopback;
		a6->sin6_port = port;
	} else {
		a4->sin_family = AF_INET;
		a4->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		a4->sin_port = port;
	}
	struct sockaddr *a = (struct sockaddr *)&st;
	const socklen_t alen = v6 ? sizeof *a6 : sizeof *a4;
	static unsigned char buf[65536];
	int s = socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM, 0);
	if (s < 0) { perror("socket"); return 1; }
	if (!strncmp(argv[1], "server", 6)) {
		int one = 1;
		setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
		if (bind(s, a, alen) || listen(s, 4)) { perror("bind/listen"); return 1; }
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
	if (connect(s, a, alen)) { perror("connect"); return 1; }
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
