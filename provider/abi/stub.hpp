// stub.hpp - how the ABI-only entry points of provider/abi/ fail.
//
// Some exported symbols exist only because the real libraries export them and programs or
// foreign providers are bound to them at load time (ibverbs_compat_1_0.cpp,
// ibverbs_private34.cpp). None is reached while our devices are in use; if one is called it
// fails cleanly: errno = EOPNOTSUPP and the failure value of its signature, as the verb
// documents it (NULL, -1, the errno value, or 0). ECA_STUB defines one such function in a
// line, so the tables of stubs read as tables.
#pragma once

#include <linux/types.h>

#include <cerrno>

namespace eca::abi {

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

inline __be64 fail_zero() noexcept
{
	errno = EOPNOTSUPP;
	return 0;
}

// For the calls that return nothing (releasing or acknowledging what was never handed out).
inline void nothing() noexcept {}

} // namespace eca::abi

// ret name params { return fail; }, with C linkage when used inside extern "C".
// PARAMS are parameter types only: a stub reads none of its arguments.
#define ECA_STUB(ret, name, params, fail) \
	ret name params { return eca::abi::fail; }
