// rdma_cm core (compiled into libeca-core): event channels, communication identifiers, the
// connection state machine, address resolution and the iWARP connection setup (TCP + MPA,
// connect/mpa_cm.hpp) that ends by handing the stream to the QP's device backend.
//
// provider/cm/rdmacm_api.cpp is the extern "C" shell (librdmacm.so.1): it translates the
// positive errno these functions return into the rdma_* convention (-1 + errno) and creates
// verbs objects (QPs, CQs, SRQs, PDs) through the public ibv_* functions, which libeca-core
// cannot call. Everything else lives here.
//
// Threading: all connection state is owned by the process-wide progress thread
// (runtime::Progress); API calls post their work there with run_sync and return. Events
// are queued on the id's channel in the order they happen; the channel's fd (a pipe) is
// readable exactly while events are queued, so poll()/select()/O_NONBLOCK work as with
// librdmacm. Event status values follow the kernel: 0 or a negative errno.
//
// iWARP specifics: CONNECT_RESPONSE only when the active side has no QP (then rdma_establish
// attaches one); ESTABLISHED otherwise. TIMEWAIT_EXIT, DEVICE_REMOVAL, ADDR_CHANGE and the
// multicast events are never generated (TCP's TIME_WAIT is the kernel's business; devices
// never go away).
#pragma once

#include <infiniband/verbs.h>
#include <rdma/rdma_cma.h>

#include <cstddef>
#include <cstdint>

namespace eca::cm {

// ---- event channels
int channel_create(rdma_event_channel **out);
int channel_destroy(rdma_event_channel *ch);

// ---- ids
int create_id(rdma_event_channel *ch, rdma_cm_id **out, void *context, rdma_port_space ps);
int destroy_id(rdma_cm_id *id);
int migrate_id(rdma_cm_id *id, rdma_event_channel *ch);
bool is_sync(rdma_cm_id *id);
// True while the application holds `id` (created, not yet destroyed). The rdma_* entry points
// check it before touching the id, so a call on a destroyed id fails with EINVAL.
bool id_live(rdma_cm_id *id);

int bind_addr(rdma_cm_id *id, const sockaddr *addr);
int resolve_addr(rdma_cm_id *id, const sockaddr *src, const sockaddr *dst, int timeout_ms);
int resolve_route(rdma_cm_id *id, int timeout_ms);
int listen(rdma_cm_id *id, int backlog);
// For synchronous listeners: waits for the next CONNECT_REQUEST and returns its new id
// (with (*out)->event set). QP creation from rdma_create_ep's attributes is the caller's.
int get_request(rdma_cm_id *listen, rdma_cm_id **out);
int connect(rdma_cm_id *id, const rdma_conn_param *param);
int accept(rdma_cm_id *id, const rdma_conn_param *param);
int reject(rdma_cm_id *id, const void *pdata, uint8_t len);
int establish(rdma_cm_id *id);
int disconnect(rdma_cm_id *id);
int set_option(rdma_cm_id *id, int level, int optname, const void *optval, size_t optlen);
int init_qp_attr(rdma_cm_id *id, ibv_qp_attr *attr, int *mask);

// ---- events
int get_cm_event(rdma_event_channel *ch, rdma_cm_event **out);
int ack_cm_event(rdma_cm_event *ev);
const char *event_str(rdma_cm_event_type t);

// ---- rdma_create_qp / rdma_destroy_qp support (the QP itself is made by the caller)
// Must be called before id->qp is destroyed: stops the connection from calling into it. A
// connected id gets its DISCONNECTED from rdma_disconnect afterwards (or from the peer).
void qp_release(rdma_cm_id *id);
// rdma_create_ep state kept on the id.
void set_ep_qp_init_attr(rdma_cm_id *id, const ibv_qp_init_attr *attr);
bool ep_qp_init_attr(rdma_cm_id *id, ibv_qp_init_attr *out);
int set_connect_data(rdma_cm_id *id, const void *data, size_t len);

// ---- devices: the CM's contexts (opened once, never closed)
ibv_context **get_devices(int *num);  // malloc'ed, NULL-terminated
void free_devices(ibv_context **list);
// librdmacm gives every id a per-device PD (id->pd). libeca-core cannot call ibv_alloc_pd,
// so librdmacm.so.1 registers the allocator at load time; without it id->pd stays NULL.
void set_pd_allocator(ibv_pd *(*alloc)(ibv_context *));

// ---- rdma_getaddrinfo: returns 0 or a positive errno; when name resolution itself fails,
// returns 0 with *gai set to getaddrinfo()'s EAI_* code (and *res untouched).
int getaddrinfo(const char *node, const char *service, const rdma_addrinfo *hints,
                rdma_addrinfo **res, int *gai);
void freeaddrinfo(rdma_addrinfo *res);

}  // namespace eca::cm
