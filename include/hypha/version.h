/* version.h - the one place the version is written. */
#ifndef HYPHA_VERSION_H
#define HYPHA_VERSION_H
#define HYPHA_VERSION "0.1.0"
#endif
