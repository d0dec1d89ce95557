// Verbs operations shared by the ops table (context.cpp) and the extern "C" entry points
// (provider/verbs_api.cpp). Positive errno on failure.
#pragma once
#include <infiniband/verbs.h>

namespace eca {
struct Context;
struct Cq;

int query_port(Context *ctx, uint8_t port, ibv_port_attr *attr);
int query_device(Context *ctx, ibv_device_attr *attr);
int query_device_ex(Context *ctx, ibv_device_attr_ex *attr);
int create_cq_ex(Context *ctx, ibv_cq_init_attr_ex *attr, Cq **out);
int cq_req_notify(Cq *cq, bool solicited_only);
int cq_modify(Cq *cq, const ibv_modify_cq_attr &attr);
}  // namespace eca
