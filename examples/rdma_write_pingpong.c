/*
 * rdma_write_pingpong: an RC ping-pong of RDMA WRITEs over rdma_cm, with data checks.
 *
 *   server: rdma_write_pingpong -s [-a ADDR] [-p PORT] [-n ITERS] [-S SIZE]
 *   client: rdma_write_pingpong -a ADDR [-p PORT] [-n ITERS] [-S SIZE]
 *
 * Each side registers a SIZE-byte buffer the peer may write and tells the peer where it
 * is (address, rkey) in a SEND. Then, ITERS times, the client RDMA WRITEs a pattern into
 * the server's buffer followed by a small SEND carrying the iteration number; the server
 * checks the pattern and answers the same way. iWARP has no immediate data: the SEND
 * after the WRITE is the notification, and RDMAP ordering guarantees that the WRITE's
 * data is placed before the SEND completes at the receiver.
 *
 * Plain librdmacm/libibverbs code: it runs on any RC-capable RDMA device.
 */
#include <arpa/inet.h>
#include <endian.h>
#include <getopt.h>
#include <inttypes.h>
#include <rdma/rdma_cma.h>
#include <rdma/rdma_verbs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct buf_info {  /* what each side tells the other, in network byte order */
	uint64_t addr;
	uint32_t rkey;
	uint32_t size;
};

struct ctx {
	struct rdma_cm_id *id;
	uint8_t *local, *remote;           /* local: written to the peer; remote: peer writes */
	struct ibv_mr *local_mr, *remote_mr, *msg_mr;
	struct buf_info msg[2];            /* [0] receive slot, [1] send slot */
	uint64_t peer_addr;
	uint32_t peer_rkey, size;
};

static void die(const char *what)
{
	perror(what);
	exit(1);
}

static void fill(uint8_t *p, uint32_t size, uint32_t iter, int side)
{
	for (uint32_t i = 0; i < size; i++)
		p[i] = (uint8_t)(i * 7 + iter * 13 + side * 101);
}

static int check(const uint8_t *p, uint32_t size, uint32_t iter, int side)
{
	for (uint32_t i = 0; i < size; i++)
		if (p[i] != (uint8_t)(i * 7 + iter * 13 + side * 101))
			return -1;
	return 0;
}

static void wait_comp(struct rdma_cm_id *id, int recv, const char *what)
{
	struct ibv_wc wc;
	int n = recv ? rdma_get_recv_comp(id, &wc) : rdma_get_send_comp(id, &wc);

	if (n <= 0) {
		fprintf(stderr, "%s: no completion\n", what);
		exit(1);
	}
	if (wc.status != IBV_WC_SUCCESS) {
		fprintf(stderr, "%s: completion error: %s\n", what, ibv_wc_status_str(wc.status));
		exit(1);
	}
}

/* RDMA WRITE of the whole buffer (unsignaled) then a signaled SEND of the iteration. */
static void write_and_notify(struct ctx *c, uint32_t iter)
{
	if (rdma_post_write(c->id, NULL, c->local, c->size, c->local_mr, 0,
			    c->peer_addr, c->peer_rkey))
		die("rdma_post_write");
	c->msg[1].size = htonl(iter);
	if (rdma_post_send(c->id, NULL, &c->msg[1], sizeof(c->msg[1]), c->msg_mr,
			   IBV_SEND_SIGNALED))
		die("rdma_post_send");
	wait_comp(c->id, 0, "send");
}

/* Waits for the peer's notification of iteration iter and checks the written data. */
static void receive_and_check(struct ctx *c, uint32_t iter, int peer_side)
{
	wait_comp(c->id, 1, "recv");
	if (ntohl(c->msg[0].size) != iter) {
		fprintf(stderr, "iteration %u: peer sent %u\n", iter, ntohl(c->msg[0].size));
		exit(1);
	}
	if (check(c->remote, c->size, iter, peer_side)) {
		fprintf(stderr, "iteration %u: data mismatch\n", iter);
		exit(1);
	}
	if (rdma_post_recv(c->id, NULL, &c->msg[0], sizeof(c->msg[0]), c->msg_mr))
		die("rdma_post_recv");
}

int main(int argc, char **argv)
{
	const char *addr = NULL, *port = "7471";
	uint32_t iters = 1000, size = 4096;
	int server = 0, opt;

	while ((opt = getopt(argc, argv, "sa:p:n:S:")) != -1) {
		switch (opt) {
		case 's': server = 1; break;
		case 'a': addr = optarg; break;
		case 'p': port = optarg; break;
		case 'n': iters = (uint32_t)strtoul(optarg, NULL, 0); break;
		case 'S': size = (uint32_t)strtoul(optarg, NULL, 0); break;
		default:
			fprintf(stderr, "usage: %s [-s] [-a addr] [-p port] [-n iters] [-S size]\n",
				argv[0]);
			return 2;
		}
	}
	if ((!server && !addr) || iters == 0 || size == 0) {
		fprintf(stderr, "a client needs -a ADDR; -n and -S must be positive\n");
		return 2;
	}

	struct rdma_addrinfo hints = { .ai_port_space = RDMA_PS_TCP }, *res;
	if (server)
		hints.ai_flags = RAI_PASSIVE;
	if (rdma_getaddrinfo(addr, port, &hints, &res))
		die("rdma_getaddrinfo");

	struct ibv_qp_init_attr qpa = {
		.cap = { .max_send_wr = 4, .max_recv_wr = 2, .max_send_sge = 1,
			 .max_recv_sge = 1 },
		.qp_type = IBV_QPT_RC,
		.sq_sig_all = 0,
	};
	struct ctx c = { .size = size };
	struct rdma_cm_id *listen_id = NULL;

	if (server) {
		if (rdma_create_ep(&listen_id, res, NULL, NULL))
			die("rdma_create_ep");
		if (rdma_listen(listen_id, 1))
			die("rdma_listen");
		printf("listening on %s:%s\n", addr ? addr : "*", port);
		fflush(stdout);
		if (rdma_get_request(listen_id, &c.id))
			die("rdma_get_request");
		if (rdma_create_qp(c.id, NULL, &qpa))
			die("rdma_create_qp");
	} else if (rdma_create_ep(&c.id, res, NULL, &qpa)) {
		die("rdma_create_ep");
	}
	rdma_freeaddrinfo(res);

	c.local = calloc(1, size);
	c.remote = calloc(1, size);
	if (!c.local || !c.remote)
		die("calloc");
	c.local_mr = rdma_reg_msgs(c.id, c.local, size);
	c.remote_mr = rdma_reg_write(c.id, c.remote, size);
	c.msg_mr = rdma_reg_msgs(c.id, c.msg, sizeof(c.msg));
	if (!c.local_mr || !c.remote_mr || !c.msg_mr)
		die("rdma_reg_*");

	/* The receive for the peer's buffer description must be posted before connecting. */
	if (rdma_post_recv(c.id, NULL, &c.msg[0], sizeof(c.msg[0]), c.msg_mr))
		die("rdma_post_recv");
	if (server ? rdma_accept(c.id, NULL) : rdma_connect(c.id, NULL))
		die(server ? "rdma_accept" : "rdma_connect");

	/* Exchange buffer descriptions. */
	c.msg[1] = (struct buf_info){ .addr = htobe64((uintptr_t)c.remote),
				      .rkey = htonl(c.remote_mr->rkey), .size = htonl(size) };
	if (rdma_post_send(c.id, NULL, &c.msg[1], sizeof(c.msg[1]), c.msg_mr, IBV_SEND_SIGNALED))
		die("rdma_post_send");
	wait_comp(c.id, 0, "send");
	wait_comp(c.id, 1, "recv");
	c.peer_addr = be64toh(c.msg[0].addr);
	c.peer_rkey = ntohl(c.msg[0].rkey);
	if (ntohl(c.msg[0].size) < size) {
		fprintf(stderr, "peer buffer is %u bytes, need %u\n", ntohl(c.msg[0].size), size);
		return 1;
	}
	if (rdma_post_recv(c.id, NULL, &c.msg[0], sizeof(c.msg[0]), c.msg_mr))
		die("rdma_post_recv");

	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (uint32_t i = 0; i < iters; i++) {
		if (server) {
			receive_and_check(&c, i, 0);
			fill(c.local, size, i, 1);
			write_and_notify(&c, i);
		} else {
			fill(c.local, size, i, 0);
			write_and_notify(&c, i);
			receive_and_check(&c, i, 1);
		}
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	double us = (t1.tv_sec - t0.tv_sec) * 1e6 + (t1.tv_nsec - t0.tv_nsec) / 1e3;

	printf("%s: %u round trips of %u bytes verified; round trip %.2f us, one way %.2f us\n",
	       server ? "server" : "client", iters, size, us / iters, us / iters / 2);

	rdma_disconnect(c.id);
	rdma_dereg_mr(c.msg_mr);
	rdma_dereg_mr(c.remote_mr);
	rdma_dereg_mr(c.local_mr);
	free(c.local);
	free(c.remote);
	rdma_destroy_ep(c.id);
	if (listen_id)
		rdma_destroy_ep(listen_id);
	return 0;
}
