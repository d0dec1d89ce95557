// The rdma_cm connection state machine's transition table (provider/cm/conn.cpp) against a
// second statement of it written here from rdma_cm(7) / rdma_get_cm_event(3) and the iWARP
// rules in docs/architecture.md: every allowed move is accepted by transition(), every other
// pair is refused, and the documented call/event sequences walk through without a refusal.
#include <gtest/gtest.h>

#include <set>
#include <string>
#include <utility>
#include <vector>

#include "provider/cm/cm_internal.hpp"

namespace {

using eca::cm::Core;
using eca::cm::kStates;
using eca::cm::St;
using eca::cm::st_name;
using eca::cm::transition;
using eca::cm::transition_allowed;

// The moves the rdma_cm API and its events make, one per line (what causes it).
const std::vector<std::pair<St, St>> kExpected = {
    {St::Idle, St::Bound},                   // rdma_bind_addr; rdma_listen on an unbound id
    {St::Idle, St::AddrResolved},            // rdma_resolve_addr: ADDR_RESOLVED
    {St::Idle, St::ConnReq},                 // CONNECT_REQUEST: the new id
    {St::Bound, St::AddrResolved},           // rdma_resolve_addr on a bound id
    {St::Bound, St::Listen},                 // rdma_listen
    {St::AddrResolved, St::AddrResolved},    // rdma_resolve_addr again
    {St::AddrResolved, St::RouteResolved},   // rdma_resolve_route: ROUTE_RESOLVED
    {St::RouteResolved, St::RouteResolved},  // rdma_resolve_route again
    {St::RouteResolved, St::Connecting},     // rdma_connect
    {St::Connecting, St::Established},       // ESTABLISHED (QP given)
    {St::Connecting, St::ConnResponse},      // CONNECT_RESPONSE (no QP)
    {St::Connecting, St::Failed},            // REJECTED, UNREACHABLE, CONNECT_ERROR
    {St::ConnResponse, St::Established},     // rdma_establish
    {St::ConnResponse, St::Failed},          // rdma_establish could not attach: CONNECT_ERROR
    {St::ConnResponse, St::Disconnected},    // rdma_disconnect before rdma_establish
    {St::ConnReq, St::Accepting},            // rdma_accept
    {St::ConnReq, St::Failed},               // rdma_reject
    {St::Accepting, St::Established},        // ESTABLISHED
    {St::Accepting, St::Failed},             // CONNECT_ERROR
    {St::Established, St::Disconnecting},    // rdma_disconnect
    {St::Established, St::Disconnected},     // peer closed / QP gone: DISCONNECTED
    {St::Disconnecting, St::Disconnected},   // DISCONNECTED
    {St::Disconnected, St::Disconnected},    // the second report of the same close
};

St state(size_t i) { return static_cast<St>(i); }

TEST(CmState, TableMatchesTheDocumentedMoves) {
  std::set<std::pair<St, St>> expected(kExpected.begin(), kExpected.end());
  ASSERT_EQ(expected.size(), kExpected.size()) << "a move is listed twice";
  int allowed = 0;
  for (size_t f = 0; f < kStates; f++)
    for (size_t t = 0; t < kStates; t++) {
      const bool want = expected.count({state(f), state(t)}) != 0;
      EXPECT_EQ(transition_allowed(state(f), state(t)), want)
          << st_name(state(f)) << " -> " << st_name(state(t));
      allowed += transition_allowed(state(f), state(t));
    }
  EXPECT_EQ(allowed, int(kExpected.size()));
}

TEST(CmState, EveryAllowedMoveIsTaken) {
  for (auto [from, to] : kExpected) {
    Core c;
    c.st = from;
    EXPECT_TRUE(transition(c, to)) << st_name(from) << " -> " << st_name(to);
    EXPECT_EQ(c.st, to) << st_name(from) << " -> " << st_name(to);
  }
}

TEST(CmState, StatesHaveDistinctNames) {
  std::set<std::string> names;
  for (size_t i = 0; i < kStates; i++) {
    ASSERT_NE(st_name(state(i)), nullptr);
    names.insert(st_name(state(i)));
  }
  EXPECT_EQ(names.size(), kStates);
  EXPECT_STREQ(st_name(St::Idle), "idle");
  EXPECT_STREQ(st_name(St::Failed), "failed");
}

// The sequences of rdma_cm(7) (client and server operation) and their iWARP variants.
TEST(CmState, DocumentedSequencesWalkThrough) {
  const std::vector<std::vector<St>> walks = {
      // client: resolve, connect with a QP, disconnect
      {St::Idle, St::AddrResolved, St::RouteResolved, St::Connecting, St::Established,
       St::Disconnecting, St::Disconnected},
      // client without a QP at rdma_connect: CONNECT_RESPONSE, rdma_establish; peer closes
      {St::Idle, St::AddrResolved, St::RouteResolved, St::Connecting, St::ConnResponse,
       St::Established, St::Disconnected},
      // client bound first, then rejected
      {St::Idle, St::Bound, St::AddrResolved, St::RouteResolved, St::Connecting, St::Failed},
      // server: bind, listen
      {St::Idle, St::Bound, St::Listen},
      // server's new id: accept, the client disconnects, then rdma_disconnect
      {St::Idle, St::ConnReq, St::Accepting, St::Established, St::Disconnected,
       St::Disconnected},
      // server's new id rejected
      {St::Idle, St::ConnReq, St::Failed},
  };
  for (const auto &w : walks) {
    Core c;
    ASSERT_EQ(c.st, w.front());
    for (size_t i = 1; i < w.size(); i++)
      ASSERT_TRUE(transition(c, w[i])) << st_name(w[i - 1]) << " -> " << st_name(w[i]);
    EXPECT_EQ(c.st, w.back());
  }
}

// Moves no rdma_cm sequence makes: a connection that skips its set-up, a listener that
// connects, an id that comes back from a failure or a close, or goes back to idle.
const std::vector<std::pair<St, St>> kIllegal = {
    {St::Idle, St::Established},      {St::Idle, St::Connecting},
    {St::Bound, St::Connecting},      {St::Listen, St::Connecting},
    {St::Listen, St::ConnReq},        {St::ConnReq, St::Established},
    {St::Failed, St::Established},    {St::Failed, St::Idle},
    {St::Disconnected, St::Established}, {St::Established, St::Idle},
    {St::Established, St::Connecting}, {St::Disconnecting, St::Established},
};

// With assertions (the default RelWithDebInfo build, debug and sanitizer builds) the process
// stops after the log line naming the move; without (NDEBUG) the move is logged and refused and
// the state stays as it was.
TEST(CmState, IllegalMovesAreRefused) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  for (auto [from, to] : kIllegal) {
    const std::string move = std::string(st_name(from)) + " -> " + st_name(to);
    EXPECT_FALSE(transition_allowed(from, to)) << move;
    Core c;
    c.st = from;
    if constexpr (eca::cm::kCheckTransitions) {
      EXPECT_DEATH((void)transition(c, to), "illegal state transition " + move) << move;
    } else {
      EXPECT_FALSE(transition(c, to)) << move;
      EXPECT_EQ(c.st, from) << move;
    }
  }
}

}  // namespace
