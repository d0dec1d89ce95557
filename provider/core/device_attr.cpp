// Device and port attributes: the limits of the verbs layer, which enforces them itself
// whatever the backend (provider/core/objects.hpp), and on top what each backend's
// DeviceProfile says is its own (firmware version, part id, atomics, STag table, link).
#include <cstdio>

#include "provider/core/backend.hpp"
#include "provider/core/objects.hpp"

namespace eca {
namespace {

// IEEE OUI-style vendor id for this project's adapters ("ECA"); the part id names the backend.
constexpr uint32_t kVendorId = 0x454341;

ibv_mtu mtu_enum(uint32_t bytes) {
  if (bytes >= 4096) return IBV_MTU_4096;
  if (bytes >= 2048) return IBV_MTU_2048;
  if (bytes >= 1024) return IBV_MTU_1024;
  if (bytes >= 512) return IBV_MTU_512;
  return IBV_MTU_256;
}

}  // namespace

void Backend::device_attr(const Device &dev, ibv_device_attr *a) const {
  a->node_guid = dev.guid;
  a->sys_image_guid = dev.guid;
  a->max_mr_size = kMaxMrSize;
  a->page_size_cap = 4096;
  a->vendor_id = kVendorId;
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
  a->max_mr = profile_.max_mr ? profile_.max_mr : kMaxMr;
  a->max_mw = a->max_mr;  // windows and MRs share the STag table
  a->max_pd = kMaxPd;
  a->max_qp_rd_atom = kMaxIrdOrd;
  a->max_qp_init_rd_atom = kMaxIrdOrd;
  a->max_res_rd_atom = kMaxIrdOrd * kMaxQp;
  a->atomic_cap = profile_.atomic_cap;
  a->max_srq = kMaxSrq;
  a->max_srq_wr = kMaxSrqWr;
  a->max_srq_sge = kMaxSge;
  a->max_pkeys = 1;
  a->phys_port_cnt = 1;
  std::snprintf(a->fw_ver, sizeof(a->fw_ver), "%s", profile_.fw_ver);
  a->vendor_part_id = profile_.vendor_part_id;
}

void Backend::port_attr(const Device &dev, ibv_port_attr *p) const {
  p->state = IBV_PORT_ACTIVE;
  p->max_mtu = IBV_MTU_4096;
  p->active_mtu = profile_.active_mtu ? profile_.active_mtu : mtu_enum(dev.netdev_mtu);
  p->active_width = profile_.active_width;
  p->active_speed = profile_.active_speed;
  p->gid_tbl_len = (int)dev.gids().size();
  p->port_cap_flags = IBV_PORT_CM_SUP;
  p->max_msg_sz = (uint32_t)kMaxMsgSize;
  p->pkey_tbl_len = 1;
  p->max_vl_num = 1;
  p->phys_state = 5;  // LinkUp
  p->link_layer = IBV_LINK_LAYER_ETHERNET;
}

}  // namespace eca
