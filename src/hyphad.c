/* hyphad.c - the hypha supervisor daemon's entry point: options, then either
 * `--check` (validate and print the resolved topology) or running. Kept thin:
 * everything it does lives in the modules it calls. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hypha/topology.h"
#include "hypha/topology_print.h"
#include "hypha/version.h"

/* Exit codes: 0 ok, 1 runtime failure, 2 bad configuration or usage. */
enum { EXIT_CONFIG = 2 };

static void usage(FILE *out)
{
    fprintf(out,
            "usage: hyphad [options] TOPOLOGY.yaml\n"
            "       hyphad --check [--json] TOPOLOGY.yaml\n"
            "\n"
            "  --check            validate the topology, print it resolved, and exit\n"
            "                     (0 valid, 2 invalid)\n"
            "  --json             with --check: print the resolved topology as JSON\n"
            "  --log-format FMT   text (default) or json\n"
            "  --version          print the version and exit\n"
            "  -h, --help         this help\n");
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"check", no_argument, NULL, 'c'},
        {"json", no_argument, NULL, 'j'},
        {"log-format", required_argument, NULL, 'l'},
        {"version", no_argument, NULL, 'V'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int check = 0, json = 0, c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'c': check = 1; break;
        case 'j': json = 1; break;
        case 'l':
            if (strcmp(optarg, "text") != 0 && strcmp(optarg, "json") != 0) {
                fprintf(stderr, "hyphad: --log-format must be text or json, not '%s'\n", optarg);
                return EXIT_CONFIG;
            }
            break;
        case 'V': printf("hyphad %s\n", HYPHA_VERSION); return 0;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return EXIT_CONFIG;
        }
    }
    if (optind != argc - 1) {
        fprintf(stderr, "hyphad: expected exactly one topology file\n");
        usage(stderr);
        return EXIT_CONFIG;
    }
    if (json && !check) {
        fprintf(stderr, "hyphad: --json goes with --check (use --log-format json for JSON logs)\n");
        return EXIT_CONFIG;
    }

    hy_err err = {{0}};
    hy_topology *t = hy_topology_load(argv[optind], &err);
    if (!t) {
        fprintf(stderr, "%s\n", err.msg);
        return EXIT_CONFIG;
    }
    if (check) {
        if (json) {
            json_t *j = hy_topology_to_json(t);
            if (!j || json_dumpf(j, stdout, JSON_INDENT(2) | JSON_SORT_KEYS | JSON_REAL_PRECISION(12)) < 0) {
                fprintf(stderr, "hyphad: out of memory rendering JSON\n");
                json_decref(j);
                hy_topology_free(t);
                return 1;
            }
            fputc('\n', stdout);
            json_decref(j);
        } else {
            hy_topology_print(stdout, t);
        }
        hy_topology_free(t);
        return 0;
    }
    fprintf(stderr, "hyphad: %s is valid, but running workers is not built yet "
                    "(supervision is the next milestone); use --check\n", argv[optind]);
    hy_topology_free(t);
    return 1;
}
