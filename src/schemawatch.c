/* schemawatch.c - the contracts file, watched on disk (see
 * hypha/schemawatch.h).
 *
 * The one idea: an event only says "look again". However many events name
 * the file, they lead to one read and one hash, and only a verdict that
 * differs from the last one said is logged. A look counts only if no event
 * about the file came while it was taken. So an editor's rename dance, a
 * generator's temp-and-rename, a rewrite in place and an overflowed queue
 * all come down to one verdict on the finished file.
 */
#define _GNU_SOURCE
#include "hypha/schemawatch.h"

#include <errno.h>
#include <stdalign.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fsutil.h"
#include "hypha/log.h"

#define COMP "schema"
#define SHORT 12 /* hex digits of a digest in a log line */

/* Close the file: IN_CLOSE_WRITE; replaced by rename: IN_MOVED_TO (and
 * IN_MOVED_FROM when renamed away); made or removed: IN_CREATE, IN_DELETE.
 * The directory itself going away or moving ends the watch. Not IN_MODIFY:
 * it would wake hyphad at every write(2) to any file of the directory (a
 * log beside the contracts), and a rewrite in place ends with its close. */
#define WATCH_MASK (IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_DELETE_SELF | \
                    IN_MOVE_SELF | IN_ONLYDIR)

/* Read and hash the file: 0 with `digest`, or -1 with errno (nothing logged). */
static int hash_file(const char *path, uint8_t digest[HY_DIGEST_LEN], char hex[2 * HY_DIGEST_LEN + 1])
{
    hy_err err = {{0}};
    size_t len;
    uint8_t *data = hy_read_file(path, &len, HY_SCHEMA_MAX_FILE, &err);
    if (!data)
        return -1;
    int rc = hy_sha256(data, len, digest, hex, &err);
    free(data);
    if (rc < 0)
        errno = EIO; /* OpenSSL failed: the file cannot be judged */
    return rc;
}

/* ---- verdicts: each logged once ------------------------------------------ */

static void say_gone(hy_schemawatch *w, int e)
{
    if (w->said == HY_SW_SAID_GONE)
        return;
    w->said = HY_SW_SAID_GONE;
    char msg[256], running[SHORT + 1];
    snprintf(msg, sizeof msg, "contracts file is gone or unreadable: %s", strerror(e));
    snprintf(running, sizeof running, "%s", w->running_hex);
    hy_log(HY_WARN, COMP, msg, "file", w->file, "running", running, NULL);
}

static void say_changed(hy_schemawatch *w, const uint8_t digest[HY_DIGEST_LEN], const char *hex)
{
    if (w->said == HY_SW_SAID_CHANGED && memcmp(w->said_digest, digest, HY_DIGEST_LEN) == 0)
        return;
    w->said = HY_SW_SAID_CHANGED;
    memcpy(w->said_digest, digest, HY_DIGEST_LEN);
    char running[SHORT + 1], on_disk[SHORT + 1];
    snprintf(running, sizeof running, "%s", w->running_hex);
    snprintf(on_disk, sizeof on_disk, "%s", hex);
    hy_log(HY_WARN, COMP,
           "contracts file changed on disk; hyphad still runs the contracts it loaded: restart hyphad to apply them",
           "file", w->file, "running", running, "on_disk", on_disk, NULL);
}

static void say_matches(hy_schemawatch *w)
{
    if (w->said == HY_SW_SAID_MATCHES)
        return;
    w->said = HY_SW_SAID_MATCHES;
    hy_log(HY_INFO, COMP, "contracts file on disk matches the running contracts again", "file", w->file, NULL);
}

/* What a read of the file found. */
typedef struct sw_look {
    bool readable;
    int err;                               /* errno when not */
    uint8_t digest[HY_DIGEST_LEN];
    char hex[2 * HY_DIGEST_LEN + 1];
} sw_look;

static void look(const hy_schemawatch *w, sw_look *l)
{
    l->readable = hash_file(w->file, l->digest, l->hex) == 0;
    l->err = l->readable ? 0 : errno;
    if (!l->readable)
        l->hex[0] = '\0';
}

/* A look taken as the verdict: the view updated, a new verdict logged. */
static void judge(hy_schemawatch *w, const sw_look *l)
{
    hy_schema_view *v = &w->view;
    v->readable = l->readable;
    memcpy(v->on_disk, l->hex, sizeof v->on_disk);
    v->stale = !l->readable || memcmp(l->digest, w->running, HY_DIGEST_LEN) != 0;
    if (!l->readable)
        say_gone(w, l->err);
    else if (v->stale)
        say_changed(w, l->digest, l->hex);
    else
        say_matches(w);
}

/* ---- the inotify fd --------------------------------------------------------- */

/* No more events: the fd closed, the watch gone. `why` says so, once. */
static void unwatch(hy_schemawatch *w, const char *why)
{
    if (w->fd < 0)
        return;
    ev_io_stop(w->loop, &w->io);
    if (close(w->fd) < 0)
        hy_log(HY_WARN, COMP, "cannot close the contracts file's inotify fd", "error", strerror(errno), NULL);
    w->fd = w->wd = -1;
    w->writing = false;
    w->dirty = true; /* one last look: the file went with its directory */
    hy_log(HY_WARN, COMP, why, "file", w->file, "dir", w->dir, NULL);
}

/* Just made and still empty: its writer's IN_CLOSE_WRITE follows, so it is
 * judged then, not as an empty file first (`touch` closes it too). */
static bool created_empty(const hy_schemawatch *w)
{
    struct stat st;
    return stat(w->file, &st) == 0 && S_ISREG(st.st_mode) && st.st_size == 0;
}

/* One event: marks the file dirty (look again), or just made and empty
 * (look once its writer closes it). Ends the watch when the directory went away or
 * moved (the path no longer means that directory). */
static void on_event(hy_schemawatch *w, const struct inotify_event *ev)
{
    if (ev->mask & IN_Q_OVERFLOW) {
        w->dirty = true; /* events were lost: one of them may have been ours */
        w->writing = false;
        return;
    }
    if (ev->wd != w->wd)
        return; /* a watch already removed */
    if (ev->mask & (IN_IGNORED | IN_DELETE_SELF | IN_MOVE_SELF)) {
        if (ev->mask & IN_MOVE_SELF)
            (void)inotify_rm_watch(w->fd, w->wd); /* its IN_IGNORED then names a stale wd */
        unwatch(w, "the contracts file's directory is gone or moved: changes to the contracts file will not be "
                   "noticed (hyphad runs on)");
        return;
    }
    if (ev->len == 0 || strcmp(ev->name, w->base) != 0)
        return;
    w->dirty = true;
    w->writing = ev->mask == IN_CREATE && created_empty(w);
}

/* Read every event queued now (they come in batches). */
static void drain(hy_schemawatch *w)
{
    alignas(struct inotify_event) char buf[4096];
    while (w->fd >= 0) {
        ssize_t n = read(w->fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return;
        if (n <= 0) {
            char why[200];
            snprintf(why, sizeof why, "cannot read the contracts file's inotify events: %s: changes to it will "
                     "not be noticed (hyphad runs on)", n < 0 ? strerror(errno) : "end of file");
            unwatch(w, why);
            return;
        }
        for (char *p = buf; p < buf + n;) {
            const struct inotify_event *ev = (const struct inotify_event *)p;
            on_event(w, ev);
            p += sizeof *ev + ev->len;
        }
    }
}

/* Look once the events are read (and a file just made was closed); a look
 * is the verdict only if no event about the file came while it was taken
 * (an editor's next step): otherwise it is taken again, from the next loop
 * turn. A rewrite in place begun while hyphad reads can still be seen half
 * done; its close brings the look that corrects it. */
static void inotify_cb(struct ev_loop *loop, ev_io *io, int revents)
{
    (void)revents;
    hy_schemawatch *w = io->data;
    drain(w);
    if (!w->dirty || w->writing)
        return;
    w->dirty = false;
    sw_look l;
    look(w, &l);
    drain(w);
    if (w->dirty && w->fd >= 0) {
        if (!w->writing)
            ev_feed_event(loop, &w->io, EV_READ);
        return;
    }
    if (w->dirty) /* the watch ended meanwhile: a last look, now */
        look(w, &l);
    w->dirty = false;
    judge(w, &l);
}

/* The inotify fd and the directory's watch; a failure is logged, not fatal. */
static void watch(hy_schemawatch *w)
{
    char why[320];
    if ((w->fd = inotify_init1(IN_CLOEXEC | IN_NONBLOCK)) < 0) {
        snprintf(why, sizeof why, "cannot watch the contracts file (inotify_init1: %s): changes to it will not be "
                 "noticed (hyphad runs on)", strerror(errno));
        hy_log(HY_WARN, COMP, why, "file", w->file, NULL);
        return;
    }
    if ((w->wd = inotify_add_watch(w->fd, w->dir, WATCH_MASK)) < 0) {
        snprintf(why, sizeof why, "cannot watch the contracts file's directory (inotify_add_watch: %s): changes "
                 "to it will not be noticed (hyphad runs on)", strerror(errno));
        hy_log(HY_WARN, COMP, why, "file", w->file, "dir", w->dir, NULL);
        close(w->fd);
        w->fd = -1;
        return;
    }
    ev_io_init(&w->io, inotify_cb, w->fd, EV_READ);
    w->io.data = w;
    ev_io_start(w->loop, &w->io);
}

int hy_schemawatch_start(hy_schemawatch *w, struct ev_loop *loop, const char *path, const hy_schema *running)
{
    memset(w, 0, sizeof *w);
    w->loop = loop;
    w->fd = w->wd = -1;
    const char *slash = strrchr(path, '/');
    if (path[0] != '/' || !slash[1]) { /* the loader resolves it: not expected */
        hy_log(HY_WARN, COMP, "cannot watch the contracts file: not an absolute file path", "file", path, NULL);
        return 0;
    }
    if (!(w->file = strdup(path)) || !(w->dir = slash == path ? strdup("/") : strndup(path, (size_t)(slash - path)))) {
        hy_log(HY_ERROR, COMP, "cannot watch the contracts file: out of memory", "file", path, NULL);
        hy_schemawatch_stop(w);
        return -1;
    }
    w->base = w->file + (slash - path) + 1;
    memcpy(w->running, running->digest, HY_DIGEST_LEN);
    memcpy(w->running_hex, running->digest_hex, sizeof w->running_hex);
    w->view.file = w->file;
    w->said = HY_SW_SAID_MATCHES;
    watch(w);
    sw_look l; /* after the watch: a change made since the load is not missed */
    look(w, &l);
    judge(w, &l);
    return 0;
}

void hy_schemawatch_stop(hy_schemawatch *w)
{
    if (w->loop && w->fd >= 0) { /* a zeroed one was never started: fd 0 is not its */
        ev_io_stop(w->loop, &w->io);
        close(w->fd); /* nothing to do about a failure on the way out */
    }
    free(w->file);
    free(w->dir);
    memset(w, 0, sizeof *w);
    w->fd = w->wd = -1;
}

void hy_schemawatch_view(const hy_schemawatch *w, hy_schema_view *out)
{
    memset(out, 0, sizeof *out);
    if (!w || !w->file)
        return;
    *out = w->view;
    if (w->fd >= 0)
        return;
    uint8_t digest[HY_DIGEST_LEN];
    out->readable = hash_file(w->file, digest, out->on_disk) == 0;
    if (!out->readable)
        out->on_disk[0] = '\0';
    out->stale = !out->readable || memcmp(digest, w->running, HY_DIGEST_LEN) != 0;
}
