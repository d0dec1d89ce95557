// ibverbs_private34.cpp - the IBVERBS_PRIVATE_34 provider interface.
//
// Why this file exists: Debian 12 installs rdma-core's hardware providers
// (libmlx5.so.1, libefa.so.1), and programs such as perftest and libfabric
// are linked against them.  Those providers import dozens of
// IBVERBS_PRIVATE_34 symbols from libibverbs.so.1 and are bound immediately
// at load time, so our libibverbs.so.1 must export every one of them or the
// program does not start.  Our devices are not served by those providers:
// nothing here is reached while our own devices are in use.  If a foreign
// provider does call in, it gets a clean failure instead of a crash:
//   - int-returning ibv_cmd_* calls and execute_ioctl return EOPNOTSUPP
//     (positive errno value, as rdma-core's do) and also set errno;
//     ibv_cmd_poll_cq, whose success value is a count, returns -1;
//   - pointer-returning calls set errno = EOPNOTSUPP and return NULL;
//   - the void helpers (verbs_set_ops, verbs_init_cq, verbs_uninit_context)
//     do nothing;
//   - __ioctl_final_num_attrs is a pure helper and is implemented for real.
//
// rdma-core's driver.h is not installed, so the struct pointer parameters of
// the real prototypes are declared as void * here.  That is ABI-identical on
// every Linux target: all object pointers share one representation and
// calling convention.  Scalar parameters keep their real types.
//
// ibv_query_gid_type, __verbs_log, verbs_register_driver_34 and
// ibv_read_ibdev_sysfs_file are also IBVERBS_PRIVATE_34 but are real
// implementations living elsewhere.

#include <rdma/rdma_user_ioctl_cmds.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>

#include "provider/abi/stub.hpp"

namespace {

using eca::abi::fail_errno_value;

// The post calls report the first work request as the failing one.
inline int fail_post(void *wr, void **bad_wr) noexcept
{
	if (bad_wr)
		*bad_wr = wr;
	return fail_errno_value();
}

// Leading part of rdma-core's struct ibv_command_buffer (the stack-allocated
// ioctl attribute block that providers chain together), as far as the
// attribute array that follows the ioctl header.  Only the layout matters.
struct command_buffer_head {
	command_buffer_head *next;
	ib_uverbs_attr *next_attr;
	ib_uverbs_attr *last_attr;
	uint8_t uhw_in_idx;
	uint8_t uhw_out_idx;
	uint8_t uhw_in_headroom_dwords;
	uint8_t uhw_out_headroom_dwords;
	uint8_t flag_bits; // buffer_error:1, fallback_require_ex:1, fallback_ioctl_only:1
	alignas(ib_uverbs_ioctl_hdr) unsigned char hdr[sizeof(ib_uverbs_ioctl_hdr)];
};

static_assert(offsetof(command_buffer_head, hdr) == 32, "ibv_command_buffer layout");
static_assert(offsetof(ib_uverbs_ioctl_hdr, attrs) == sizeof(ib_uverbs_ioctl_hdr),
	      "ib_uverbs_ioctl_hdr: attrs[] must follow the fixed header");

} // namespace

extern "C" {

// Data object, not a function: a 1-byte bool in .bss, exactly as in rdma-core.
// Providers may set it to let destroy calls succeed after device disassociation.
bool verbs_allow_disassociate_destroy = false;

// ---------------------------------------------------------------------------
// ioctl command-buffer plumbing
// ---------------------------------------------------------------------------

// Total number of attributes in num_attrs plus every linked block: each block
// has filled the attribute slots from the start of its array up to next_attr.
unsigned int __ioctl_final_num_attrs(unsigned int num_attrs, void *link)
{
	for (auto *blk = static_cast<command_buffer_head *>(link); blk; blk = blk->next) {
		const auto *first = reinterpret_cast<const ib_uverbs_attr *>(
			blk->hdr + offsetof(ib_uverbs_ioctl_hdr, attrs));
		num_attrs += static_cast<unsigned int>(blk->next_attr - first);
	}
	return num_attrs;
}
ECA_STUB(int, execute_ioctl, (void *, void *), fail_errno_value())

// ---------------------------------------------------------------------------
// Context setup used by provider alloc_context / uninit paths
// ---------------------------------------------------------------------------
ECA_STUB(void *, _verbs_init_and_alloc_context, (void *, int, size_t, void *, uint32_t), fail_null())

ECA_STUB(void, verbs_uninit_context, (void *), nothing())
ECA_STUB(void, verbs_set_ops, (void *, const void *), nothing())
ECA_STUB(void, verbs_init_cq, (void *, void *, void *, void *), nothing())
ECA_STUB(void *, verbs_open_device, (void *, void *), fail_null())

// ---------------------------------------------------------------------------
// Device and context commands
// ---------------------------------------------------------------------------
ECA_STUB(int, ibv_cmd_get_context, (void *, void *, size_t, void *, size_t), fail_errno_value())
ECA_STUB(int, ibv_cmd_query_context, (void *, void *), fail_errno_value())
ECA_STUB(int, ibv_cmd_query_device_any, (void *, const void *, void *, size_t, void *, size_t *), fail_errno_value())
ECA_STUB(int, ibv_cmd_query_port, (void *, uint8_t, void *, void *, size_t), fail_errno_value())

// ---------------------------------------------------------------------------
// PD, XRCD, MR, MW, DM
// ---------------------------------------------------------------------------
ECA_STUB(int, ibv_cmd_alloc_pd, (void *, void *, void *, size_t, void *, size_t), fail_errno_value())
ECA_STUB(int, ibv_cmd_dealloc_pd, (void *), fail_errno_value())
ECA_STUB(int, ibv_cmd_open_xrcd, (void *, void *, int, void *, void *, size_t, void *, size_t), fail_errno_value())
ECA_STUB(int, ibv_cmd_close_xrcd, (void *), fail_errno_value())
ECA_STUB(int, ibv_cmd_reg_mr, (void *, void *, size_t, uint64_t, int, void *, void *, size_t, void *, size_t), fail_errno_value())
ECA_STUB(int, ibv_cmd_rereg_mr, (void *, uint32_t, void *, size_t, uint64_t, int, void *, void *, size_t, void *, size_t), fail_errno_value())
ECA_STUB(int, ibv_cmd_dereg_mr, (void *), fail_errno_value())
ECA_STUB(int, ibv_cmd_query_mr, (void *, void *, uint32_t), fail_errno_value())
ECA_STUB(int, ibv_cmd_advise_mr, (void *, int /* enum */, uint32_t, void *, uint32_t), fail_errno_value())
ECA_STUB(int, ibv_cmd_reg_dmabuf_mr, (void *, uint64_t, size_t, uint64_t, int, int, void *), fail_errno_value())
ECA_STUB(int, ibv_cmd_alloc_mw, (void *, int /* enum */, void *, void *, size_t, void *, size_t), fail_errno_value())
ECA_STUB(int, ibv_cmd_dealloc_mw, (void *), fail_errno_value())
ECA_STUB(int, ibv_cmd_alloc_dm, (void *, const void *, void *, void *), fail_errno_value())
ECA_STUB(int, ibv_cmd_free_dm, (void *), fail_errno_value())
ECA_STUB(int, ibv_cmd_reg_dm_mr, (void *, void *, uint64_t, size_t, unsigned int, void *, void *), fail_errno_value())

// ---------------------------------------------------------------------------
// CQ
// ---------------------------------------------------------------------------
ECA_STUB(int, ibv_cmd_create_cq, (void *, int, void *, int, void *, void *, size_t, void *, size_t), fail_errno_value())
ECA_STUB(int, ibv_cmd_create_cq_ex, (void *, const void *, void *, void *, size_t, void *, size_t, uint32_t), fail_errno_value())
// Success returns a completion count, so failure is -1 (as in rdma-core).
ECA_STUB(int, ibv_cmd_poll_cq, (void *, int, void *), fail_minus_one())
ECA_STUB(int, ibv_cmd_req_notify_cq, (void *, int), fail_errno_value())
ECA_STUB(int, ibv_cmd_resize_cq, (void *, int, void *, size_t, void *, size_t), fail_errno_value())
ECA_STUB(int, ibv_cmd_destroy_cq, (void *), fail_errno_value())
ECA_STUB(int, ibv_cmd_modify_cq, (void *, void *, void *, size_t), fail_errno_value())

// ---------------------------------------------------------------------------
// SRQ
// ---------------------------------------------------------------------------
ECA_STUB(int, ibv_cmd_create_srq, (void *, void *, void *, void *, size_t, void *, size_t), fail_errno_value())
ECA_STUB(int, ibv_cmd_create_srq_ex, (void *, void *, void *, void *, size_t, void *, size_t), fail_errno_value())
ECA_STUB(int, ibv_cmd_modify_srq, (void *, void *, int, void *, size_t), fail_errno_value())
ECA_STUB(int, ibv_cmd_query_srq, (void *, void *, void *, size_t), fail_errno_value())
ECA_STUB(int, ibv_cmd_destroy_srq, (void *), fail_errno_value())

// ---------------------------------------------------------------------------
// QP
// ---------------------------------------------------------------------------
ECA_STUB(int, ibv_cmd_create_qp, (void *, void *, void *, void *, size_t, void *, size_t), fail_errno_value())
ECA_STUB(int, ibv_cmd_create_qp_ex, (void *, void *, void *, void *, size_t, void *, size_t), fail_errno_value())
ECA_STUB(int, ibv_cmd_create_qp_ex2, (void *, void *, void *, void *, size_t, void *, size_t), fail_errno_value())
ECA_STUB(int, ibv_cmd_open_qp, (void *, void *, int, void *, void *, size_t, void *, size_t), fail_errno_value())
ECA_STUB(int, ibv_cmd_query_qp, (void *, void *, int, void *, void *, size_t), fail_errno_value())
ECA_STUB(int, ibv_cmd_modify_qp, (void *, void *, int, void *, size_t), fail_errno_value())
ECA_STUB(int, ibv_cmd_modify_qp_ex, (void *, void *, int, void *, size_t, void *, size_t), fail_errno_value())
ECA_STUB(int, ibv_cmd_destroy_qp, (void *), fail_errno_value())

int ibv_cmd_post_send(void * /*qp*/, void *wr, void **bad_wr) { return fail_post(wr, bad_wr); }
int ibv_cmd_post_recv(void * /*qp*/, void *wr, void **bad_wr) { return fail_post(wr, bad_wr); }
int ibv_cmd_post_srq_recv(void * /*srq*/, void *wr, void **bad_wr) { return fail_post(wr, bad_wr); }

// ---------------------------------------------------------------------------
// AH and multicast
// ---------------------------------------------------------------------------
ECA_STUB(int, ibv_cmd_create_ah, (void *, void *, void *, void *, size_t), fail_errno_value())
ECA_STUB(int, ibv_cmd_destroy_ah, (void *), fail_errno_value())
ECA_STUB(int, ibv_cmd_attach_mcast, (void *, const void *, uint16_t), fail_errno_value())
ECA_STUB(int, ibv_cmd_detach_mcast, (void *, const void *, uint16_t), fail_errno_value())

// ---------------------------------------------------------------------------
// Flow steering, flow actions, WQ, RSS indirection tables, counters
// ---------------------------------------------------------------------------
ECA_STUB(int, ibv_cmd_create_flow, (void *, void *, void *, void *, size_t), fail_errno_value())
ECA_STUB(int, ibv_cmd_destroy_flow, (void *), fail_errno_value())
ECA_STUB(int, ibv_cmd_create_flow_action_esp, (void *, void *, void *, void *), fail_errno_value())
ECA_STUB(int, ibv_cmd_modify_flow_action_esp, (void *, void *, void *), fail_errno_value())
ECA_STUB(int, ibv_cmd_destroy_flow_action, (void *), fail_errno_value())
ECA_STUB(int, ibv_cmd_create_wq, (void *, void *, void *, void *, size_t, void *, size_t), fail_errno_value())
ECA_STUB(int, ibv_cmd_modify_wq, (void *, void *, void *, size_t), fail_errno_value())
ECA_STUB(int, ibv_cmd_destroy_wq, (void *), fail_errno_value())
ECA_STUB(int, ibv_cmd_create_rwq_ind_table, (void *, void *, void *, void *, size_t), fail_errno_value())
ECA_STUB(int, ibv_cmd_destroy_rwq_ind_table, (void *), fail_errno_value())
ECA_STUB(int, ibv_cmd_create_counters, (void *, void *, void *, void *), fail_errno_value())
ECA_STUB(int, ibv_cmd_destroy_counters, (void *), fail_errno_value())
ECA_STUB(int, ibv_cmd_read_counters, (void *, uint64_t *, uint32_t, uint32_t, void *), fail_errno_value())

} // extern "C"
