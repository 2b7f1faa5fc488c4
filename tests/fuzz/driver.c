/*
 * driver.c -- replay inputs through a fuzz target without libFuzzer.
 *
 *   replay_<target> [FILE|DIR|-]...
 *
 * Runs LLVMFuzzerTestOneInput() once per file named, per regular file in a
 * directory named (recursively, in sorted order, dot files skipped), or on
 * standard input for "-".  With no argument it replays the seed corpus of
 * its target (FUZZ_CORPUS, compiled in), which is how `make check` runs it.
 * A crash aborts, as under libFuzzer; an input that cannot be read, or no
 * input at all, fails the run so that a missing corpus is never a pass.
 */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static unsigned long driver_count;

/* Run the target on the whole of f. */
static int
driver_run_stream(FILE *f, const char *name)
{
	uint8_t *buf = NULL, *nbuf;
	size_t len = 0, cap = 0, n;

	for (;;) {
		if (len == cap) {
			cap = cap == 0 ? 4096 : cap * 2;
			if ((nbuf = realloc(buf, cap)) == NULL) {
				fprintf(stderr, "%s: out of memory\n", name);
				free(buf);
				return -1;
			}
			buf = nbuf;
		}
		n = fread(buf + len, 1, cap - len, f);
		len += n;
		if (n == 0)
			break;
	}
	if (ferror(f)) {
		fprintf(stderr, "%s: read error\n", name);
		free(buf);
		return -1;
	}
	/* an exact-size copy, so that ASan sees a read past the input */
	if ((nbuf = malloc(len > 0 ? len : 1)) == NULL) {
		free(buf);
		return -1;
	}
	if (len > 0)
		memcpy(nbuf, buf, len);
	free(buf);
	/* in the test's log: the input a crash happened on is the last named */
	fprintf(stderr, "replay: %s (%zu bytes)\n", name, len);
	LLVMFuzzerTestOneInput(nbuf, len);
	free(nbuf);
	driver_count++;
	return 0;
}

static int
driver_run_file(const char *path)
{
	FILE *f;
	int r;

	if ((f = fopen(path, "rb")) == NULL) {
		fprintf(stderr, "%s: %s\n", path, strerror(errno));
		return -1;
	}
	r = driver_run_stream(f, path);
	fclose(f);
	return r;
}

static int
driver_skip_dot(const struct dirent *d)
{
	return d->d_name[0] != '.';
}

static int
driver_run_path(const char *path)
{
	struct dirent **names = NULL;
	struct stat st;
	char *sub;
	int i, n, r = 0;

	if (strcmp(path, "-") == 0)
		return driver_run_stream(stdin, "<stdin>");
	if (stat(path, &st) != 0) {
		fprintf(stderr, "%s: %s\n", path, strerror(errno));
		return -1;
	}
	if (!S_ISDIR(st.st_mode))
		return driver_run_file(path);
	if ((n = scandir(path, &names, driver_skip_dot, alphasort)) < 0) {
		fprintf(stderr, "%s: %s\n", path, strerror(errno));
		return -1;
	}
	for (i = 0; i < n; i++) {
		if (r == 0) {
			size_t len = strlen(path) + strlen(names[i]->d_name) + 2;

			if ((sub = malloc(len)) == NULL)
				r = -1;
			else {
				snprintf(sub, len, "%s/%s", path,
				    names[i]->d_name);
				r = driver_run_path(sub);
				free(sub);
			}
		}
		free(names[i]);
	}
	free(names);
	return r;
}

int
main(int argc, char **argv)
{
	int i;

	if (argc < 2) {
#ifdef FUZZ_CORPUS
		if (driver_run_path(FUZZ_CORPUS) != 0)
			return 1;
#else
		if (driver_run_path("-") != 0)
			return 1;
#endif
	}
	for (i = 1; i < argc; i++)
		if (driver_run_path(argv[i]) != 0)
			return 1;
	printf("%s: %lu inputs ran\n", argv[0], driver_count);
	if (driver_count == 0) {
		fprintf(stderr, "%s: no input found\n", argv[0]);
		return 1;
	}
	return 0;
}
