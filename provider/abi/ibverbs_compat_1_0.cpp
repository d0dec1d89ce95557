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

#include "provider/abi/stub.hpp"

// Bind a definition to NAME@VERSION (non-default, hence no "@@").  The GNU
// spelling is required: GCC 12 silently ignores [[gnu::symver(...)]].
#define ECA_COMPAT_SYMVER(name_at_version) __attribute__((symver(name_at_version), used))

using eca::abi::fail_null;

// One IBVERBS_1.0 stub (stub.hpp): NAME@IBVERBS_1.0, defined as NAME_1_0.
#define ECA_STUB_1_0(ret, name, params, fail) \
	ECA_COMPAT_SYMVER(#name "@IBVERBS_1.0") ECA_STUB(ret, name##_1_0, params, fail)

// Copies field F from *src to *dst, converted to the destination's type (the kernel structs
// use plain integers where libibverbs has enums).
#define ECA_COPY(f) dst->f = static_cast<decltype(dst->f)>(src->f)

namespace {

// The path record fields that ib_user_path_rec (kernel) and ibv_sa_path_rec (libibverbs) share
// by name, in either direction, each converted to the destination's type; the GIDs differ in
// shape (raw bytes on the kernel side) and are copied by the callers. Byte order is kept.
template <class Dst, class Src>
void copy_path_rec_fields(Dst *dst, const Src *src)
{
	ECA_COPY(dlid);
	ECA_COPY(slid);
	ECA_COPY(raw_traffic);
	ECA_COPY(flow_label);
	ECA_COPY(hop_limit);
	ECA_COPY(traffic_class);
	ECA_COPY(reversible);
	ECA_COPY(numb_path);
	ECA_COPY(pkey);
	ECA_COPY(sl);
	ECA_COPY(mtu_selector);
	ECA_COPY(mtu);
	ECA_COPY(rate_selector);
	ECA_COPY(rate);
	ECA_COPY(packet_life_time_selector);
	ECA_COPY(packet_life_time);
	ECA_COPY(preference);
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
const char *ibv_get_device_name_1_0(void *)
{
	return static_cast<const char *>(fail_null());
}

ECA_STUB_1_0(__be64, ibv_get_device_guid, (void *), fail_zero())
ECA_STUB_1_0(void *, ibv_open_device, (void *), fail_null())
ECA_STUB_1_0(int, ibv_close_device, (void *), fail_minus_one())
ECA_STUB_1_0(int, ibv_get_async_event, (void *, struct ibv_async_event *), fail_minus_one())
ECA_STUB_1_0(void, ibv_ack_async_event, (struct ibv_async_event *), nothing())
ECA_STUB_1_0(int, ibv_query_device, (void *, struct ibv_device_attr *), fail_errno_value())
ECA_STUB_1_0(int, ibv_query_port, (void *, uint8_t, struct ibv_port_attr *), fail_errno_value())
ECA_STUB_1_0(int, ibv_query_gid, (void *, uint8_t, int, union ibv_gid *), fail_minus_one())
ECA_STUB_1_0(int, ibv_query_pkey, (void *, uint8_t, int, __be16 *), fail_minus_one())
ECA_STUB_1_0(void *, ibv_alloc_pd, (void *), fail_null())
ECA_STUB_1_0(int, ibv_dealloc_pd, (void *), fail_errno_value())
ECA_STUB_1_0(void *, ibv_reg_mr, (void *, void *, size_t, int), fail_null())
ECA_STUB_1_0(int, ibv_dereg_mr, (void *), fail_errno_value())
ECA_STUB_1_0(void *, ibv_create_cq, (void *, int, void *, struct ibv_comp_channel *, int), fail_null())
ECA_STUB_1_0(int, ibv_resize_cq, (void *, int), fail_errno_value())
ECA_STUB_1_0(int, ibv_destroy_cq, (void *), fail_errno_value())
ECA_STUB_1_0(int, ibv_get_cq_event, (struct ibv_comp_channel *, void **, void **), fail_minus_one())
ECA_STUB_1_0(void, ibv_ack_cq_events, (void *, unsigned int), nothing())
ECA_STUB_1_0(void *, ibv_create_srq, (void *, struct ibv_srq_init_attr *), fail_null())
ECA_STUB_1_0(int, ibv_modify_srq, (void *, struct ibv_srq_attr *, int), fail_errno_value())
ECA_STUB_1_0(int, ibv_query_srq, (void *, struct ibv_srq_attr *), fail_errno_value())
ECA_STUB_1_0(int, ibv_destroy_srq, (void *), fail_errno_value())
ECA_STUB_1_0(void *, ibv_create_qp, (void *, void *), fail_null())
ECA_STUB_1_0(int, ibv_query_qp, (void *, struct ibv_qp_attr *, int, void *), fail_errno_value())
ECA_STUB_1_0(int, ibv_modify_qp, (void *, struct ibv_qp_attr *, int), fail_errno_value())
ECA_STUB_1_0(int, ibv_destroy_qp, (void *), fail_errno_value())
ECA_STUB_1_0(void *, ibv_create_ah, (void *, struct ibv_ah_attr *), fail_null())
ECA_STUB_1_0(int, ibv_destroy_ah, (void *), fail_errno_value())
ECA_STUB_1_0(int, ibv_attach_mcast, (void *, union ibv_gid *, uint16_t), fail_errno_value())
ECA_STUB_1_0(int, ibv_detach_mcast, (void *, union ibv_gid *, uint16_t), fail_errno_value())

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
	ECA_COPY(grh.flow_label);
	ECA_COPY(grh.sgid_index);
	ECA_COPY(grh.hop_limit);
	ECA_COPY(grh.traffic_class);

	ECA_COPY(dlid);
	ECA_COPY(sl);
	ECA_COPY(src_path_bits);
	ECA_COPY(static_rate);
	ECA_COPY(is_global);
	ECA_COPY(port_num);
}

// qp_state is deliberately left alone: callers (e.g. rdma_init_qp_attr) set
// the state they asked the kernel about before calling this.
void ibv_copy_qp_attr_from_kern(struct ibv_qp_attr *dst, struct ib_uverbs_qp_attr *src)
{
	ECA_COPY(cur_qp_state);
	ECA_COPY(path_mtu);
	ECA_COPY(path_mig_state);
	ECA_COPY(qkey);
	ECA_COPY(rq_psn);
	ECA_COPY(sq_psn);
	ECA_COPY(dest_qp_num);
	ECA_COPY(qp_access_flags);

	dst->cap.max_send_wr = src->max_send_wr;
	dst->cap.max_recv_wr = src->max_recv_wr;
	dst->cap.max_send_sge = src->max_send_sge;
	dst->cap.max_recv_sge = src->max_recv_sge;
	dst->cap.max_inline_data = src->max_inline_data;

	ibv_copy_ah_attr_from_kern(&dst->ah_attr, &src->ah_attr);
	ibv_copy_ah_attr_from_kern(&dst->alt_ah_attr, &src->alt_ah_attr);

	ECA_COPY(pkey_index);
	ECA_COPY(alt_pkey_index);
	ECA_COPY(en_sqd_async_notify);
	ECA_COPY(sq_draining);
	ECA_COPY(max_rd_atomic);
	ECA_COPY(max_dest_rd_atomic);
	ECA_COPY(min_rnr_timer);
	ECA_COPY(port_num);
	ECA_COPY(timeout);
	ECA_COPY(retry_cnt);
	ECA_COPY(rnr_retry);
	ECA_COPY(alt_port_num);
	ECA_COPY(alt_timeout);
}

void ibv_copy_path_rec_from_kern(struct ibv_sa_path_rec *dst, struct ib_user_path_rec *src)
{
	std::memcpy(dst->dgid.raw, src->dgid, sizeof(dst->dgid.raw));
	std::memcpy(dst->sgid.raw, src->sgid, sizeof(dst->sgid.raw));
	copy_path_rec_fields(dst, src);
}

void ibv_copy_path_rec_to_kern(struct ib_user_path_rec *dst, struct ibv_sa_path_rec *src)
{
	std::memcpy(dst->dgid, src->dgid.raw, sizeof(dst->dgid));
	std::memcpy(dst->sgid, src->sgid.raw, sizeof(dst->sgid));
	copy_path_rec_fields(dst, src);
}

} // extern "C"
