/*
** replay_main.c: runs a libFuzzer target over files, without libFuzzer.
**
**   tests/fuzz_replay DIR_OR_FILE...
**
** Every regular file in each directory (not recursive), or each file named,
** goes once through LLVMFuzzerTestOneInput. Prints how many inputs ran. A
** finding is a crash or an abort (the target's oracles abort), which ends
** the process with a signal; the exit status is otherwise 0, except 1 when a
** path cannot be read at all, so that a wrong corpus path does not turn the
** test into one that checks nothing.
*/
#include "config.h"

#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Runs one file; returns 0, or -1 if it cannot be read. */
static int run_file(const char *path) {
  int rc = -1;
  FILE *f = fopen(path, "rb");
  uint8_t *buf = NULL;
  long len;
  if (f == NULL || fseek(f, 0, SEEK_END) != 0 || (len = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0)
    goto out;
  /* At least one byte, so that an empty input is a valid pointer too. */
  buf = malloc((size_t)len + 1);
  if (buf == NULL || fread(buf, 1, (size_t)len, f) != (size_t)len) goto out;
  LLVMFuzzerTestOneInput(buf, (size_t)len);
  rc = 0;
out:
  if (f != NULL) fclose(f);
  free(buf);
  return rc;
}

int main(int argc, char **argv) {
  size_t count = 0;
  int status = 0;
  for (int i = 1; i < argc; i++) {
    struct stat st;
    DIR *dir;
    struct dirent *de;
    if (stat(argv[i], &st) != 0) {
      fprintf(stderr, "fuzz_replay: cannot stat %s\n", argv[i]);
      status = 1;
      continue;
    }
    if (!S_ISDIR(st.st_mode)) {
      if (run_file(argv[i]) == 0) count++;
      else status = 1;
      continue;
    }
    dir = opendir(argv[i]);
    if (dir == NULL) {
      fprintf(stderr, "fuzz_replay: cannot open %s\n", argv[i]);
      status = 1;
      continue;
    }
    while ((de = readdir(dir)) != NULL) {
      char path[4096];
      if (de->d_name[0] == '.') continue;
      if ((size_t)snprintf(path, sizeof(path), "%s/%s", argv[i], de->d_name) >= sizeof(path)) continue;
      if (stat(path, &st) != 0 || !S_ISREG(st.st_mode)) continue;
      if (run_file(path) == 0) count++;
      else status = 1;
    }
    closedir(dir);
  }
  printf("fuzz_replay: %zu inputs, no crash\n", count);
  return status;
}
