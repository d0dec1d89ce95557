/* mpi_check: an MPI test and benchmark program for eca-iwarp (built with mpicc).
 *
 * Test mode (default) runs, with every byte of every message verified:
 *   pingpong   - ranks (2k, 2k+1) exchange messages of odd sizes from 0 B to 4 MiB
 *   stream     - the even rank of each pair streams a window of non-blocking sends
 *   allreduce  - MPI_SUM over int64 vectors of odd lengths (up to 4 MiB), known result
 *   bcast      - every rank in turn broadcasts odd sizes up to 4 MiB
 *   unexpected - messages (small and large) sent before their receives are posted,
 *                received in reverse tag order, some through MPI_ANY_SOURCE/MPI_Probe
 * It prints "mpi_check: PASS ranks=N" on rank 0 and exits 0; any mismatch prints what
 * differed and where, and the job ends with a non-zero status (MPI_Abort).
 *
 * Benchmark mode (--bench [ITERS [ROUNDS]], 2 ranks; defaults 2000 and 20) prints key=value
 * lines on rank 0:
 *   first_exchange_us  the first 1-byte ping-pong after MPI_Init (connection set-up)
 *   lat8_us            half the round trip of an 8-byte ping-pong (average of ITERS)
 *   bw1m_MBps          1 MiB streaming bandwidth (ROUNDS windows of 16 sends), MB/s (10^6 B/s)
 */
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int g_rank, g_size;

static void die(const char *what, size_t off, int got, int want) {
  fprintf(stderr, "mpi_check: rank %d: %s: mismatch at byte %zu: got 0x%02x, want 0x%02x\n",
          g_rank, what, off, got & 0xff, want & 0xff);
  fflush(stderr);
  MPI_Abort(MPI_COMM_WORLD, 2);
}

/* The byte at offset i of message `tag` from `src`: depends on everything, so misplaced,
 * duplicated or stale data shows up. */
static inline unsigned char pattern(int src, int tag, size_t i) {
  uint32_t x = (uint32_t)i * 2654435761u ^ (uint32_t)(src * 7919 + tag * 104729);
  return (unsigned char)(x ^ (x >> 13) ^ (x >> 24));
}

static void fill(unsigned char *b, size_t n, int src, int tag) {
  for (size_t i = 0; i < n; ++i) b[i] = pattern(src, tag, i);
}

static void check(const char *what, const unsigned char *b, size_t n, int src, int tag) {
  for (size_t i = 0; i < n; ++i)
    if (b[i] != pattern(src, tag, i)) die(what, i, b[i], pattern(src, tag, i));
}

static void check_count(const char *what, MPI_Status *st, size_t want) {
  int got = -1;
  MPI_Get_count(st, MPI_BYTE, &got);
  if (got < 0 || (size_t)got != want) {
    fprintf(stderr, "mpi_check: rank %d: %s: received %d bytes, want %zu\n", g_rank, what, got,
            want);
    MPI_Abort(MPI_COMM_WORLD, 2);
  }
}

static const size_t kSizes[] = {0, 1, 7, 8, 63, 1000, 4093, 65537, 262147, 1048579, 4194304};
#define NSIZES (sizeof kSizes / sizeof kSizes[0])
#define MAXSZ (4u << 20)

static unsigned char *xmalloc(size_t n) {
  unsigned char *p = malloc(n ? n : 1);
  if (!p) {
    fprintf(stderr, "mpi_check: out of memory\n");
    MPI_Abort(MPI_COMM_WORLD, 3);
  }
  return p;
}

static int peer_of(int r) { return (r % 2 == 0) ? r + 1 : r - 1; }

static void test_pingpong(void) {
  int peer = peer_of(g_rank);
  if (peer >= g_size) return;
  unsigned char *s = xmalloc(MAXSZ), *r = xmalloc(MAXSZ);
  for (size_t k = 0; k < NSIZES; ++k) {
    size_t n = kSizes[k];
    for (int it = 0; it < 3; ++it) {
      int tag = (int)(k * 16 + it);
      MPI_Status st;
      if (g_rank % 2 == 0) {
        fill(s, n, g_rank, tag);
        MPI_Send(s, (int)n, MPI_BYTE, peer, tag, MPI_COMM_WORLD);
        memset(r, 0xa5, n);
        MPI_Recv(r, (int)n, MPI_BYTE, peer, tag, MPI_COMM_WORLD, &st);
        check_count("pingpong", &st, n);
        check("pingpong reply", r, n, peer, tag);
      } else {
        memset(r, 0x5a, n);
        MPI_Recv(r, (int)n, MPI_BYTE, peer, tag, MPI_COMM_WORLD, &st);
        check_count("pingpong", &st, n);
        check("pingpong", r, n, peer, tag);
        fill(s, n, g_rank, tag);
        MPI_Send(s, (int)n, MPI_BYTE, peer, tag, MPI_COMM_WORLD);
      }
    }
  }
  free(s);
  free(r);
}

#define WINDOW 16

static void test_stream(void) {
  int peer = peer_of(g_rank);
  if (peer >= g_size) return;
  static const size_t sizes[] = {3, 4097, 65539, 1048576, 4194301};
  for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; ++k) {
    size_t n = sizes[k];
    int count = n > (1u << 20) ? 4 : WINDOW;
    unsigned char *b = xmalloc(n * (size_t)count);
    MPI_Request rq[WINDOW];
    MPI_Status st[WINDOW];
    if (g_rank % 2 == 0) {
      for (int i = 0; i < count; ++i) {
        fill(b + i * n, n, g_rank, 1000 + i);
        MPI_Isend(b + i * n, (int)n, MPI_BYTE, peer, 1000 + i, MPI_COMM_WORLD, &rq[i]);
      }
      MPI_Waitall(count, rq, st);
    } else {
      memset(b, 0x33, n * (size_t)count);
      for (int i = 0; i < count; ++i)
        MPI_Irecv(b + i * n, (int)n, MPI_BYTE, peer, 1000 + i, MPI_COMM_WORLD, &rq[i]);
      MPI_Waitall(count, rq, st);
      for (int i = 0; i < count; ++i) {
        check_count("stream", &st[i], n);
        check("stream", b + i * n, n, peer, 1000 + i);
      }
    }
    free(b);
  }
  MPI_Barrier(MPI_COMM_WORLD);
}

static void test_allreduce(void) {
  static const size_t counts[] = {1, 3, 1001, 131071, 524288};  /* 524288 int64 = 4 MiB */
  for (size_t k = 0; k < sizeof counts / sizeof counts[0]; ++k) {
    size_t n = counts[k];
    int64_t *in = (int64_t *)xmalloc(n * 8), *out = (int64_t *)xmalloc(n * 8);
    for (size_t i = 0; i < n; ++i) in[i] = (int64_t)(i * 31 + 7) * (g_rank + 1) - (int64_t)k;
    MPI_Allreduce(in, out, (int)n, MPI_INT64_T, MPI_SUM, MPI_COMM_WORLD);
    int64_t ranksum = (int64_t)g_size * (g_size + 1) / 2;
    for (size_t i = 0; i < n; ++i) {
      int64_t want = (int64_t)(i * 31 + 7) * ranksum - (int64_t)k * g_size;
      if (out[i] != want) {
        fprintf(stderr, "mpi_check: rank %d: allreduce(%zu) element %zu: got %lld, want %lld\n",
                g_rank, n, i, (long long)out[i], (long long)want);
        MPI_Abort(MPI_COMM_WORLD, 2);
      }
    }
    free(in);
    free(out);
  }
}

static void test_bcast(void) {
  static const size_t sizes[] = {1, 13, 8191, 65535, 1048573, 4194304};
  unsigned char *b = xmalloc(MAXSZ);
  for (int root = 0; root < g_size; ++root)
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; ++k) {
      size_t n = sizes[k];
      int tag = 2000 + (int)k;
      if (g_rank == root)
        fill(b, n, root, tag);
      else
        memset(b, 0x77, n);
      MPI_Bcast(b, (int)n, MPI_BYTE, root, MPI_COMM_WORLD);
      check("bcast", b, n, root, tag);
    }
  free(b);
}

/* The odd rank of each pair sends everything first; its even peer posts the receives only
 * after a barrier, in reverse order, so every message arrives unexpected. */
#define NUNEXP 24
static void test_unexpected(void) {
  int peer = peer_of(g_rank);
  if (peer >= g_size) {
    MPI_Barrier(MPI_COMM_WORLD);
    MPI_Barrier(MPI_COMM_WORLD);
    return;
  }
  size_t sz[NUNEXP];
  size_t total = 0;
  for (int i = 0; i < NUNEXP; ++i) {
    sz[i] = (i % 6 == 5) ? (size_t)(1u << 20) + (size_t)i * 3 : (size_t)(i * 37 + 1);
    total += sz[i];
  }
  unsigned char *b = xmalloc(total);
  MPI_Request rq[NUNEXP];
  if (g_rank % 2 == 1) {
    size_t off = 0;
    for (int i = 0; i < NUNEXP; ++i) {
      fill(b + off, sz[i], g_rank, 3000 + i);
      MPI_Isend(b + off, (int)sz[i], MPI_BYTE, peer, 3000 + i, MPI_COMM_WORLD, &rq[i]);
      off += sz[i];
    }
    MPI_Barrier(MPI_COMM_WORLD);  /* the receives are posted only after this */
    MPI_Waitall(NUNEXP, rq, MPI_STATUSES_IGNORE);
  } else {
    MPI_Barrier(MPI_COMM_WORLD);
    size_t off = total;
    for (int i = NUNEXP - 1; i >= 0; --i) {
      off -= sz[i];
      MPI_Status st;
      memset(b + off, 0x11, sz[i]);
      if (i % 4 == 0) {
        /* Probe first, then receive from whoever the probe named. */
        MPI_Probe(MPI_ANY_SOURCE, 3000 + i, MPI_COMM_WORLD, &st);
        check_count("unexpected probe", &st, sz[i]);
        MPI_Recv(b + off, (int)sz[i], MPI_BYTE, st.MPI_SOURCE, 3000 + i, MPI_COMM_WORLD, &st);
      } else {
        MPI_Recv(b + off, (int)sz[i], MPI_BYTE, peer, 3000 + i, MPI_COMM_WORLD, &st);
      }
      check_count("unexpected", &st, sz[i]);
      if (st.MPI_SOURCE != peer) {
        fprintf(stderr, "mpi_check: rank %d: unexpected: source %d, want %d\n", g_rank,
                st.MPI_SOURCE, peer);
        MPI_Abort(MPI_COMM_WORLD, 2);
      }
      check("unexpected", b + off, sz[i], peer, 3000 + i);
    }
  }
  free(b);
  MPI_Barrier(MPI_COMM_WORLD);
}

static void bench(int iters, int rounds) {
  if (g_size != 2) {
    if (g_rank == 0) fprintf(stderr, "mpi_check --bench needs exactly 2 ranks\n");
    MPI_Abort(MPI_COMM_WORLD, 4);
  }
  int peer = 1 - g_rank;
  unsigned char one = 0x5c;
  MPI_Status st;
  /* 1. The very first exchange: includes setting up the connection. */
  double t0 = MPI_Wtime();
  if (g_rank == 0) {
    MPI_Send(&one, 1, MPI_BYTE, peer, 1, MPI_COMM_WORLD);
    MPI_Recv(&one, 1, MPI_BYTE, peer, 1, MPI_COMM_WORLD, &st);
  } else {
    MPI_Recv(&one, 1, MPI_BYTE, peer, 1, MPI_COMM_WORLD, &st);
    MPI_Send(&one, 1, MPI_BYTE, peer, 1, MPI_COMM_WORLD);
  }
  double first = MPI_Wtime() - t0;
  if (one != 0x5c) die("first exchange", 0, one, 0x5c);

  /* 2. 8-byte ping-pong latency. */
  unsigned char m[8];
  const int warm = iters / 10 + 1;
  for (int i = 0; i < warm + iters; ++i) {
    if (i == warm) {
      MPI_Barrier(MPI_COMM_WORLD);
      t0 = MPI_Wtime();
    }
    if (g_rank == 0) {
      fill(m, 8, 0, i & 0xff);
      MPI_Send(m, 8, MPI_BYTE, peer, 2, MPI_COMM_WORLD);
      MPI_Recv(m, 8, MPI_BYTE, peer, 2, MPI_COMM_WORLD, &st);
      check("lat8", m, 8, 1, i & 0xff);
    } else {
      MPI_Recv(m, 8, MPI_BYTE, peer, 2, MPI_COMM_WORLD, &st);
      check("lat8", m, 8, 0, i & 0xff);
      fill(m, 8, 1, i & 0xff);
      MPI_Send(m, 8, MPI_BYTE, peer, 2, MPI_COMM_WORLD);
    }
  }
  double lat = (MPI_Wtime() - t0) / iters / 2;

  /* 3. 1 MiB streaming bandwidth: windows of WINDOW sends, one ack per window. */
  const size_t n = 1u << 20;
  unsigned char *b = xmalloc(n * WINDOW);
  if (g_rank == 0)
    for (int i = 0; i < WINDOW; ++i) fill(b + i * n, n, 0, 4000 + i);
  MPI_Request rq[WINDOW];
  double bw_t = 0;
  for (int r = 0; r < rounds + 2; ++r) {
    if (r == 2) {
      MPI_Barrier(MPI_COMM_WORLD);
      t0 = MPI_Wtime();
    }
    if (g_rank == 0) {
      for (int i = 0; i < WINDOW; ++i)
        MPI_Isend(b + i * n, (int)n, MPI_BYTE, peer, 4000 + i, MPI_COMM_WORLD, &rq[i]);
      MPI_Waitall(WINDOW, rq, MPI_STATUSES_IGNORE);
      MPI_Recv(&one, 1, MPI_BYTE, peer, 5, MPI_COMM_WORLD, &st);
    } else {
      for (int i = 0; i < WINDOW; ++i)
        MPI_Irecv(b + i * n, (int)n, MPI_BYTE, peer, 4000 + i, MPI_COMM_WORLD, &rq[i]);
      MPI_Waitall(WINDOW, rq, MPI_STATUSES_IGNORE);
      if (r == 0 || r == rounds + 1)  /* verify every byte of the first and last window */
        for (int i = 0; i < WINDOW; ++i) check("bw1m", b + i * n, n, 0, 4000 + i);
      MPI_Send(&one, 1, MPI_BYTE, peer, 5, MPI_COMM_WORLD);
    }
  }
  bw_t = MPI_Wtime() - t0;
  double bw = (double)n * WINDOW * rounds / bw_t / 1e6;
  free(b);
  if (g_rank == 0) {
    printf("first_exchange_us=%.1f\nlat8_us=%.2f\nbw1m_MBps=%.1f\n", first * 1e6, lat * 1e6, bw);
    fflush(stdout);
  }
}

int main(int argc, char **argv) {
  MPI_Init(&argc, &argv);
  MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
  MPI_Comm_size(MPI_COMM_WORLD, &g_size);
  int do_bench = argc > 1 && strcmp(argv[1], "--bench") == 0;
  if (do_bench) {
    int iters = argc > 2 ? atoi(argv[2]) : 2000, rounds = argc > 3 ? atoi(argv[3]) : 20;
    if (iters < 1 || rounds < 1) {
      if (g_rank == 0) fprintf(stderr, "usage: mpi_check [--bench [ITERS [ROUNDS]]]\n");
      MPI_Abort(MPI_COMM_WORLD, 4);
    }
    bench(iters, rounds);
  } else {
    if (g_size < 2) {
      if (g_rank == 0) fprintf(stderr, "mpi_check needs at least 2 ranks\n");
      MPI_Abort(MPI_COMM_WORLD, 4);
    }
    test_pingpong();
    test_stream();
    test_allreduce();
    test_bcast();
    test_unexpected();
    MPI_Barrier(MPI_COMM_WORLD);
    if (g_rank == 0) {
      printf("mpi_check: PASS ranks=%d\n", g_size);
      fflush(stdout);
    }
  }
  MPI_Finalize();
  return 0;
}
