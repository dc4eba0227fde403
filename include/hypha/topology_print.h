/* topology_print.h - the resolved topology for people (a table) and for
 * scripts (JSON), as `hyphad --check` shows it. */
#ifndef HYPHA_TOPOLOGY_PRINT_H
#define HYPHA_TOPOLOGY_PRINT_H

#include <jansson.h>
#include <stdio.h>

#include "hypha/topology.h"

void hy_topology_print(FILE *out, const hy_topology *t);
/* New reference; NULL on allocation failure. */
json_t *hy_topology_to_json(const hy_topology *t);

#endif
