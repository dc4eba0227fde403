/* test_spawn.c - the stdin pipe size a worker gets: bounded by the per-user
 * pipe budget, and really applied to a spawned process's stdin. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "hypha/spawn.h"

static long soft_pages(void)
{
    long v = 16384;
    FILE *f = fopen("/proc/sys/fs/pipe-user-pages-soft", "r");
    if (f) {
        if (fscanf(f, "%ld", &v) != 1)
            v = 16384;
        fclose(f);
    }
    return v;
}

static void test_budget(void **state)
{
    (void)state;
    long pages = soft_pages();
    /* a few workers: the full 256 KiB each */
    assert_int_equal(hy_spawn_stdin_pipe_size(1), 256 * 1024);
    assert_int_equal(hy_spawn_stdin_pipe_size(8), 256 * 1024);
    for (size_t n = 1; n <= 4096; n *= 2) {
        size_t sz = hy_spawn_stdin_pipe_size(n);
        if (sz == 0)
            continue; /* the default: nothing asked of the kernel */
        assert_true(sz > 64 * 1024 && sz <= 256 * 1024);
        assert_int_equal(sz & (sz - 1), 0); /* a power of two */
        if (pages > 0) /* all of them together within half the budget */
            assert_true(sz * n <= (size_t)pages * 4096 / 2);
    }
    if (pages > 0) /* so many workers that only the default fits */
        assert_int_equal(hy_spawn_stdin_pipe_size((size_t)pages), 0);
}

static void test_applied_to_stdin(void **state)
{
    (void)state;
    char *argv[] = {"/bin/cat", NULL};
    char *envp[] = {NULL};
    hy_spawn_req req = {.path = "/bin/cat", .argv = argv, .envp = envp, .stdin_pipe_size = 256 * 1024};
    hy_spawn_res res;
    hy_err err = {{0}};
    assert_int_equal(hy_spawn(&req, &res, &err), 0);
    int got = fcntl(res.in_fd, F_GETPIPE_SZ);
    /* Refused over an unprivileged user's budget: then the default stays. */
    assert_true(got == 256 * 1024 || (got == 64 * 1024 && geteuid() != 0));
    close(res.in_fd);
    close(res.out_fd);
    close(res.err_fd);
    close(res.status_fd);
    int st;
    assert_int_equal(waitpid(res.pid, &st, 0), res.pid);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0); /* cat saw EOF */
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_budget),
        cmocka_unit_test(test_applied_to_stdin),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
