/* test_contain.c - what containment stands on: the process table's pure
 * parts (a stat line, descendants, an environment block), the real /proc
 * (a process tree made here), and, where this machine lets the test make
 * one, a real cgroup2: a spawned child joins it, cgroup.procs lists what
 * is in it, cgroup.kill empties it and the tree is removed. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "fsutil.h"
#include "hypha/cgroup.h"
#include "hypha/proctab.h"
#include "hypha/spawn.h"

#define N_ELEMS(a) (sizeof(a) / sizeof((a)[0]))

/* ---- the pure parts ------------------------------------------------------- */

static void test_parse_stat(void **state)
{
    (void)state;
    hy_proc p;
    char st;
    assert_true(hy_proc_parse_stat("4242 (python3) S 17 4242 4242 0 -1 4194560 ...", &p, &st));
    assert_int_equal(p.pid, 4242);
    assert_int_equal(p.ppid, 17);
    assert_int_equal(p.pgid, 4242);
    assert_int_equal(st, 'S');
    /* a comm with spaces and a ')' of its own: the last ')' ends it */
    assert_true(hy_proc_parse_stat("7 (a) b (c)) Z 1 9 9 0", &p, &st));
    assert_int_equal(p.pid, 7);
    assert_int_equal(p.ppid, 1);
    assert_int_equal(p.pgid, 9);
    assert_int_equal(st, 'Z');
    assert_false(hy_proc_parse_stat("", &p, &st));
    assert_false(hy_proc_parse_stat("12 (x", &p, &st));
    assert_false(hy_proc_parse_stat("12 (x) S", &p, &st));
}

static void test_descendants(void **state)
{
    (void)state;
    /* 10 <- 11 <- 12 <- 5 (a pid below its parent's, after a wrap);
     * 10 <- 13; 20 <- 21 unrelated; 1 is its own parent's child (0) */
    hy_proc procs[] = {{1, 0, 1}, {5, 12, 5}, {10, 1, 10}, {11, 10, 10}, {12, 11, 12},
                       {13, 10, 13}, {20, 1, 20}, {21, 20, 20}};
    hy_proctab t = {procs, N_ELEMS(procs)};
    bool take[N_ELEMS(procs)] = {false};
    take[2] = true; /* 10 */
    hy_proctab_descendants(&t, take);
    const bool want[N_ELEMS(procs)] = {false, true, true, true, true, true, false, false};
    for (size_t i = 0; i < N_ELEMS(procs); i++)
        if (take[i] != want[i])
            fail_msg("pid %d: taken %d, wanted %d", (int)procs[i].pid, take[i], want[i]);
    bool none[N_ELEMS(procs)] = {false};
    hy_proctab_descendants(&t, none);
    for (size_t i = 0; i < N_ELEMS(procs); i++)
        assert_false(none[i]);
}

static void test_env_find(void **state)
{
    (void)state;
    static const char env[] = "PATH=/bin\0HYPHA_WORKER=risk\0HYPHA_INSTANCE=1\0EMPTY=\0HYPHA_WORKERS=x";
    size_t len = sizeof env - 1;
    assert_string_equal(hy_env_find(env, len, "HYPHA_WORKER"), "risk");
    assert_string_equal(hy_env_find(env, len, "HYPHA_INSTANCE"), "1");
    assert_string_equal(hy_env_find(env, len, "EMPTY"), "");
    assert_string_equal(hy_env_find(env, len, "HYPHA_WORKERS"), "x");
    assert_null(hy_env_find(env, len, "HYPHA"));
    assert_null(hy_env_find(env, len, "NOPE"));
    assert_null(hy_env_find(env, 0, "PATH"));
}

/* ---- the real /proc ----------------------------------------------------------- */

static long row(const hy_proctab *t, pid_t pid)
{
    for (size_t i = 0; i < t->n; i++)
        if (t->p[i].pid == pid)
            return (long)i;
    return -1;
}

/* A child in a group of its own with a grandchild: both found below us,
 * the zombie of a third left out, our environment readable. */
static void test_proc_tree(void **state)
{
    (void)state;
    int go[2];
    assert_int_equal(pipe(go), 0);
    pid_t child = fork();
    assert_true(child >= 0);
    if (child == 0) {
        close(go[1]); /* the test's end only: closing it is the signal to go */
        setpgid(0, 0);
        if (fork() == 0) {
            char c;
            (void)read(go[0], &c, 1);
            _exit(0);
        }
        char c;
        (void)read(go[0], &c, 1);
        _exit(0);
    }
    pid_t zombie = fork();
    if (zombie == 0)
        _exit(0);
    siginfo_t si;
    assert_int_equal(waitid(P_PID, (id_t)zombie, &si, WEXITED | WNOWAIT), 0); /* exited, not reaped */
    hy_proctab t;
    hy_err err;
    bool found = false;
    for (int tries = 0; tries < 500 && !found; tries++) { /* until the child is in its group, with a child */
        assert_int_equal(hy_proctab_read(&t, &err), 0);
        long me = row(&t, getpid()), c = row(&t, child);
        assert_true(me >= 0 && c >= 0);
        assert_int_equal(row(&t, zombie), -1);
        bool *take = calloc(t.n, sizeof *take);
        take[me] = true;
        hy_proctab_descendants(&t, take);
        size_t n = 0;
        for (size_t i = 0; i < t.n; i++)
            n += take[i];
        found = n == 3 && t.p[c].pgid == child; /* us, the child (in its group), the grandchild */
        free(take);
        hy_proctab_free(&t);
        if (!found)
            usleep(2000);
    }
    assert_true(found);
    size_t len;
    char *env = hy_proc_environ(getpid(), &len, &err);
    assert_non_null(env);
    setenv("HYPHA_TEST_MARK", "here", 1); /* not in the block the process started with */
    assert_null(hy_env_find(env, len, "HYPHA_TEST_MARK"));
    free(env);
    assert_null(hy_proc_environ(999999999, &len, &err));
    assert_non_null(strstr(err.msg, "/proc/999999999/environ"));
    close(go[1]); /* both read EOF and exit */
    close(go[0]);
    assert_int_equal(waitpid(child, NULL, 0), child);
    assert_int_equal(waitpid(zombie, NULL, 0), zombie);
}

/* ---- a real cgroup2, where the machine allows it ---------------------------------- */

/* /proc/PID/cgroup says it is in `rel` (the path in the hierarchy). */
static bool in_cgroup(pid_t pid, const char *rel)
{
    char path[64], want[PATH_MAX + 8];
    size_t len;
    hy_err err;
    snprintf(path, sizeof path, "/proc/%ld/cgroup", (long)pid);
    char *text = (char *)hy_read_file(path, &len, 1 << 20, &err);
    snprintf(want, sizeof want, "0::%s\n", rel);
    bool yes = text && strstr(text, want);
    free(text);
    return yes;
}

static void test_cgroup_lifecycle(void **state)
{
    (void)state;
    char base[PATH_MAX];
    hy_err err = {{0}};
    hy_cgroup cg;
    if (hy_cgroup_self(base, sizeof base, &err) < 0 || hy_cgroup_open(&cg, base, &err) < 0) {
        print_message("skipped: no cgroup2 this test may write: %s\n", err.msg);
        skip();
    }
    char *dir = hy_cgroup_child(&cg, "w", 3);
    assert_non_null(dir);
    assert_non_null(strstr(dir, "/hypha-"));
    assert_int_equal(strcmp(dir + strlen(dir) - 4, "/w-3"), 0);
    assert_int_equal(hy_cgroup_make(dir, &err), 0);
    assert_int_equal(hy_cgroup_make(dir, &err), 0); /* there already: reused */
    char procs[PATH_MAX + 16];
    snprintf(procs, sizeof procs, "%s/cgroup.procs", dir);
    char *argv[] = {"/bin/sleep", "30", NULL};
    char *envp[] = {NULL};
    hy_spawn_req req = {.path = "/bin/sleep", .argv = argv, .envp = envp, .cgroup_procs = procs};
    hy_spawn_res res;
    assert_int_equal(hy_spawn(&req, &res, &err), 0);
    /* the path in the hierarchy: what follows the mount point */
    char own[PATH_MAX];
    size_t len;
    char *self = (char *)hy_read_file("/proc/self/cgroup", &len, 1 << 20, &err);
    assert_non_null(self);
    char *line = strstr(self, "0::");
    assert_non_null(line);
    sscanf(line + 3, "%4095s", own);
    free(self);
    char rel[PATH_MAX * 2];
    snprintf(rel, sizeof rel, "%s%s", strcmp(own, "/") ? own : "", dir + strlen(base));
    pid_t pids[4];
    size_t n = 0;
    for (int tries = 0; tries < 500 && n == 0; tries++) {
        assert_int_equal(hy_cgroup_pids(dir, pids, 4, &n, &err), 0);
        if (n == 0)
            usleep(2000);
    }
    assert_int_equal(n, 1);
    assert_int_equal(pids[0], res.pid);
    assert_true(in_cgroup(res.pid, rel));
    assert_false(hy_cgroup_wait_empty(dir, 50));
    assert_int_equal(hy_cgroup_remove(dir, &err), -1); /* busy */
    assert_non_null(strstr(err.msg, dir));
    assert_int_equal(hy_cgroup_kill(dir, &err), 0);
    assert_true(hy_cgroup_wait_empty(dir, 2000));
    int st;
    assert_int_equal(waitpid(res.pid, &st, 0), res.pid);
    assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
    close(res.in_fd);
    close(res.out_fd);
    close(res.err_fd);
    close(res.status_fd);
    assert_int_equal(hy_cgroup_close(&cg, 1000, &err), 0); /* w-3 and hypha-PID */
    assert_null(cg.top);
    struct stat sb;
    assert_int_equal(stat(dir, &sb), -1);
    free(dir);
}

static void test_cgroup_open_refuses(void **state)
{
    (void)state;
    hy_cgroup cg;
    hy_err err = {{0}};
    assert_int_equal(hy_cgroup_open(&cg, "/nonexistent-hypha", &err), -1);
    assert_string_equal(err.msg, "/nonexistent-hypha: No such file or directory");
    assert_int_equal(hy_cgroup_open(&cg, "/tmp", &err), -1);
    assert_string_equal(err.msg, "/tmp: not a cgroup2 directory");
    assert_null(cg.top);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_stat),
        cmocka_unit_test(test_descendants),
        cmocka_unit_test(test_env_find),
        cmocka_unit_test(test_proc_tree),
        cmocka_unit_test(test_cgroup_lifecycle),
        cmocka_unit_test(test_cgroup_open_refuses),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
