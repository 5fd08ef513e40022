/*
** api.c: the public C functions of ltvfs.h that need no SQLite
** (ltvfs_version, ltvfs_restore), built on this layer's restore. They live
** here, not in vfs/, because they use only cache/ and store/: only vfs/
** talks to SQLite, through the routines the host SQLite hands it.
*/
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "cache/cache.h"
#include "store/store.h"
#include "ltvfs.h"

const char *ltvfs_version(void) { return PACKAGE_VERSION; }

int ltvfs_restore(const char *url, const char *out_path, uint64_t txid, unsigned flags,
                  uint64_t *reached_txid, char **errmsg) {
  store *st = NULL;
  store_ltx_list all = {0};
  store_plan plan = {0};
  ltx_error err = {0};
  int rc;

  if (errmsg) *errmsg = NULL;
  rc = store_open(url, &st, &err);
  if (rc) goto out;
  rc = store_list_all(st, &all, &err);
  if (rc) goto out;
  rc = store_plan_build(all.files, all.n, txid, -1, &plan, &err);
  if (rc == STORE_ERR_EMPTY) ltx_error_prefix(&err, "%s", url);
  if (rc) goto out;
  rc = cache_restore(st, &plan, out_path, (flags & LTVFS_RESTORE_REPLACE) != 0, NULL, NULL,
                     &err);
  if (rc) goto out;
  if (reached_txid) *reached_txid = plan.txid;
out:
  if (rc && errmsg) *errmsg = strdup(err.msg[0] ? err.msg : ltx_err_name(rc));
  store_plan_free(&plan);
  store_ltx_list_free(&all);
  store_close(st);
  return rc;
}
