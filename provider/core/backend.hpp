// The device layer: what a device kind (software iWARP over TCP, modeled hardware) provides.
//
// The verbs layer (provider/core) owns queues, keys and completion semantics; a backend moves
// bytes between connected QPs. rdma_cm sets a connection up (TCP + MPA, connect/), then hands
// the negotiated connection (llp.hpp: MPA parameters and the stream's fd, no socket library)
// to the device's backend, which returns the QP's engine. The engine reports back through
// the Qp's own calls (sq_take/sq_done, rq completions, the end of the connection).
// This interface names no transport, socket or event library.
#pragma once

#include <infiniband/verbs.h>

#include <memory>

#include "provider/core/config.hpp"

namespace eca {

struct Qp;
struct Device;
struct Mr;
struct LlpConnection;

class QpEngine {
 public:
  virtual ~QpEngine() = default;
  // New send WQEs were posted. Called by the posting thread with no QP lock held.
  virtual void sq_doorbell() = 0;
  // New receive WQEs were posted (a receive-starved connection may resume).
  virtual void rq_doorbell() {}
  // Called from ibv_poll_cq() on the QP's send CQ when it found nothing: a busy-polling
  // application thread moves data the socket has room for now, instead of waiting for the
  // progress thread to be scheduled. Must not block.
  virtual void poll_progress() {}
  // A CQ this QP completes into was armed (ibv_req_notify_cq). Must not block.
  virtual void cq_armed() {}
  // Stops the data path. Graceful: flush queued frames then close (rdma_disconnect);
  // otherwise abort. After return no callback into the Qp runs any more.
  virtual void close(bool graceful) = 0;
};

// What a device kind says of itself: its name prefix and the attributes in which it differs
// from the shared ones (device_attr.cpp). Data, so the two backends cannot drift apart in how
// they fill ibv_device_attr / ibv_port_attr.
struct DeviceProfile {
  BackendKind kind;
  const char *prefix;  // device name prefix: says which backend a device belongs to
  const char *fw_ver;
  uint32_t vendor_part_id;
  ibv_atomic_cap atomic_cap;  // what the backend's RFC 7306 atomics guarantee
  int max_mr = 0;             // registered regions (and windows: one STag table); 0: the verbs layer's
  ibv_mtu active_mtu{};       // 0: from the interface's MTU
  uint8_t active_width;       // ibv_port_attr encodings
  uint8_t active_speed;
};

class Backend {
 public:
  explicit Backend(const DeviceProfile &profile) : profile_(profile) {}
  virtual ~Backend() = default;
  BackendKind kind() const { return profile_.kind; }
  const char *device_prefix() const { return profile_.prefix; }
  // The shared attributes with the profile's own on top (device_attr.cpp).
  void device_attr(const Device &dev, ibv_device_attr *attr) const;
  void port_attr(const Device &dev, ibv_port_attr *attr) const;

  // Builds the data path of `qp` on an established connection; the QP moves to RTS.
  virtual std::unique_ptr<QpEngine> attach(Qp &qp, LlpConnection &&llp) = 0;
  // Memory registration seen by the device (0 or a positive errno). Called after the verbs
  // layer checked the range is mapped and pinnable for the access asked (mem_pin.hpp).
  virtual int mr_registered(const Mr &) { return 0; }
  // ibv_dereg_mr: the STag is already gone from the table (no new lookups succeed).
  // Contract: after return, the device no longer reads or writes the MR's memory (DMA,
  // placement, transmission in flight have finished or been stopped); the application may
  // unmap it as soon as ibv_dereg_mr returns. The verbs layer then also waits for every
  // MrUse (software transport accesses) to leave. Must not block on application threads.
  virtual void mr_deregistered(const Mr &) {}
  virtual void mr_invalidated(const Mr &) {}

 private:
  const DeviceProfile &profile_;
};


Backend &backend(BackendKind kind);
Backend &software_backend();  // transport/sw_backend.cpp
Backend &hwmodel_backend();   // hwmodel/backend/hw_backend.cpp

}  // namespace eca
