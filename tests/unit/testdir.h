/* testdir.h - the unit tests' scratch directory: made under /tmp, given
 * copies of the wire vectors' contracts files, removed at the end. */
#ifndef HYPHA_TESTDIR_H
#define HYPHA_TESTDIR_H

#include <limits.h>

/* /tmp/hypha-NAME-XXXXXX, resolved (realpath) into out. 0 or -1. */
int hy_test_mkdtemp(const char *name, char out[PATH_MAX]);
/* tests/vectors/VECTOR (or $HYPHA_VECTORS/VECTOR) copied to DIR/AS. 0 or -1. */
int hy_test_copy_vector(const char *dir, const char *vector, const char *as);
/* rm -rf DIR (nothing when DIR is empty). 0 or -1. */
int hy_test_rmtree(const char *dir);

#endif
