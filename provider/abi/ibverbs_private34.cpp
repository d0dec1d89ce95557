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

namespace {

inline int fail_errno_value() noexcept
{
	errno = EOPNOTSUPP;
	return EOPNOTSUPP;
}

inline void *fail_null() noexcept
{
	errno = EOPNOTSUPP;
	return nullptr;
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

int execute_ioctl(void * /*context*/, void * /*cmd*/)
{
	return fail_errno_value();
}

// ---------------------------------------------------------------------------
// Context setup used by provider alloc_context / uninit paths
// ---------------------------------------------------------------------------

void *_verbs_init_and_alloc_context(void * /*device*/, int /*cmd_fd*/, size_t /*alloc_size*/,
				    void * /*context_offset*/, uint32_t /*driver_id*/)
{
	return fail_null();
}

void verbs_uninit_context(void * /*context*/)
{
}

void verbs_set_ops(void * /*vctx*/, const void * /*ops*/)
{
}

void verbs_init_cq(void * /*cq*/, void * /*context*/, void * /*channel*/, void * /*cq_context*/)
{
}

void *verbs_open_device(void * /*device*/, void * /*private_data*/)
{
	return fail_null();
}

// ---------------------------------------------------------------------------
// Device and context commands
// ---------------------------------------------------------------------------

int ibv_cmd_get_context(void * /*context*/, void * /*cmd*/, size_t /*cmd_size*/,
			void * /*resp*/, size_t /*resp_size*/)
{
	return fail_errno_value();
}

int ibv_cmd_query_context(void * /*ctx*/, void * /*driver*/)
{
	return fail_errno_value();
}

int ibv_cmd_query_device_any(void * /*context*/, const void * /*input*/, void * /*attr*/,
			     size_t /*attr_size*/, void * /*resp*/, size_t * /*resp_size*/)
{
	return fail_errno_value();
}

int ibv_cmd_query_port(void * /*context*/, uint8_t /*port_num*/, void * /*port_attr*/,
		       void * /*cmd*/, size_t /*cmd_size*/)
{
	return fail_errno_value();
}

// ---------------------------------------------------------------------------
// PD, XRCD, MR, MW, DM
// ---------------------------------------------------------------------------

int ibv_cmd_alloc_pd(void * /*context*/, void * /*pd*/, void * /*cmd*/, size_t /*cmd_size*/,
		     void * /*resp*/, size_t /*resp_size*/)
{
	return fail_errno_value();
}

int ibv_cmd_dealloc_pd(void * /*pd*/)
{
	return fail_errno_value();
}

int ibv_cmd_open_xrcd(void * /*context*/, void * /*xrcd*/, int /*vxrcd_size*/,
		      void * /*attr*/, void * /*cmd*/, size_t /*cmd_size*/,
		      void * /*resp*/, size_t /*resp_size*/)
{
	return fail_errno_value();
}

int ibv_cmd_close_xrcd(void * /*xrcd*/)
{
	return fail_errno_value();
}

int ibv_cmd_reg_mr(void * /*pd*/, void * /*addr*/, size_t /*length*/, uint64_t /*hca_va*/,
		   int /*access*/, void * /*vmr*/, void * /*cmd*/, size_t /*cmd_size*/,
		   void * /*resp*/, size_t /*resp_size*/)
{
	return fail_errno_value();
}

int ibv_cmd_rereg_mr(void * /*vmr*/, uint32_t /*flags*/, void * /*addr*/, size_t /*length*/,
		     uint64_t /*hca_va*/, int /*access*/, void * /*pd*/, void * /*cmd*/,
		     size_t /*cmd_sz*/, void * /*resp*/, size_t /*resp_sz*/)
{
	return fail_errno_value();
}

int ibv_cmd_dereg_mr(void * /*vmr*/)
{
	return fail_errno_value();
}

int ibv_cmd_query_mr(void * /*pd*/, void * /*vmr*/, uint32_t /*mr_handle*/)
{
	return fail_errno_value();
}

int ibv_cmd_advise_mr(void * /*pd*/, int /*advice (enum)*/, uint32_t /*flags*/,
		      void * /*sg_list*/, uint32_t /*num_sge*/)
{
	return fail_errno_value();
}

int ibv_cmd_reg_dmabuf_mr(void * /*pd*/, uint64_t /*offset*/, size_t /*length*/,
			  uint64_t /*iova*/, int /*fd*/, int /*access*/, void * /*vmr*/)
{
	return fail_errno_value();
}

int ibv_cmd_alloc_mw(void * /*pd*/, int /*type (enum)*/, void * /*mw*/, void * /*cmd*/,
		     size_t /*cmd_size*/, void * /*resp*/, size_t /*resp_size*/)
{
	return fail_errno_value();
}

int ibv_cmd_dealloc_mw(void * /*mw*/)
{
	return fail_errno_value();
}

int ibv_cmd_alloc_dm(void * /*ctx*/, const void * /*dm_attr*/, void * /*dm*/, void * /*link*/)
{
	return fail_errno_value();
}

int ibv_cmd_free_dm(void * /*dm*/)
{
	return fail_errno_value();
}

int ibv_cmd_reg_dm_mr(void * /*pd*/, void * /*dm*/, uint64_t /*offset*/, size_t /*length*/,
		      unsigned int /*access*/, void * /*vmr*/, void * /*link*/)
{
	return fail_errno_value();
}

// ---------------------------------------------------------------------------
// CQ
// ---------------------------------------------------------------------------

int ibv_cmd_create_cq(void * /*context*/, int /*cqe*/, void * /*channel*/, int /*comp_vector*/,
		      void * /*cq*/, void * /*cmd*/, size_t /*cmd_size*/, void * /*resp*/,
		      size_t /*resp_size*/)
{
	return fail_errno_value();
}

int ibv_cmd_create_cq_ex(void * /*context*/, const void * /*cq_attr*/, void * /*cq*/,
			 void * /*cmd*/, size_t /*cmd_size*/, void * /*resp*/,
			 size_t /*resp_size*/, uint32_t /*cmd_flags*/)
{
	return fail_errno_value();
}

// Success returns a completion count, so failure is -1 (as in rdma-core).
int ibv_cmd_poll_cq(void * /*cq*/, int /*ne*/, void * /*wc*/)
{
	errno = EOPNOTSUPP;
	return -1;
}

int ibv_cmd_req_notify_cq(void * /*cq*/, int /*solicited_only*/)
{
	return fail_errno_value();
}

int ibv_cmd_resize_cq(void * /*cq*/, int /*cqe*/, void * /*cmd*/, size_t /*cmd_size*/,
		      void * /*resp*/, size_t /*resp_size*/)
{
	return fail_errno_value();
}

int ibv_cmd_destroy_cq(void * /*cq*/)
{
	return fail_errno_value();
}

int ibv_cmd_modify_cq(void * /*cq*/, void * /*attr*/, void * /*cmd*/, size_t /*cmd_size*/)
{
	return fail_errno_value();
}

// ---------------------------------------------------------------------------
// SRQ
// ---------------------------------------------------------------------------

int ibv_cmd_create_srq(void * /*pd*/, void * /*srq*/, void * /*attr*/, void * /*cmd*/,
		       size_t /*cmd_size*/, void * /*resp*/, size_t /*resp_size*/)
{
	return fail_errno_value();
}

int ibv_cmd_create_srq_ex(void * /*context*/, void * /*srq*/, void * /*attr_ex*/,
			  void * /*cmd*/, size_t /*cmd_size*/, void * /*resp*/,
			  size_t /*resp_size*/)
{
	return fail_errno_value();
}

int ibv_cmd_modify_srq(void * /*srq*/, void * /*srq_attr*/, int /*srq_attr_mask*/,
		       void * /*cmd*/, size_t /*cmd_size*/)
{
	return fail_errno_value();
}

int ibv_cmd_query_srq(void * /*srq*/, void * /*srq_attr*/, void * /*cmd*/, size_t /*cmd_size*/)
{
	return fail_errno_value();
}

int ibv_cmd_destroy_srq(void * /*srq*/)
{
	return fail_errno_value();
}

// ---------------------------------------------------------------------------
// QP
// ---------------------------------------------------------------------------

int ibv_cmd_create_qp(void * /*pd*/, void * /*qp*/, void * /*attr*/, void * /*cmd*/,
		      size_t /*cmd_size*/, void * /*resp*/, size_t /*resp_size*/)
{
	return fail_errno_value();
}

int ibv_cmd_create_qp_ex(void * /*context*/, void * /*qp*/, void * /*attr_ex*/, void * /*cmd*/,
			 size_t /*cmd_size*/, void * /*resp*/, size_t /*resp_size*/)
{
	return fail_errno_value();
}

int ibv_cmd_create_qp_ex2(void * /*context*/, void * /*qp*/, void * /*qp_attr*/, void * /*cmd*/,
			  size_t /*cmd_size*/, void * /*resp*/, size_t /*resp_size*/)
{
	return fail_errno_value();
}

int ibv_cmd_open_qp(void * /*context*/, void * /*qp*/, int /*vqp_sz*/, void * /*attr*/,
		    void * /*cmd*/, size_t /*cmd_size*/, void * /*resp*/, size_t /*resp_size*/)
{
	return fail_errno_value();
}

int ibv_cmd_query_qp(void * /*qp*/, void * /*qp_attr*/, int /*attr_mask*/,
		     void * /*qp_init_attr*/, void * /*cmd*/, size_t /*cmd_size*/)
{
	return fail_errno_value();
}

int ibv_cmd_modify_qp(void * /*qp*/, void * /*attr*/, int /*attr_mask*/, void * /*cmd*/,
		      size_t /*cmd_size*/)
{
	return fail_errno_value();
}

int ibv_cmd_modify_qp_ex(void * /*qp*/, void * /*attr*/, int /*attr_mask*/, void * /*cmd*/,
			 size_t /*cmd_size*/, void * /*resp*/, size_t /*resp_size*/)
{
	return fail_errno_value();
}

int ibv_cmd_destroy_qp(void * /*qp*/)
{
	return fail_errno_value();
}

// The post calls report the first work request as the failing one.
int ibv_cmd_post_send(void * /*qp*/, void *wr, void **bad_wr)
{
	if (bad_wr)
		*bad_wr = wr;
	return fail_errno_value();
}

int ibv_cmd_post_recv(void * /*qp*/, void *wr, void **bad_wr)
{
	if (bad_wr)
		*bad_wr = wr;
	return fail_errno_value();
}

int ibv_cmd_post_srq_recv(void * /*srq*/, void *wr, void **bad_wr)
{
	if (bad_wr)
		*bad_wr = wr;
	return fail_errno_value();
}

// ---------------------------------------------------------------------------
// AH and multicast
// ---------------------------------------------------------------------------

int ibv_cmd_create_ah(void * /*pd*/, void * /*ah*/, void * /*attr*/, void * /*resp*/,
		      size_t /*resp_size*/)
{
	return fail_errno_value();
}

int ibv_cmd_destroy_ah(void * /*ah*/)
{
	return fail_errno_value();
}

int ibv_cmd_attach_mcast(void * /*qp*/, const void * /*gid*/, uint16_t /*lid*/)
{
	return fail_errno_value();
}

int ibv_cmd_detach_mcast(void * /*qp*/, const void * /*gid*/, uint16_t /*lid*/)
{
	return fail_errno_value();
}

// ---------------------------------------------------------------------------
// Flow steering, flow actions, WQ, RSS indirection tables, counters
// ---------------------------------------------------------------------------

int ibv_cmd_create_flow(void * /*qp*/, void * /*flow_id*/, void * /*flow_attr*/,
			void * /*ucmd*/, size_t /*ucmd_size*/)
{
	return fail_errno_value();
}

int ibv_cmd_destroy_flow(void * /*flow_id*/)
{
	return fail_errno_value();
}

int ibv_cmd_create_flow_action_esp(void * /*ctx*/, void * /*attr*/, void * /*flow_action*/,
				   void * /*driver*/)
{
	return fail_errno_value();
}

int ibv_cmd_modify_flow_action_esp(void * /*flow_action*/, void * /*attr*/, void * /*driver*/)
{
	return fail_errno_value();
}

int ibv_cmd_destroy_flow_action(void * /*action*/)
{
	return fail_errno_value();
}

int ibv_cmd_create_wq(void * /*context*/, void * /*wq_init_attr*/, void * /*wq*/, void * /*cmd*/,
		      size_t /*cmd_size*/, void * /*resp*/, size_t /*resp_size*/)
{
	return fail_errno_value();
}

int ibv_cmd_modify_wq(void * /*wq*/, void * /*attr*/, void * /*cmd*/, size_t /*cmd_size*/)
{
	return fail_errno_value();
}

int ibv_cmd_destroy_wq(void * /*wq*/)
{
	return fail_errno_value();
}

int ibv_cmd_create_rwq_ind_table(void * /*context*/, void * /*init_attr*/,
				 void * /*rwq_ind_table*/, void * /*resp*/, size_t /*resp_size*/)
{
	return fail_errno_value();
}

int ibv_cmd_destroy_rwq_ind_table(void * /*rwq_ind_table*/)
{
	return fail_errno_value();
}

int ibv_cmd_create_counters(void * /*context*/, void * /*init_attr*/, void * /*vcounters*/,
			    void * /*link*/)
{
	return fail_errno_value();
}

int ibv_cmd_destroy_counters(void * /*vcounters*/)
{
	return fail_errno_value();
}

int ibv_cmd_read_counters(void * /*vcounters*/, uint64_t * /*counters_value*/,
			  uint32_t /*ncounters*/, uint32_t /*flags*/, void * /*link*/)
{
	return fail_errno_value();
}

} // extern "C"
