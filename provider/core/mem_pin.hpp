// Can this range be pinned? The checks the kernel's ib_umem_get() makes when it pins user
// memory for an MR, done in userspace before a registration is accepted, so a bad range fails
// ibv_reg_mr instead of faulting later in the data path.
#pragma once

#include <cstddef>
#include <cstdint>

namespace eca {

// [addr, addr+len) (len > 0, no wrap-around: checked by the caller) is covered by mappings
// without holes that allow reading, and writing when `write`; then every page is populated
// for that access (MADV_POPULATE_READ / MADV_POPULATE_WRITE, Linux 5.14+), which fails
// exactly where pinning would (file pages beyond EOF, PROT_NONE, VM_IO/VM_PFNMAP mappings).
// Populating for write breaks copy-on-write sharing of private pages, as pinning for write
// does; contents never change. Returns 0, EFAULT (not mapped, hole, permission, populate
// failure) or ENOMEM (more than the machine's memory). Without MADV_POPULATE_* (older
// kernels) only the mapping check runs.
int mem_pin_check(const void *addr, size_t len, bool write);

// The mapping check alone, on a /proc/<pid>/maps text (exposed for tests): 0 or EFAULT.
int mem_maps_check(const char *maps, size_t maps_len, uintptr_t begin, uintptr_t end,
                   bool write);

// Whether this kernel has MADV_POPULATE_READ/WRITE (probed once).
bool mem_populate_supported();

}  // namespace eca
