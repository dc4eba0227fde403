/* forksrv.c - preload: a worker's instances forked from a Python fork server
 * (python-runtime/hypha/forkserver.py) that imported its modules once.
 *
 * One server per worker with `preload`, hyphad's child, spawned as the
 * worker is (its user, limits, cwd, environment): its children inherit all
 * of that. Its stdin is a SOCK_SEQPACKET socket to hyphad, one JSON object a
 * message; its stdout and stderr are logged. It says `ready` once its
 * imports are done; until then (and when it is gone) an instance is spawned
 * plainly, so no start ever waits for it.
 *
 * A spawn is synchronous, like hy_spawn: hyphad sends the argv, environment
 * and cwd with the instance's three pipe ends (SCM_RIGHTS) and waits, with a
 * deadline, for the worker's pid. The server double-forks and the worker is
 * reparented to hyphad (a child subreaper) before it runs anything of the
 * worker's, so from there it is supervised exactly as a spawned one: its
 * exit comes through SIGCHLD with its real status, its process group is its
 * own, the warden knows it, and hyphad puts it into its cgroup.
 *
 * A server that dies three times within 10 s is not started again: preload
 * is off for that worker (said once) and its instances are spawned plainly.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fsutil.h"
#include "hypha/log.h"
#include "hypha/spawn.h"
#include "instance.h"

#define COMP "forkserver"
#define SPAWN_TIMEOUT_MS 1000
#define DEATHS_MAX 3
#define DEATHS_WITHIN_S 10.0

#ifndef HYPHA_FORKSERVER_PATH
#define HYPHA_FORKSERVER_PATH "/usr/lib/python3/dist-packages/hypha/forkserver.py"
#endif

struct hy_forksrv {
    hy_sup *sup;
    char name[72];               /* the worker's */
    const hy_worker_spec *spec;  /* the definition it was started for (a reload makes another) */
    pid_t pid;                   /* 0: not running */
    int sock;                    /* -1: none */
    int out_fd, err_fd;
    ev_io sock_w, out_w, err_w;
    bool ready;
    bool off;                    /* kept dying: preload is off for this worker */
    pid_t restarting_pid;        /* a server replaced on purpose, exiting */
    unsigned deaths;
    double first_death;
    uint64_t next_id;
    char line[2][1024];          /* its stdout's and stderr's current line */
    size_t len[2];
    struct hy_forksrv *next;
};

static const char *server_path(void)
{
    const char *p = getenv("HYPHA_FORKSERVER");
    if (p && *p)
        return p;
    return access(HYPHA_FORKSERVER_PATH, R_OK) == 0 ? HYPHA_FORKSERVER_PATH : HYPHA_FORKSERVER_SOURCE;
}

static hy_forksrv *find(hy_sup *s, const char *name)
{
    for (hy_forksrv *f = s->forksrv; f; f = f->next)
        if (strcmp(f->name, name) == 0)
            return f;
    return NULL;
}

/* ---- its output: log lines ----------------------------------------------- */

static void say(hy_forksrv *f, const char *line, size_t n)
{
    char msg[1100];
    snprintf(msg, sizeof msg, "%.*s", (int)n, line);
    hy_log(HY_WARN, COMP, msg, "worker", f->name, "pid", HY_I64(f->pid), NULL);
    for (size_t i = 0; i < f->sup->ninst; i++) { /* in the first instance's tail, beside its own lines */
        hy_instance *in = f->sup->inst[i];
        if (!in->retiring && strcmp(in->name, f->name) == 0) {
            char note[1100];
            int k = snprintf(note, sizeof note, "[forkserver] %s", msg);
            hy_tail_push(&in->tail, note, (size_t)k < sizeof note ? (size_t)k : sizeof note - 1, ++f->sup->line_seq);
            break;
        }
    }
}

static void output_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)revents;
    hy_forksrv *f = w->data;
    int which = w == &f->err_w;
    char buf[4096];
    ssize_t n = read(w->fd, buf, sizeof buf);
    if (n <= 0) {
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return;
        ev_io_stop(loop, w);
        close(w->fd);
        if (which)
            f->err_fd = -1;
        else
            f->out_fd = -1;
        if (f->len[which])
            say(f, f->line[which], f->len[which]);
        f->len[which] = 0;
        return;
    }
    for (ssize_t i = 0; i < n; i++) {
        if (buf[i] == '\n' || f->len[which] == sizeof f->line[which]) {
            say(f, f->line[which], f->len[which]);
            f->len[which] = 0;
            if (buf[i] == '\n')
                continue;
        }
        f->line[which][f->len[which]++] = buf[i];
    }
}

/* ---- the channel ------------------------------------------------------------ */

/* One message within timeout_ms (a signal, such as the SIGCHLDs of a crash
 * storm, does not end the wait), or NULL. */
static json_t *receive(int sock, int timeout_ms)
{
    char buf[8192];
    double deadline = ev_time() + timeout_ms / 1000.0;
    for (;;) {
        int left = (int)((deadline - ev_time()) * 1000.0);
        struct pollfd p = {sock, POLLIN, 0};
        int r = poll(&p, 1, left > 0 ? left : 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return NULL;
        ssize_t n = recv(sock, buf, sizeof buf - 1, MSG_DONTWAIT);
        if (n < 0 && (errno == EINTR || errno == EAGAIN) && left > 0)
            continue;
        if (n <= 0)
            return NULL;
        buf[n] = '\0';
        return json_loads(buf, 0, NULL);
    }
}

static void close_server(hy_forksrv *f)
{
    struct ev_loop *loop = f->sup->loop;
    ev_io_stop(loop, &f->sock_w);
    if (f->sock >= 0)
        close(f->sock);
    f->sock = -1;
    f->ready = false;
}

/* Until it is ready, the only message is `ready`. */
static void sock_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    hy_forksrv *f = w->data;
    json_t *m = receive(f->sock, 0);
    const char *op = json_string_value(json_object_get(m, "op"));
    if (op && strcmp(op, "ready") == 0) {
        f->ready = true;
        char th[24];
        snprintf(th, sizeof th, "%lld", (long long)json_integer_value(json_object_get(m, "threads")));
        hy_log(HY_INFO, COMP, "ready: its instances are forked from it", "worker", f->name, "pid", HY_I64(f->pid),
               "threads", th, NULL);
        ev_io_stop(f->sup->loop, &f->sock_w); /* from here it is asked, synchronously */
    } else if (!m) {
        ev_io_stop(f->sup->loop, &f->sock_w); /* EOF: it is exiting; SIGCHLD says the rest */
    }
    json_decref(m);
}

/* Its stdout and stderr pipes closed (a replaced or dead server's, not yet
 * at EOF: what it still had to say goes). */
static void close_output(hy_forksrv *f)
{
    for (int i = 0; i < 2; i++) {
        ev_io *w = i ? &f->err_w : &f->out_w;
        int *fd = i ? &f->err_fd : &f->out_fd;
        if (*fd >= 0) {
            ev_io_stop(f->sup->loop, w);
            close(*fd);
            *fd = -1;
        }
    }
}

/* A server for worker w, started (not ready yet). -1: it could not be. */
static int start(hy_forksrv *f, hy_instance *in)
{
    close_output(f); /* its predecessor's */
    const hy_worker_spec *w = in->spec;
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
        return -1;
    char *pre = NULL, **env = NULL;
    size_t n = 0, len = 0;
    for (size_t i = 0; i < w->npreload; i++)
        len += strlen(w->preload[i]) + 1;
    if (!(pre = calloc(len + 32, 1))) {
        close(sv[0]);
        close(sv[1]);
        return -1;
    }
    strcpy(pre, "HYPHA_FORKSERVER_PRELOAD=");
    for (size_t i = 0; i < w->npreload; i++) {
        strcat(pre, i ? "," : "");
        strcat(pre, w->preload[i]);
    }
    while (in->envp[n])
        n++;
    if (!(env = calloc(n + 2, sizeof *env))) {
        free(pre);
        close(sv[0]);
        close(sv[1]);
        return -1;
    }
    size_t k = 0;
    for (size_t i = 0; i < n; i++) /* the worker's, but no instance's: each request brings its own */
        if (strncmp(in->envp[i], "HYPHA_INSTANCE=", 15) != 0)
            env[k++] = in->envp[i];
    env[k] = pre;
    char *argv[] = {(char *)w->exec_path, (char *)server_path(), NULL};
    hy_spawn_creds creds;
    hy_worker_proc_creds(&w->proc, &creds);
    hy_spawn_req req = {.path = w->exec_path, .argv = argv, .envp = env, .cwd = w->cwd, .creds = &creds,
                        .stdin_fd = &sv[1]};
    hy_spawn_res res;
    hy_err err;
    int rc = hy_spawn(&req, &res, &err);
    free(env);
    free(pre);
    close(sv[1]);
    if (rc < 0) {
        close(sv[0]);
        hy_log(HY_ERROR, COMP, "cannot start the fork server", "worker", f->name, "error", err.msg, NULL);
        return -1;
    }
    close(res.status_fd); /* an exec that failed is an exit like any: counted as a death */
    f->pid = res.pid;
    f->sock = sv[0];
    f->out_fd = res.out_fd;
    f->err_fd = res.err_fd;
    f->ready = false;
    f->len[0] = f->len[1] = 0;
    struct ev_loop *loop = f->sup->loop;
    ev_io_init(&f->sock_w, sock_cb, f->sock, EV_READ);
    ev_io_init(&f->out_w, output_cb, f->out_fd, EV_READ);
    ev_io_init(&f->err_w, output_cb, f->err_fd, EV_READ);
    f->sock_w.data = f->out_w.data = f->err_w.data = f;
    ev_io_start(loop, &f->sock_w);
    ev_io_start(loop, &f->out_w);
    ev_io_start(loop, &f->err_w);
    if (hy_warden_add(&f->sup->warden, f->pid, &err) < 0)
        hy_log(HY_WARN, COMP, "cannot register the fork server with the warden", "error", err.msg, NULL);
    hy_log(HY_INFO, COMP, "starting: its imports run once, its instances are forked from it", "worker", f->name,
           "pid", HY_I64(f->pid), NULL);
    return 0;
}

/* ---- a spawn ------------------------------------------------------------------ */

static int send_request(hy_forksrv *f, hy_instance *in, const int fds[3], uint64_t id)
{
    const hy_worker_spec *w = in->spec;
    json_t *argv = json_array(), *env = json_array();
    for (size_t i = 0; i < w->argc; i++)
        json_array_append_new(argv, json_string(w->argv[i]));
    for (char **e = in->envp; *e; e++)
        json_array_append_new(env, json_string(*e));
    json_t *req = json_pack("{s:s,s:I,s:o,s:o,s:s,s:I}", "op", "spawn", "id", (json_int_t)id, "argv", argv, "env",
                            env, "cwd", w->cwd ? w->cwd : "/", "hyphad_pid", (json_int_t)getpid());
    char *text = req ? json_dumps(req, JSON_COMPACT) : NULL;
    json_decref(req);
    if (!text)
        return -1;
    union {
        char buf[CMSG_SPACE(3 * sizeof(int))];
        struct cmsghdr align;
    } ctl;
    memset(&ctl, 0, sizeof ctl);
    struct iovec iov = {text, strlen(text)};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf, .msg_controllen = sizeof ctl.buf};
    struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(3 * sizeof(int));
    memcpy(CMSG_DATA(c), fds, 3 * sizeof(int));
    ssize_t n = sendmsg(f->sock, &mh, MSG_NOSIGNAL);
    free(text);
    return n == (ssize_t)iov.iov_len ? 0 : -1;
}

static void close3(int p[3][2])
{
    for (int i = 0; i < 3; i++)
        for (int k = 0; k < 2; k++)
            if (p[i][k] >= 0)
                close(p[i][k]);
}

/* Its worker's server, ready to fork; NULL: spawn plainly (started here
 * when there is none: not ready for this start). */
static hy_forksrv *ready_server(hy_instance *in)
{
    hy_sup *s = in->sup;
    hy_forksrv *f = find(s, in->name);
    if (!f) {
        if (!(f = calloc(1, sizeof *f)))
            return NULL;
        f->sup = s;
        f->sock = f->out_fd = f->err_fd = -1;
        snprintf(f->name, sizeof f->name, "%s", in->name);
        f->next = s->forksrv;
        s->forksrv = f;
    }
    if (f->spec != in->spec && f->pid > 0) { /* a reload changed the worker: a new server for it */
        hy_forksrv_restart(s, in->name);
        f->off = false;
    }
    f->spec = in->spec;
    if (f->off || s->shutting_down)
        return NULL;
    if (f->pid <= 0)
        (void)start(f, in);
    return f->pid > 0 && f->ready ? f : NULL;
}

/* The server forks one with `theirs` as its stdio: its pid, or 0 (said). */
static pid_t ask(hy_forksrv *f, hy_instance *in, const int theirs[3])
{
    uint64_t id = ++f->next_id;
    int sent = send_request(f, in, theirs, id);
    json_t *r = sent == 0 ? receive(f->sock, SPAWN_TIMEOUT_MS) : NULL;
    while (r && json_integer_value(json_object_get(r, "id")) < (json_int_t)id) {
        /* the late answer of a spawn that timed out: a worker nobody adopted */
        pid_t late = (pid_t)json_integer_value(json_object_get(r, "pid"));
        if (late > 0)
            kill(late, SIGKILL);
        json_decref(r);
        r = receive(f->sock, SPAWN_TIMEOUT_MS);
    }
    const char *op = json_string_value(json_object_get(r, "op"));
    pid_t pid = (pid_t)json_integer_value(json_object_get(r, "pid"));
    if (!op || strcmp(op, "spawned") != 0 || pid <= 0 || json_integer_value(json_object_get(r, "id")) != (json_int_t)id) {
        const char *why = json_string_value(json_object_get(r, "error"));
        hy_log(HY_WARN, COMP, "fork server did not fork: spawned plainly", "worker", in->name, "instance", in->idx,
               "error", why ? why : sent ? "could not be asked" : "no answer in time", NULL);
        if (!why) /* a server that cannot be talked to is of no use: started again at the next spawn */
            kill(f->pid, SIGKILL);
        pid = 0;
    }
    json_decref(r);
    return pid;
}

int hy_forksrv_spawn(hy_instance *in, const char *procs, hy_spawn_res *res)
{
    hy_forksrv *f = in->spec->preload ? ready_server(in) : NULL;
    if (!f)
        return 0;
    int p[3][2] = {{-1, -1}, {-1, -1}, {-1, -1}};
    for (int i = 0; i < 3; i++)
        if (pipe2(p[i], O_CLOEXEC) < 0) {
            close3(p);
            return 0;
        }
    size_t size = hy_spawn_pipe_size(in->sup->ninst);
    if (size) {
        (void)fcntl(p[0][1], F_SETPIPE_SZ, (int)size);
        (void)fcntl(p[1][0], F_SETPIPE_SZ, (int)size);
    }
    int theirs[3] = {p[0][0], p[1][1], p[2][1]};
    pid_t pid = ask(f, in, theirs);
    for (int i = 0; i < 3; i++)
        close(theirs[i]); /* the server has them now (or never will) */
    p[0][0] = p[1][1] = p[2][1] = -1;
    if (!pid) {
        close3(p);
        return 0;
    }
    int mine[3] = {p[0][1], p[1][0], p[2][0]};
    for (int i = 0; i < 3; i++) {
        int fl = fcntl(mine[i], F_GETFL);
        if (fl >= 0)
            (void)fcntl(mine[i], F_SETFL, fl | O_NONBLOCK);
    }
    if (procs && procs[0]) { /* into its cgroup, as a spawned one joins it itself */
        char text[24];
        hy_err err;
        snprintf(text, sizeof text, "%d", (int)pid);
        if (hy_write_file(procs, text, &err) < 0)
            hy_log(HY_WARN, COMP, "cannot move the forked worker into its cgroup", "worker", in->name, "instance",
                   in->idx, "error", err.msg, NULL);
    }
    *res = (hy_spawn_res){.pid = pid, .in_fd = mine[0], .out_fd = mine[1], .err_fd = mine[2], .status_fd = -1};
    return 1;
}

/* ---- its life ----------------------------------------------------------------- */

bool hy_forksrv_owns(const hy_sup *s, pid_t pid)
{
    for (const hy_forksrv *f = s->forksrv; f; f = f->next)
        if (pid > 0 && (f->pid == pid || f->restarting_pid == pid))
            return true;
    return false;
}

bool hy_forksrv_exited(hy_sup *s, pid_t pid, int status)
{
    hy_forksrv *f = s->forksrv;
    while (f && f->pid != pid && f->restarting_pid != pid)
        f = f->next;
    if (!f)
        return false;
    if (f->restarting_pid == pid) { /* replaced on purpose */
        hy_err err;
        (void)hy_warden_remove(&s->warden, pid, &err);
        f->restarting_pid = 0;
        return true;
    }
    hy_err err;
    (void)hy_warden_remove(&s->warden, pid, &err);
    close_server(f);
    f->pid = 0;
    if (s->shutting_down)
        return true;
    double now = ev_now(s->loop);
    if (f->deaths == 0 || now - f->first_death > DEATHS_WITHIN_S) {
        f->deaths = 0;
        f->first_death = now;
    }
    f->deaths++;
    char st[32];
    snprintf(st, sizeof st, WIFEXITED(status) ? "%d" : "SIG%d", WIFEXITED(status) ? WEXITSTATUS(status)
                                                                               : WTERMSIG(status));
    if (f->deaths >= DEATHS_MAX) {
        f->off = true;
        hy_log(HY_ERROR, COMP, "the fork server keeps dying: preload off, instances are spawned plainly",
               "worker", f->name, "status", st, "deaths", HY_U64(f->deaths), NULL);
    } else {
        hy_log(HY_WARN, COMP, "the fork server exited: started again at the next spawn", "worker", f->name,
               "status", st, NULL);
    }
    return true;
}

void hy_forksrv_restart(hy_sup *s, const char *worker)
{
    hy_forksrv *f = find(s, worker);
    if (!f)
        return;
    f->off = false;
    f->deaths = 0;
    if (f->pid > 0) {
        hy_log(HY_INFO, COMP, "replacing the fork server", "worker", f->name, "pid", HY_I64(f->pid), NULL);
        close_server(f); /* EOF: it exits; a new one at the next spawn */
        kill(f->pid, SIGTERM);
        f->restarting_pid = f->pid; /* its exit is not a death */
        f->pid = 0;
    }
}

void hy_forksrv_free_all(hy_sup *s)
{
    while (s->forksrv) {
        hy_forksrv *f = s->forksrv;
        s->forksrv = f->next;
        close_server(f);
        if (f->pid > 0) {
            hy_err err;
            kill(f->pid, SIGKILL);
            while (waitpid(f->pid, NULL, 0) < 0 && errno == EINTR) {
            }
            (void)hy_warden_remove(&s->warden, f->pid, &err); /* its group id may be anyone's later */
        }
        close_output(f);
        free(f);
    }
}
