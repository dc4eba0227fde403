/* test_spawn.c - the pipe size a worker gets: bounded by the pipe budget,
 * and really applied to a spawned process's stdin and stdout; a cgroup the
 * child cannot join is reported at its own stage. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <errno.h>
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
    size_t budget = geteuid() == 0 || pages == 0 ? (size_t)64 << 20 : (size_t)pages * 4096 / 2;
    /* a few workers: the full 256 KiB each */
    assert_int_equal(hy_spawn_pipe_size(1), 256 * 1024);
    assert_int_equal(hy_spawn_pipe_size(8), 256 * 1024);
    for (size_t n = 1; n <= 4096; n *= 2) {
        size_t sz = hy_spawn_pipe_size(n);
        if (sz == 0)
            continue; /* the default: nothing asked of the kernel */
        assert_true(sz > 64 * 1024 && sz <= 256 * 1024);
        assert_int_equal(sz & (sz - 1), 0);  /* a power of two */
        assert_true(sz * 2 * n <= budget);   /* stdin and stdout of all of them */
        assert_true(sz == 256 * 1024 || sz * 4 * n > budget); /* halved only as needed */
    }
    /* so many workers that only the default fits */
    assert_int_equal(hy_spawn_pipe_size(budget / (64 * 1024)), 0);
}

static void test_applied_to_stdin(void **state)
{
    (void)state;
    char *argv[] = {"/bin/cat", NULL};
    char *envp[] = {NULL};
    hy_spawn_req req = {.path = "/bin/cat", .argv = argv, .envp = envp, .pipe_size = 256 * 1024};
    hy_spawn_res res;
    hy_err err = {{0}};
    assert_int_equal(hy_spawn(&req, &res, &err), 0);
    /* Refused over an unprivileged user's budget: then the default stays. */
    int got = fcntl(res.in_fd, F_GETPIPE_SZ);
    assert_true(got == 256 * 1024 || (got == 64 * 1024 && geteuid() != 0));
    got = fcntl(res.out_fd, F_GETPIPE_SZ);
    assert_true(got == 256 * 1024 || (got == 64 * 1024 && geteuid() != 0));
    close(res.in_fd);
    close(res.out_fd);
    close(res.err_fd);
    close(res.status_fd);
    int st;
    assert_int_equal(waitpid(res.pid, &st, 0), res.pid);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0); /* cat saw EOF */
}

/* A cgroup the child cannot join is a failed start at its own stage. */
static void test_cgroup_stage(void **state)
{
    (void)state;
    char *argv[] = {"/bin/true", NULL};
    char *envp[] = {NULL};
    hy_spawn_req req = {.path = "/bin/true", .argv = argv, .envp = envp,
                        .cgroup_procs = "/nonexistent-hypha-test/cgroup.procs"};
    hy_spawn_res res;
    hy_err err = {{0}};
    assert_int_equal(hy_spawn(&req, &res, &err), 0);
    int st;
    assert_int_equal(waitpid(res.pid, &st, 0), res.pid);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 127);
    const char *stage = NULL;
    int e = 0;
    assert_int_equal(hy_spawn_status(res.status_fd, &stage, &e), HY_SPAWN_FAILED);
    assert_string_equal(stage, "cgroup");
    assert_int_equal(e, ENOENT);
    close(res.in_fd);
    close(res.out_fd);
    close(res.err_fd);
    close(res.status_fd);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_budget),
        cmocka_unit_test(test_applied_to_stdin),
        cmocka_unit_test(test_cgroup_stage),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
