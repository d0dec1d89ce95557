// ibverbs_compat_1_0.cpp - historical symbol versions of libibverbs.so.1.
//
// Why this file exists: rdma-core 44's libibverbs.so.1 still exports the
// original libibverbs 1.0 ABI of 33 verbs (ibv_create_qp@IBVERBS_1.0, ...)
// next to their current IBVERBS_1.1 defaults, plus a do-nothing
// ibv_register_driver@IBVERBS_1.1.  A drop-in replacement must export the
// same versioned names (see libibverbs.map), but none of the Debian 12
// consumers we target imports these 1.0 versions, and we do not implement
// the 1.0 object layouts (struct ibv_*_1_0, each wrapping a real object).
// Each 1.0 entry point therefore fails cleanly: errno = EOPNOTSUPP and the
// failure value of its signature (NULL, -1, or the errno value, as the verb
// documents).
//
// The current (default) versions are the ordinary C functions with the plain
// names, defined elsewhere in the library.
//
// Also here: the kernel-ABI marshalling helpers ibv_copy_*_from_kern /
// ibv_copy_path_rec_to_kern.  They are exported by the real library (rdma-core's
// own librdmacm calls them), need no device, and are implemented for real as
// pure field-by-field conversions between the installed uverbs/SA kernel
// structs and the libibverbs structs.

#include <infiniband/sa.h>
#include <infiniband/verbs.h>
#include <rdma/ib_user_sa.h>
#include <rdma/ib_user_verbs.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>

// Bind a definition to NAME@VERSION (non-default, hence no "@@").  The GNU
// spelling is required: GCC 12 silently ignores [[gnu::symver(...)]].
#define ECA_COMPAT_SYMVER(name_at_version) __attribute__((symver(name_at_version), used))

namespace {

// Helpers so every stub reads the same.
inline void *fail_null() noexcept
{
	errno = EOPNOTSUPP;
	return nullptr;
}

inline int fail_minus_one() noexcept
{
	errno = EOPNOTSUPP;
	return -1;
}

inline int fail_errno_value() noexcept
{
	errno = EOPNOTSUPP;
	return EOPNOTSUPP;
}

} // namespace

extern "C" {

// ---------------------------------------------------------------------------
// IBVERBS_1.0 compatibility versions.  The pointer parameters that referred
// to struct ibv_*_1_0 objects are plain void * here; structs that did not
// change between 1.0 and 1.1 keep their real types.
// ---------------------------------------------------------------------------

ECA_COMPAT_SYMVER("ibv_get_device_list@IBVERBS_1.0")
void **ibv_get_device_list_1_0(int *num_devices)
{
	if (num_devices)
		*num_devices = 0;
	return static_cast<void **>(fail_null());
}

ECA_COMPAT_SYMVER("ibv_free_device_list@IBVERBS_1.0")
void ibv_free_device_list_1_0(void ** /*list*/)
{
	// Nothing can have been handed out by ibv_get_device_list@IBVERBS_1.0.
}

ECA_COMPAT_SYMVER("ibv_get_device_name@IBVERBS_1.0")
const char *ibv_get_device_name_1_0(void * /*device*/)
{
	return static_cast<const char *>(fail_null());
}

ECA_COMPAT_SYMVER("ibv_get_device_guid@IBVERBS_1.0")
__be64 ibv_get_device_guid_1_0(void * /*device*/)
{
	errno = EOPNOTSUPP;
	return 0;
}

ECA_COMPAT_SYMVER("ibv_open_device@IBVERBS_1.0")
void *ibv_open_device_1_0(void * /*device*/)
{
	return fail_null();
}

ECA_COMPAT_SYMVER("ibv_close_device@IBVERBS_1.0")
int ibv_close_device_1_0(void * /*context*/)
{
	return fail_minus_one();
}

ECA_COMPAT_SYMVER("ibv_get_async_event@IBVERBS_1.0")
int ibv_get_async_event_1_0(void * /*context*/, struct ibv_async_event * /*event*/)
{
	return fail_minus_one();
}

ECA_COMPAT_SYMVER("ibv_ack_async_event@IBVERBS_1.0")
void ibv_ack_async_event_1_0(struct ibv_async_event * /*event*/)
{
}

ECA_COMPAT_SYMVER("ibv_query_device@IBVERBS_1.0")
int ibv_query_device_1_0(void * /*context*/, struct ibv_device_attr * /*device_attr*/)
{
	return fail_errno_value();
}

ECA_COMPAT_SYMVER("ibv_query_port@IBVERBS_1.0")
int ibv_query_port_1_0(void * /*context*/, uint8_t /*port_num*/,
		       struct ibv_port_attr * /*port_attr*/)
{
	return fail_errno_value();
}

ECA_COMPAT_SYMVER("ibv_query_gid@IBVERBS_1.0")
int ibv_query_gid_1_0(void * /*context*/, uint8_t /*port_num*/, int /*index*/,
		      union ibv_gid * /*gid*/)
{
	return fail_minus_one();
}

ECA_COMPAT_SYMVER("ibv_query_pkey@IBVERBS_1.0")
int ibv_query_pkey_1_0(void * /*context*/, uint8_t /*port_num*/, int /*index*/,
		       __be16 * /*pkey*/)
{
	return fail_minus_one();
}

ECA_COMPAT_SYMVER("ibv_alloc_pd@IBVERBS_1.0")
void *ibv_alloc_pd_1_0(void * /*context*/)
{
	return fail_null();
}

ECA_COMPAT_SYMVER("ibv_dealloc_pd@IBVERBS_1.0")
int ibv_dealloc_pd_1_0(void * /*pd*/)
{
	return fail_errno_value();
}

ECA_COMPAT_SYMVER("ibv_reg_mr@IBVERBS_1.0")
void *ibv_reg_mr_1_0(void * /*pd*/, void * /*addr*/, size_t /*length*/, int /*access*/)
{
	return fail_null();
}

ECA_COMPAT_SYMVER("ibv_dereg_mr@IBVERBS_1.0")
int ibv_dereg_mr_1_0(void * /*mr*/)
{
	return fail_errno_value();
}

ECA_COMPAT_SYMVER("ibv_create_cq@IBVERBS_1.0")
void *ibv_create_cq_1_0(void * /*context*/, int /*cqe*/, void * /*cq_context*/,
			struct ibv_comp_channel * /*channel*/, int /*comp_vector*/)
{
	return fail_null();
}

ECA_COMPAT_SYMVER("ibv_resize_cq@IBVERBS_1.0")
int ibv_resize_cq_1_0(void * /*cq*/, int /*cqe*/)
{
	return fail_errno_value();
}

ECA_COMPAT_SYMVER("ibv_destroy_cq@IBVERBS_1.0")
int ibv_destroy_cq_1_0(void * /*cq*/)
{
	return fail_errno_value();
}

ECA_COMPAT_SYMVER("ibv_get_cq_event@IBVERBS_1.0")
int ibv_get_cq_event_1_0(struct ibv_comp_channel * /*channel*/, void ** /*cq*/,
			 void ** /*cq_context*/)
{
	return fail_minus_one();
}

ECA_COMPAT_SYMVER("ibv_ack_cq_events@IBVERBS_1.0")
void ibv_ack_cq_events_1_0(void * /*cq*/, unsigned int /*nevents*/)
{
}

ECA_COMPAT_SYMVER("ibv_create_srq@IBVERBS_1.0")
void *ibv_create_srq_1_0(void * /*pd*/, struct ibv_srq_init_attr * /*srq_init_attr*/)
{
	return fail_null();
}

ECA_COMPAT_SYMVER("ibv_modify_srq@IBVERBS_1.0")
int ibv_modify_srq_1_0(void * /*srq*/, struct ibv_srq_attr * /*srq_attr*/,
		       int /*srq_attr_mask*/)
{
	return fail_errno_value();
}

ECA_COMPAT_SYMVER("ibv_query_srq@IBVERBS_1.0")
int ibv_query_srq_1_0(void * /*srq*/, struct ibv_srq_attr * /*srq_attr*/)
{
	return fail_errno_value();
}

ECA_COMPAT_SYMVER("ibv_destroy_srq@IBVERBS_1.0")
int ibv_destroy_srq_1_0(void * /*srq*/)
{
	return fail_errno_value();
}

ECA_COMPAT_SYMVER("ibv_create_qp@IBVERBS_1.0")
void *ibv_create_qp_1_0(void * /*pd*/, void * /*qp_init_attr (1.0 layout)*/)
{
	return fail_null();
}

ECA_COMPAT_SYMVER("ibv_query_qp@IBVERBS_1.0")
int ibv_query_qp_1_0(void * /*qp*/, struct ibv_qp_attr * /*attr*/, int /*attr_mask*/,
		     void * /*init_attr (1.0 layout)*/)
{
	return fail_errno_value();
}

ECA_COMPAT_SYMVER("ibv_modify_qp@IBVERBS_1.0")
int ibv_modify_qp_1_0(void * /*qp*/, struct ibv_qp_attr * /*attr*/, int /*attr_mask*/)
{
	return fail_errno_value();
}

ECA_COMPAT_SYMVER("ibv_destroy_qp@IBVERBS_1.0")
int ibv_destroy_qp_1_0(void * /*qp*/)
{
	return fail_errno_value();
}

ECA_COMPAT_SYMVER("ibv_create_ah@IBVERBS_1.0")
void *ibv_create_ah_1_0(void * /*pd*/, struct ibv_ah_attr * /*attr*/)
{
	return fail_null();
}

ECA_COMPAT_SYMVER("ibv_destroy_ah@IBVERBS_1.0")
int ibv_destroy_ah_1_0(void * /*ah*/)
{
	return fail_errno_value();
}

ECA_COMPAT_SYMVER("ibv_attach_mcast@IBVERBS_1.0")
int ibv_attach_mcast_1_0(void * /*qp*/, union ibv_gid * /*gid*/, uint16_t /*lid*/)
{
	return fail_errno_value();
}

ECA_COMPAT_SYMVER("ibv_detach_mcast@IBVERBS_1.0")
int ibv_detach_mcast_1_0(void * /*qp*/, union ibv_gid * /*gid*/, uint16_t /*lid*/)
{
	return fail_errno_value();
}

// ---------------------------------------------------------------------------
// ibv_register_driver@IBVERBS_1.1: the pre-rdma-core-13 provider registration
// hook.  In rdma-core 44 it is a non-default version that does nothing (old
// libfabric usnic builds still call it); ours does nothing either.
// ---------------------------------------------------------------------------

ECA_COMPAT_SYMVER("ibv_register_driver@IBVERBS_1.1")
void ibv_register_driver_1_1(const char * /*name*/, void * /*init_func*/)
{
}

// ---------------------------------------------------------------------------
// Kernel-ABI marshalling helpers (default versions: the first three in
// IBVERBS_1.0, ibv_copy_ah_attr_from_kern in IBVERBS_1.1).  Pure copies
// between the uverbs/SA kernel structs and the libibverbs structs; byte order
// is kept as is (the big-endian fields are big-endian on both sides).
// ---------------------------------------------------------------------------

void ibv_copy_ah_attr_from_kern(struct ibv_ah_attr *dst, struct ib_uverbs_ah_attr *src)
{
	std::memcpy(dst->grh.dgid.raw, src->grh.dgid, sizeof(dst->grh.dgid.raw));
	dst->grh.flow_label = src->grh.flow_label;
	dst->grh.sgid_index = src->grh.sgid_index;
	dst->grh.hop_limit = src->grh.hop_limit;
	dst->grh.traffic_class = src->grh.traffic_class;

	dst->dlid = src->dlid;
	dst->sl = src->sl;
	dst->src_path_bits = src->src_path_bits;
	dst->static_rate = src->static_rate;
	dst->is_global = src->is_global;
	dst->port_num = src->port_num;
}

// qp_state is deliberately left alone: callers (e.g. rdma_init_qp_attr) set
// the state they asked the kernel about before calling this.
void ibv_copy_qp_attr_from_kern(struct ibv_qp_attr *dst, struct ib_uverbs_qp_attr *src)
{
	dst->cur_qp_state = static_cast<enum ibv_qp_state>(src->cur_qp_state);
	dst->path_mtu = static_cast<enum ibv_mtu>(src->path_mtu);
	dst->path_mig_state = static_cast<enum ibv_mig_state>(src->path_mig_state);
	dst->qkey = src->qkey;
	dst->rq_psn = src->rq_psn;
	dst->sq_psn = src->sq_psn;
	dst->dest_qp_num = src->dest_qp_num;
	dst->qp_access_flags = src->qp_access_flags;

	dst->cap.max_send_wr = src->max_send_wr;
	dst->cap.max_recv_wr = src->max_recv_wr;
	dst->cap.max_send_sge = src->max_send_sge;
	dst->cap.max_recv_sge = src->max_recv_sge;
	dst->cap.max_inline_data = src->max_inline_data;

	ibv_copy_ah_attr_from_kern(&dst->ah_attr, &src->ah_attr);
	ibv_copy_ah_attr_from_kern(&dst->alt_ah_attr, &src->alt_ah_attr);

	dst->pkey_index = src->pkey_index;
	dst->alt_pkey_index = src->alt_pkey_index;
	dst->en_sqd_async_notify = src->en_sqd_async_notify;
	dst->sq_draining = src->sq_draining;
	dst->max_rd_atomic = src->max_rd_atomic;
	dst->max_dest_rd_atomic = src->max_dest_rd_atomic;
	dst->min_rnr_timer = src->min_rnr_timer;
	dst->port_num = src->port_num;
	dst->timeout = src->timeout;
	dst->retry_cnt = src->retry_cnt;
	dst->rnr_retry = src->rnr_retry;
	dst->alt_port_num = src->alt_port_num;
	dst->alt_timeout = src->alt_timeout;
}

void ibv_copy_path_rec_from_kern(struct ibv_sa_path_rec *dst, struct ib_user_path_rec *src)
{
	std::memcpy(dst->dgid.raw, src->dgid, sizeof(dst->dgid.raw));
	std::memcpy(dst->sgid.raw, src->sgid, sizeof(dst->sgid.raw));
	dst->dlid = src->dlid;
	dst->slid = src->slid;
	dst->raw_traffic = static_cast<int>(src->raw_traffic);
	dst->flow_label = src->flow_label;
	dst->hop_limit = src->hop_limit;
	dst->traffic_class = src->traffic_class;
	dst->reversible = static_cast<int>(src->reversible);
	dst->numb_path = src->numb_path;
	dst->pkey = src->pkey;
	dst->sl = src->sl;
	dst->mtu_selector = src->mtu_selector;
	dst->mtu = static_cast<uint8_t>(src->mtu);
	dst->rate_selector = src->rate_selector;
	dst->rate = src->rate;
	dst->packet_life_time_selector = src->packet_life_time_selector;
	dst->packet_life_time = src->packet_life_time;
	dst->preference = src->preference;
}

void ibv_copy_path_rec_to_kern(struct ib_user_path_rec *dst, struct ibv_sa_path_rec *src)
{
	std::memcpy(dst->dgid, src->dgid.raw, sizeof(dst->dgid));
	std::memcpy(dst->sgid, src->sgid.raw, sizeof(dst->sgid));
	dst->dlid = src->dlid;
	dst->slid = src->slid;
	dst->raw_traffic = static_cast<__u32>(src->raw_traffic);
	dst->flow_label = src->flow_label;
	dst->hop_limit = src->hop_limit;
	dst->traffic_class = src->traffic_class;
	dst->reversible = static_cast<__u32>(src->reversible);
	dst->numb_path = src->numb_path;
	dst->pkey = src->pkey;
	dst->sl = src->sl;
	dst->mtu_selector = src->mtu_selector;
	dst->mtu = src->mtu;
	dst->rate_selector = src->rate_selector;
	dst->rate = src->rate;
	dst->packet_life_time_selector = src->packet_life_time_selector;
	dst->packet_life_time = src->packet_life_time;
	dst->preference = src->preference;
}

} // extern "C"
