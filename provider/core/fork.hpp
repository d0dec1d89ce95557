// fork() and registered memory, as rdma-core defines it (ibv_fork_init(3)).
//
// Default: fork() is safe without preparation. The software backend's MRs are the
// application's own pages (a child gets them copy-on-write, like any memory); the modeled
// adapter gives a child private copies of the pages it re-backed (hwmodel/backend/adapter.cpp,
// privatize_in_child). ibv_is_fork_initialized() says IBV_FORK_UNNEEDED.
//
// ibv_fork_init(), or RDMAV_FORK_SAFE / IBV_FORK_SAFE in the environment: rdma-core's
// MADV_DONTFORK mode. Every registered range (rounded out to pages) is MADV_DONTFORK while at
// least one MR covers it, so a child does not have those pages at all (as with the kernel's
// pinned pages under ibv_fork_init); deregistration of the last MR over a page gives it back
// with MADV_DOFORK. ibv_is_fork_initialized() says IBV_FORK_ENABLED. As in rdma-core,
// ibv_fork_init() fails with EINVAL once memory was registered without it (that memory is not
// protected), and ibv_dontfork_range/ibv_dofork_range take part in the same counting.
//
// Thread-safe (one mutex); 0 or a positive errno.
#pragma once

#include <cstddef>

#include <infiniband/verbs.h>

namespace eca {

int fork_init();
ibv_fork_status fork_status();
// Registration of [addr, addr+len) begins / ends (ibv_dontfork_range / ibv_dofork_range).
// In the default mode these only note that registration happened.
int fork_dontfork(void *addr, size_t len);
int fork_dofork(void *addr, size_t len);

}  // namespace eca
