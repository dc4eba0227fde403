/* wcount.h - write(2) and writev(2) counted per fd, for the tests that check
 * "one write per destination per flush" (test_sink, test_bus). Each call
 * goes on to the real one. Include once, in one test file. */
#ifndef HYPHA_TEST_WCOUNT_H
#define HYPHA_TEST_WCOUNT_H

#include <dlfcn.h>
#include <sys/types.h>
#include <sys/uio.h>

static int nwrites[1024];

ssize_t write(int fd, const void *buf, size_t n)
{
    static ssize_t (*real)(int, const void *, size_t);
    if (!real)
        *(void **)&real = dlsym(RTLD_NEXT, "write");
    if (fd >= 0 && fd < 1024)
        nwrites[fd]++;
    return real(fd, buf, n);
}

ssize_t writev(int fd, const struct iovec *iov, int n)
{
    static ssize_t (*real)(int, const struct iovec *, int);
    if (!real)
        *(void **)&real = dlsym(RTLD_NEXT, "writev");
    if (fd >= 0 && fd < 1024)
        nwrites[fd]++;
    return real(fd, iov, n);
}

#endif
