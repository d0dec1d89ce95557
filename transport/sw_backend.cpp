// The software backend: iWARP (MPA/DDP/RDMAP) over the host's TCP stack.
#include <cstdio>
#include <cstring>

#include "provider/core/backend.hpp"
#include "provider/core/log.hpp"
#include "provider/core/objects.hpp"
#include "transport/iwarp_conn.hpp"

namespace eca {
namespace {

// IEEE OUI-style vendor id for this project's adapters ("ECA"); part 1 = software iWARP.
constexpr uint32_t kVendorId = 0x454341;
constexpr uint32_t kPartSoftware = 1;

ibv_mtu mtu_enum(uint32_t bytes) {
  if (bytes >= 4096) return IBV_MTU_4096;
  if (bytes >= 2048) return IBV_MTU_2048;
  if (bytes >= 1024) return IBV_MTU_1024;
  if (bytes >= 512) return IBV_MTU_512;
  return IBV_MTU_256;
}

class SoftwareBackend final : public Backend {
 public:
  BackendKind kind() const override { return BackendKind::Software; }
  const char *device_prefix() const override { return "ecasw"; }

  void device_attr(const Device &dev, ibv_device_attr *a) const override {
    std::snprintf(a->fw_ver, sizeof(a->fw_ver), "eca-sw 0.1");
    a->node_guid = dev.guid;
    a->sys_image_guid = dev.guid;
    a->max_mr_size = kMaxMrSize;
    a->page_size_cap = 4096;
    a->vendor_id = kVendorId;
    a->vendor_part_id = kPartSoftware;
    a->hw_ver = 0;
    a->max_qp = kMaxQp;
    a->max_qp_wr = kMaxQpWr;
    // Memory windows: type 1 and type 2B (a type 2 window serves the QP it was bound through;
    // provider/core/mw.cpp).
    a->device_cap_flags = IBV_DEVICE_CURR_QP_STATE_MOD | IBV_DEVICE_PORT_ACTIVE_EVENT |
                          IBV_DEVICE_MEM_WINDOW | IBV_DEVICE_MEM_WINDOW_TYPE_2B;
    a->max_sge = kMaxSge;
    a->max_sge_rd = kMaxSge;
    a->max_cq = kMaxCq;
    a->max_cqe = kMaxCqe;
    a->max_mr = kMaxMr;
    a->max_mw = kMaxMr;  // windows and MRs share the STag table
    a->max_pd = kMaxPd;
    a->max_qp_rd_atom = kMaxIrdOrd;
    a->max_qp_init_rd_atom = kMaxIrdOrd;
    a->max_res_rd_atom = kMaxIrdOrd * kMaxQp;
    // RFC 7306 atomics run as CPU atomics on the target's memory (transport/atomic.hpp):
    // atomic against every other atomic on this host and against the CPU's own.
    a->atomic_cap = IBV_ATOMIC_GLOB;
    a->max_srq = kMaxSrq;
    a->max_srq_wr = kMaxSrqWr;
    a->max_srq_sge = kMaxSge;
    a->max_pkeys = 1;
    a->phys_port_cnt = 1;
  }

  void port_attr(const Device &dev, ibv_port_attr *p) const override {
    p->state = IBV_PORT_ACTIVE;
    p->max_mtu = IBV_MTU_4096;
    p->active_mtu = mtu_enum(dev.netdev_mtu);
    p->gid_tbl_len = (int)dev.gids().size();
    p->port_cap_flags = IBV_PORT_CM_SUP;
    p->max_msg_sz = (uint32_t)kMaxMsgSize;
    p->pkey_tbl_len = 1;
    p->max_vl_num = 1;
    p->active_width = 2;    // 4X
    p->active_speed = 32;   // EDR: a software link has no fixed signalling rate
    p->phys_state = 5;      // LinkUp
    p->link_layer = IBV_LINK_LAYER_ETHERNET;
  }

  std::unique_ptr<QpEngine> attach(Qp &qp, LlpConnection &&llp) override {
    auto conn = std::make_shared<transport::IwarpConn>(qp, std::move(llp));
    ECA_QP_LOG(Info, qp.qpn, "connected: crc %d ird %u ord %u", (int)conn->crc_on(),
               conn->ird(), conn->ord());
    conn->start();
    return std::make_unique<transport::IwarpEngine>(std::move(conn));
  }
};

}  // namespace

Backend &software_backend() {
  static SoftwareBackend b;
  return b;
}

}  // namespace eca
