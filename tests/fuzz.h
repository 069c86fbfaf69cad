/* SPDX-License-Identifier: MIT */
/*
 * What every libFuzzer target shares: the entry point libFuzzer (or
 * fuzz-driver.c, for the corpus runs of the plain build) calls, and the
 * check that turns a broken invariant into the crash libFuzzer reports,
 * naming the file and line.
 */
#ifndef CFS_FUZZ_H
#define CFS_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_ASSERT(cond)                                                          \
	do {                                                                       \
		if (!(cond)) {                                                     \
			fprintf(stderr, "%s:%d: %s\n", __FILE__, __LINE__, #cond); \
			abort();                                                   \
		}                                                                  \
	} while (0)

#endif /* CFS_FUZZ_H */
