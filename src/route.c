/* route.c - the publish checks and the route table (see hypha/route.h). */
#include "hypha/route.h"

#include <stdlib.h>
#include <string.h>

#include "hypha/log.h"

bool hy_ids_have(const uint16_t *ids, size_t n, uint16_t id)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (ids[mid] == id)
            return true;
        if (ids[mid] < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return false;
}

static int cmp_u16(const void *a, const void *b)
{
    uint16_t x = *(const uint16_t *)a, y = *(const uint16_t *)b;
    return x < y ? -1 : x > y;
}

size_t hy_ids_sort_unique(uint16_t *ids, size_t n)
{
    if (n == 0)
        return 0;
    qsort(ids, n, sizeof *ids, cmp_u16);
    size_t u = 0;
    for (size_t i = 0; i < n; i++)
        if (u == 0 || ids[u - 1] != ids[i])
            ids[u++] = ids[i];
    return u;
}

bool hy_route_check_out(hy_pubcheck *c, const hy_schema *schema, const hy_worker_spec *w, const hy_frame *f,
                        hy_drops *d)
{
    if (c->msg && f->type == c->type) {
        if (f->len == c->msg->size && c->allowed)
            return true;
    } else {
        const hy_message *m = hy_schema_find(schema, f->type);
        if (!m) {
            hy_drops_add(d, HY_DROP_UNKNOWN_TYPE, f->type, 1);
            return false;
        }
        c->type = f->type;
        c->msg = m;
        c->allowed = w->publish_all || hy_ids_have(w->publish, w->npublish, f->type);
    }
    if (f->len != c->msg->size) {
        hy_drops_add(d, HY_DROP_WRONG_SIZE, f->type, 1);
        return false;
    }
    if (!c->allowed) {
        hy_drops_add(d, HY_DROP_NOT_ALLOWED, f->type, 1);
        return false;
    }
    return true;
}

bool hy_route_check_in(const hy_schema *schema, const hy_frame *f, hy_drops *d)
{
    const hy_message *m = hy_schema_find(schema, f->type);
    if (f->type == HY_TLV_CONTROL_TYPE || !m) {
        hy_drops_add(d, HY_DROP_UNKNOWN_TYPE, f->type, 1);
        return false;
    }
    if (f->len != m->size) {
        hy_drops_add(d, HY_DROP_WRONG_SIZE, f->type, 1);
        return false;
    }
    return true;
}

/* ---- subscriptions ------------------------------------------------------ */

int hy_sub_change(hy_sub *s, const uint16_t *ids, size_t n, bool add)
{
    uint16_t *merged = malloc((s->nids + n + 1) * sizeof *merged);
    if (!merged)
        return -1;
    size_t i = 0, j = 0, k = 0;
    while (i < s->nids || j < n) {
        if (j == n || (i < s->nids && s->ids[i] < ids[j])) {
            merged[k++] = s->ids[i++];
        } else if (i == s->nids || ids[j] < s->ids[i]) {
            if (add)
                merged[k++] = ids[j];
            j++;
        } else { /* in both */
            if (add)
                merged[k++] = s->ids[i];
            i++;
            j++;
        }
    }
    free(s->ids);
    s->ids = merged;
    s->nids = k;
    return 0;
}

void hy_sub_clear(hy_sub *s)
{
    free(s->ids);
    s->ids = NULL;
    s->nids = 0;
}

/* ---- the table ------------------------------------------------------------ */

typedef struct pair {
    uint16_t type;
    uint32_t order;              /* subscriber's position: keeps delivery order stable */
    struct hy_sink *sink;
} pair;

static int cmp_pair(const void *a, const void *b)
{
    const pair *x = a, *y = b;
    if (x->type != y->type)
        return x->type < y->type ? -1 : 1;
    return x->order < y->order ? -1 : x->order > y->order;
}

void hy_routes_free(hy_routes *t)
{
    for (size_t i = 0; i < t->n; i++)
        free(t->r[i].sinks);
    free(t->r);
    t->r = NULL;
    t->n = 0;
}

static pair *collect(const hy_sub *subs, size_t *np)
{
    size_t n = 0;
    for (const hy_sub *s = subs; s; s = s->next)
        n += s->nfixed + s->nids;
    *np = n;
    pair *p = n ? malloc(n * sizeof *p) : NULL;
    if (!p)
        return NULL;
    size_t k = 0;
    uint32_t order = 0;
    for (const hy_sub *s = subs; s; s = s->next, order++) {
        for (size_t j = 0; j < s->nfixed; j++)
            p[k++] = (pair){s->fixed[j], order, s->sink};
        for (size_t j = 0; j < s->nids; j++)
            p[k++] = (pair){s->ids[j], order, s->sink};
    }
    qsort(p, n, sizeof *p, cmp_pair);
    return p;
}

static int fill(hy_routes *t, const pair *p, size_t n)
{
    for (size_t i = 0; i < n;) {
        size_t j = i;
        while (j < n && p[j].type == p[i].type)
            j++;
        hy_route *rt = &t->r[t->n++];
        rt->type_id = p[i].type;
        if (!(rt->sinks = malloc((j - i) * sizeof *rt->sinks)))
            return -1;
        for (size_t m = i; m < j; m++)
            if (rt->n == 0 || rt->sinks[rt->n - 1] != p[m].sink)
                rt->sinks[rt->n++] = p[m].sink; /* topology and hello may both list it */
        i = j;
    }
    return 0;
}

int hy_routes_build(hy_routes *t, const hy_sub *subs)
{
    hy_routes_free(t);
    size_t n;
    pair *p = collect(subs, &n);
    if (n == 0)
        return 0;
    size_t ntypes = 0;
    for (size_t i = 0; p && i < n; i++)
        ntypes += i == 0 || p[i].type != p[i - 1].type;
    if (!p || !(t->r = calloc(ntypes, sizeof *t->r)) || fill(t, p, n) < 0) {
        free(p);
        hy_routes_free(t);
        hy_log(HY_ERROR, "relay", "out of memory building routes: no frame reaches a worker", NULL);
        return -1;
    }
    free(p);
    return 0;
}

const hy_route *hy_routes_find(const hy_routes *t, uint16_t type_id)
{
    size_t lo = 0, hi = t->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (t->r[mid].type_id == type_id)
            return &t->r[mid];
        if (t->r[mid].type_id < type_id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}
