// rdmacm_rsockets.cpp - the rsockets entry points of librdmacm.so.1.
//
// Why this file exists: rdma-core 44's librdmacm.so.1 exports the rsockets
// socket-like API (RDMACM_1.0: rsocket, rbind, ..., riowrite).  A drop-in
// replacement must export the same versioned names (see librdmacm.map):
// rdmacm-utils' rstream, rcopy, riostream, udpong and cmtime (rpoll) and
// rdma-core's librspreload import them and are linked BIND_NOW, so without
// these definitions they would not even start.  We do not implement
// rsockets: every call fails cleanly with errno = ENOSYS and the function's
// error value (-1, (off_t)-1 for riomap, (size_t)-1 for riowrite), so those
// tools start and report the facility as unsupported instead of crashing.
//
// Prototypes come from the installed <rdma/rsocket.h>, so the compiler
// checks that these definitions match the public signatures exactly.

#include <rdma/rsocket.h>

#include <cerrno>
#include <cstddef>

namespace {

inline int fail_int() noexcept
{
	errno = ENOSYS;
	return -1;
}

inline ssize_t fail_ssize() noexcept
{
	errno = ENOSYS;
	return -1;
}

} // namespace

extern "C" {

int rsocket(int /*domain*/, int /*type*/, int /*protocol*/)
{
	return fail_int();
}

int rbind(int /*socket*/, const struct sockaddr * /*addr*/, socklen_t /*addrlen*/)
{
	return fail_int();
}

int rlisten(int /*socket*/, int /*backlog*/)
{
	return fail_int();
}

int raccept(int /*socket*/, struct sockaddr * /*addr*/, socklen_t * /*addrlen*/)
{
	return fail_int();
}

int rconnect(int /*socket*/, const struct sockaddr * /*addr*/, socklen_t /*addrlen*/)
{
	return fail_int();
}

int rshutdown(int /*socket*/, int /*how*/)
{
	return fail_int();
}

int rclose(int /*socket*/)
{
	return fail_int();
}

ssize_t rrecv(int /*socket*/, void * /*buf*/, size_t /*len*/, int /*flags*/)
{
	return fail_ssize();
}

ssize_t rrecvfrom(int /*socket*/, void * /*buf*/, size_t /*len*/, int /*flags*/,
		  struct sockaddr * /*src_addr*/, socklen_t * /*addrlen*/)
{
	return fail_ssize();
}

ssize_t rrecvmsg(int /*socket*/, struct msghdr * /*msg*/, int /*flags*/)
{
	return fail_ssize();
}

ssize_t rsend(int /*socket*/, const void * /*buf*/, size_t /*len*/, int /*flags*/)
{
	return fail_ssize();
}

ssize_t rsendto(int /*socket*/, const void * /*buf*/, size_t /*len*/, int /*flags*/,
		const struct sockaddr * /*dest_addr*/, socklen_t /*addrlen*/)
{
	return fail_ssize();
}

ssize_t rsendmsg(int /*socket*/, const struct msghdr * /*msg*/, int /*flags*/)
{
	return fail_ssize();
}

ssize_t rread(int /*socket*/, void * /*buf*/, size_t /*count*/)
{
	return fail_ssize();
}

ssize_t rreadv(int /*socket*/, const struct iovec * /*iov*/, int /*iovcnt*/)
{
	return fail_ssize();
}

ssize_t rwrite(int /*socket*/, const void * /*buf*/, size_t /*count*/)
{
	return fail_ssize();
}

ssize_t rwritev(int /*socket*/, const struct iovec * /*iov*/, int /*iovcnt*/)
{
	return fail_ssize();
}

int rpoll(struct pollfd * /*fds*/, nfds_t /*nfds*/, int /*timeout*/)
{
	return fail_int();
}

int rselect(int /*nfds*/, fd_set * /*readfds*/, fd_set * /*writefds*/, fd_set * /*exceptfds*/,
	    struct timeval * /*timeout*/)
{
	return fail_int();
}

int rgetpeername(int /*socket*/, struct sockaddr * /*addr*/, socklen_t * /*addrlen*/)
{
	return fail_int();
}

int rgetsockname(int /*socket*/, struct sockaddr * /*addr*/, socklen_t * /*addrlen*/)
{
	return fail_int();
}

int rsetsockopt(int /*socket*/, int /*level*/, int /*optname*/, const void * /*optval*/,
		socklen_t /*optlen*/)
{
	return fail_int();
}

int rgetsockopt(int /*socket*/, int /*level*/, int /*optname*/, void * /*optval*/,
		socklen_t * /*optlen*/)
{
	return fail_int();
}

// Variadic like fcntl(2); the optional argument is never read.
int rfcntl(int /*socket*/, int /*cmd*/, ...)
{
	return fail_int();
}

off_t riomap(int /*socket*/, void * /*buf*/, size_t /*len*/, int /*prot*/, int /*flags*/,
	     off_t /*offset*/)
{
	errno = ENOSYS;
	return static_cast<off_t>(-1);
}

int riounmap(int /*socket*/, void * /*buf*/, size_t /*len*/)
{
	return fail_int();
}

// Returns size_t, so the error value is (size_t)-1, as rdma-core's does.
size_t riowrite(int /*socket*/, const void * /*buf*/, size_t /*count*/, off_t /*offset*/,
		int /*flags*/)
{
	errno = ENOSYS;
	return static_cast<size_t>(-1);
}

} // extern "C"
