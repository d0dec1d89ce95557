// ORD/IRD: the ORD-0 refusal both engines share (engine/ord_ird.hpp).
#include "engine/ord_ird.hpp"

#include "provider/core/log.hpp"
#include "provider/core/objects.hpp"

namespace eca::engine {

void refuse_ord0(Qp &qp, SendWqe *w) {
  ECA_QP_LOG(Warn, qp.qpn, "%s posted on a connection with ORD 0 (wr_id %llu)",
             w->opcode == IBV_WR_RDMA_READ ? "RDMA READ" : "atomic",
             (unsigned long long)w->wr_id);
  qp.sq_done(w, kOrd0Status);
}

}  // namespace eca::engine
