// Contention test for RFC 7306 atomics (tests/system/test_atomics.sh), a plain verbs +
// rdma_cm program built against the system headers and run through eca-run.
//
//   atomic_counter server PORT NCONN
//     One 64-bit counter (REMOTE_ATOMIC), offered to each of NCONN connections in the
//     accept's private data. While connections are open, a thread of the server increments
//     the same counter with CPU atomics (IBV_ATOMIC_GLOB: remote atomics are atomic against
//     those too). After all connections disconnected prints "counter <value>" and
//     "local <increments made by the CPU thread>".
//   atomic_counter client HOST PORT NQP ITERS [cas]
//     NQP connections (QPs) from this process; on each, ITERS increments of the counter,
//     up to 16 in flight per QP: IBV_WR_ATOMIC_FETCH_AND_ADD of 1, or with "cas" a
//     compare-and-swap loop (read the value with a CAS of 0->0, then CAS v->v+1 until one
//     succeeds). Prints every value an increment replaced, one per line: across all
//     clients these must be exactly 0 .. total-1, each once.
// Bounded by alarm(); any failure exits non-zero with a message on stderr.
#include <arpa/inet.h>
#include <endian.h>
#include <pthread.h>
#include <sched.h>
#include <infiniband/verbs.h>
#include <rdma/rdma_cma.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DEPTH 16

struct offer {
  uint64_t addr;  // big-endian
  uint32_t rkey;  // big-endian
} __attribute__((packed));

static void die(const char *what) {
  perror(what);
  exit(2);
}

static struct rdma_cm_event *expect(struct rdma_event_channel *ec, enum rdma_cm_event_type t) {
  struct rdma_cm_event *ev;
  if (rdma_get_cm_event(ec, &ev)) die("rdma_get_cm_event");
  if (ev->event != t) {
    fprintf(stderr, "expected %s, got %s (status %d)\n", rdma_event_str(t),
            rdma_event_str(ev->event), ev->status);
    exit(2);
  }
  return ev;
}

static uint64_t *g_counter;
static int g_stop;
static uint64_t g_local;

static void *local_increments(void *arg) {
  (void)arg;
  while (!__atomic_load_n(&g_stop, __ATOMIC_ACQUIRE)) {
    __atomic_fetch_add(g_counter, 1, __ATOMIC_SEQ_CST);
    if (++g_local % 64 == 0) sched_yield();
  }
  return NULL;
}

static int server(int port, int nconn) {
  struct rdma_event_channel *ec = rdma_create_event_channel();
  struct rdma_cm_id *lid;
  if (!ec || rdma_create_id(ec, &lid, NULL, RDMA_PS_TCP)) die("rdma_create_id");
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (rdma_bind_addr(lid, (struct sockaddr *)&a) || rdma_listen(lid, 64)) die("listen");
  uint64_t *counter = aligned_alloc(4096, 4096);
  memset(counter, 0, 4096);
  struct ibv_pd *pd = NULL;
  struct ibv_mr *mr = NULL;
  struct ibv_cq *cq = NULL;
  int done = 0, established = 0;
  pthread_t local;
  int local_started = 0;
  g_counter = counter;
  while (done < nconn) {
    struct rdma_cm_event *ev;
    if (rdma_get_cm_event(ec, &ev)) die("rdma_get_cm_event");
    struct rdma_cm_id *id = ev->id;
    switch (ev->event) {
      case RDMA_CM_EVENT_CONNECT_REQUEST: {
        if (!pd) {
          pd = ibv_alloc_pd(id->verbs);
          cq = ibv_create_cq(id->verbs, 64, NULL, NULL, 0);
          mr = pd ? ibv_reg_mr(pd, counter, 8,
                               IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_ATOMIC |
                                   IBV_ACCESS_REMOTE_READ)
                  : NULL;
          if (!pd || !cq || !mr) die("server resources");
        }
        if (id->verbs != pd->context) {
          fprintf(stderr, "connections on different devices\n");
          exit(2);
        }
        struct ibv_qp_init_attr qa = {.send_cq = cq, .recv_cq = cq, .qp_type = IBV_QPT_RC};
        qa.cap.max_send_wr = qa.cap.max_recv_wr = 4;
        qa.cap.max_send_sge = qa.cap.max_recv_sge = 1;
        if (rdma_create_qp(id, pd, &qa)) die("rdma_create_qp");
        struct offer o = {htobe64((uint64_t)(uintptr_t)counter), htonl(mr->rkey)};
        struct rdma_conn_param cp = {.private_data = &o, .private_data_len = sizeof o,
                                     .responder_resources = DEPTH, .initiator_depth = DEPTH};
        if (rdma_accept(id, &cp)) die("rdma_accept");
        break;
      }
      case RDMA_CM_EVENT_ESTABLISHED:
        established++;
        if (!local_started) {
          if (pthread_create(&local, NULL, local_increments, NULL)) die("pthread_create");
          local_started = 1;
        }
        break;
      case RDMA_CM_EVENT_DISCONNECTED:
        done++;
        rdma_disconnect(id);
        break;
      default:
        fprintf(stderr, "server: unexpected %s\n", rdma_event_str(ev->event));
        exit(2);
    }
    rdma_ack_cm_event(ev);
  }
  if (local_started) {
    __atomic_store_n(&g_stop, 1, __ATOMIC_RELEASE);
    pthread_join(local, NULL);
  }
  printf("counter %llu\n", (unsigned long long)__atomic_load_n(counter, __ATOMIC_SEQ_CST));
  printf("local %llu\n", (unsigned long long)g_local);
  fprintf(stderr, "server: %d connections established, %d disconnected\n", established, done);
  return 0;
}

struct conn {
  struct rdma_cm_id *id;
  uint64_t raddr;
  uint32_t rkey;
  int posted, completed, inflight;
  uint64_t guess;  // cas: the value the next CAS expects
};

static int post(struct conn *c, struct ibv_mr *mr, uint64_t *slot, uint64_t wr_id, int cas,
                uint64_t expect) {
  struct ibv_sge s = {(uint64_t)(uintptr_t)slot, 8, mr->lkey};
  struct ibv_send_wr wr = {.wr_id = wr_id, .sg_list = &s, .num_sge = 1,
                           .send_flags = IBV_SEND_SIGNALED}, *bad;
  wr.opcode = cas ? IBV_WR_ATOMIC_CMP_AND_SWP : IBV_WR_ATOMIC_FETCH_AND_ADD;
  wr.wr.atomic.remote_addr = c->raddr;
  wr.wr.atomic.rkey = c->rkey;
  wr.wr.atomic.compare_add = cas ? expect : 1;
  wr.wr.atomic.swap = expect + 1;
  return ibv_post_send(c->id->qp, &wr, &bad);
}

static int client(const char *host, int port, int nqp, int iters, int cas) {
  struct rdma_event_channel *ec = rdma_create_event_channel();
  struct conn *cs = calloc((size_t)nqp, sizeof *cs);
  uint64_t *res = calloc((size_t)nqp * DEPTH, 8);
  struct ibv_pd *pd = NULL;
  struct ibv_cq *cq = NULL;
  struct ibv_mr *mr = NULL;
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  if (!ec || !cs || !res || inet_pton(AF_INET, host, &a.sin_addr) != 1) die("client setup");
  for (int q = 0; q < nqp; q++) {
    struct conn *c = &cs[q];
    if (rdma_create_id(ec, &c->id, NULL, RDMA_PS_TCP)) die("rdma_create_id");
    if (rdma_resolve_addr(c->id, NULL, (struct sockaddr *)&a, 5000)) die("resolve_addr");
    rdma_ack_cm_event(expect(ec, RDMA_CM_EVENT_ADDR_RESOLVED));
    if (rdma_resolve_route(c->id, 5000)) die("resolve_route");
    rdma_ack_cm_event(expect(ec, RDMA_CM_EVENT_ROUTE_RESOLVED));
    if (!pd) {
      pd = ibv_alloc_pd(c->id->verbs);
      cq = ibv_create_cq(c->id->verbs, nqp * DEPTH + 16, NULL, NULL, 0);
      mr = pd ? ibv_reg_mr(pd, res, (size_t)nqp * DEPTH * 8, IBV_ACCESS_LOCAL_WRITE) : NULL;
      if (!pd || !cq || !mr) die("client resources");
    }
    struct ibv_qp_init_attr qa = {.send_cq = cq, .recv_cq = cq, .qp_type = IBV_QPT_RC};
    qa.cap.max_send_wr = DEPTH;
    qa.cap.max_recv_wr = 1;
    qa.cap.max_send_sge = qa.cap.max_recv_sge = 1;
    if (rdma_create_qp(c->id, pd, &qa)) die("rdma_create_qp");
    struct rdma_conn_param cp = {.responder_resources = DEPTH, .initiator_depth = DEPTH};
    if (rdma_connect(c->id, &cp)) die("rdma_connect");
    struct rdma_cm_event *ev = expect(ec, RDMA_CM_EVENT_ESTABLISHED);
    struct offer o;
    if (ev->param.conn.private_data_len < sizeof o) {
      fprintf(stderr, "no offer in the private data\n");
      return 2;
    }
    memcpy(&o, ev->param.conn.private_data, sizeof o);
    rdma_ack_cm_event(ev);
    c->raddr = be64toh(o.addr);
    c->rkey = ntohl(o.rkey);
  }
  // wr_id = qp * DEPTH + slot; one result slot per outstanding WR.
  const int depth = cas ? 1 : DEPTH;  // a CAS loop has one guess in flight per QP
  int left = nqp;
  for (int q = 0; q < nqp; q++)
    for (int s = 0; s < depth && cs[q].posted < iters; s++) {
      if (post(&cs[q], mr, &res[q * DEPTH + s], (uint64_t)(q * DEPTH + s), cas, 0)) die("post");
      cs[q].posted += !cas;
    }
  while (left) {
    struct ibv_wc wc[32];
    int n = ibv_poll_cq(cq, 32, wc);
    if (n < 0) die("ibv_poll_cq");
    for (int i = 0; i < n; i++) {
      if (wc[i].status != IBV_WC_SUCCESS) {
        fprintf(stderr, "completion %s\n", ibv_wc_status_str(wc[i].status));
        return 3;
      }
      const int q = (int)(wc[i].wr_id / DEPTH), s = (int)(wc[i].wr_id % DEPTH);
      struct conn *c = &cs[q];
      const uint64_t v = res[q * DEPTH + s];
      if (cas) {
        if (v == c->guess) {  // our CAS took: the counter went from v to v+1
          printf("%llu\n", (unsigned long long)v);
          c->completed++;
          c->guess = v + 1;
        } else {
          c->guess = v;  // someone else was first: try again from the value seen
        }
        if (c->completed == iters) {
          left--;
          continue;
        }
        if (post(c, mr, &res[q * DEPTH + s], wc[i].wr_id, 1, c->guess)) die("post");
        continue;
      }
      printf("%llu\n", (unsigned long long)v);
      if (++c->completed == iters) left--;
      if (c->posted < iters) {
        if (post(c, mr, &res[q * DEPTH + s], wc[i].wr_id, 0, 0)) die("post");
        c->posted++;
      }
    }
  }
  fflush(stdout);
  for (int q = 0; q < nqp; q++) rdma_disconnect(cs[q].id);
  for (int q = 0; q < nqp; q++) rdma_ack_cm_event(expect(ec, RDMA_CM_EVENT_DISCONNECTED));
  for (int q = 0; q < nqp; q++) {
    rdma_destroy_qp(cs[q].id);
    rdma_destroy_id(cs[q].id);
  }
  return 0;
}

int main(int argc, char **argv) {
  alarm(240);
  if (argc == 4 && !strcmp(argv[1], "server")) return server(atoi(argv[2]), atoi(argv[3]));
  if ((argc == 6 || argc == 7) && !strcmp(argv[1], "client"))
    return client(argv[2], atoi(argv[3]), atoi(argv[4]), atoi(argv[5]),
                  argc == 7 && !strcmp(argv[6], "cas"));
  fprintf(stderr, "usage: %s server PORT NCONN | client HOST PORT NQP ITERS [cas]\n", argv[0]);
  return 1;
}
