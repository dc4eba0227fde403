/* table.c - aligned text tables (see hypha/table.h). */
#include "hypha/table.h"

#include <stdlib.h>
#include <string.h>

void hy_table_init(hy_table *t, size_t ncols)
{
    memset(t, 0, sizeof *t);
    t->ncols = ncols > HY_TABLE_MAX_COLS ? HY_TABLE_MAX_COLS : ncols;
}

void hy_table_add(hy_table *t, const char *const *cells)
{
    if (t->oom)
        return;
    if (t->nrows == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 16;
        char **nc = realloc(t->cells, cap * t->ncols * sizeof *nc);
        if (!nc) {
            t->oom = 1;
            return;
        }
        t->cells = nc;
        t->cap = cap;
    }
    char **row = t->cells + t->nrows * t->ncols;
    for (size_t c = 0; c < t->ncols; c++) {
        row[c] = strdup(cells[c] ? cells[c] : "");
        if (!row[c]) {
            for (size_t k = 0; k < c; k++)
                free(row[k]);
            t->oom = 1;
            return;
        }
    }
    t->nrows++;
}

/* Characters, not bytes: UTF-8 continuation bytes do not count. */
static size_t width(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        if (((unsigned char)*s & 0xC0) != 0x80)
            n++;
    return n;
}

void hy_table_print(const hy_table *t, FILE *out)
{
    size_t w[HY_TABLE_MAX_COLS] = {0};
    for (size_t r = 0; r < t->nrows; r++)
        for (size_t c = 0; c < t->ncols; c++) {
            size_t k = width(t->cells[r * t->ncols + c]);
            if (k > w[c])
                w[c] = k;
        }
    for (size_t r = 0; r < t->nrows; r++) {
        char *const *row = t->cells + r * t->ncols;
        size_t last = t->ncols; /* past the last non-empty cell: no trailing spaces */
        while (last > 0 && row[last - 1][0] == '\0')
            last--;
        for (size_t c = 0; c < last; c++) {
            fputs(row[c], out);
            if (c + 1 < last)
                for (size_t k = width(row[c]); k < w[c] + 2; k++)
                    fputc(' ', out);
        }
        fputc('\n', out);
    }
    if (t->oom)
        fputs("(table truncated: out of memory)\n", out);
}

void hy_table_free(hy_table *t)
{
    for (size_t i = 0; i < t->nrows * t->ncols; i++)
        free(t->cells[i]);
    free(t->cells);
    memset(t, 0, sizeof *t);
}
