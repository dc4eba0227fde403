/* table.h - aligned text tables for people (hyphad --check, hyphactl).
 *
 * Rows are collected first, then printed with each column as wide as its
 * widest cell (counted in characters, so UTF-8 text aligns), two spaces
 * apart. Cells are copied; the table owns them.
 */
#ifndef HYPHA_TABLE_H
#define HYPHA_TABLE_H

#include <stddef.h>
#include <stdio.h>

#define HY_TABLE_MAX_COLS 16

typedef struct hy_table {
    size_t ncols;
    char **cells;   /* nrows * ncols, row-major (owned) */
    size_t nrows, cap;
    int oom;        /* an allocation failed: print says so */
} hy_table;

void hy_table_init(hy_table *t, size_t ncols);
/* Append a row of exactly ncols cells (NULL prints as empty). */
void hy_table_add(hy_table *t, const char *const *cells);
void hy_table_print(const hy_table *t, FILE *out);
void hy_table_free(hy_table *t);

#endif
