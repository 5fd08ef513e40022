/*
** pagecache.c: the bounded in-memory page cache of the read path.
**
** Keyed by (file id, pgno): an LTX file never changes once written, so an
** entry is valid for as long as it stays in memory, whatever view asks for
** it. Least recently used entries go first once the byte limit is reached.
** One mutex guards everything; a hit costs a hash lookup and one page copy.
*/
#include "config.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <uthash.h>

#include "cache/cache.h"

typedef struct pc_key {
  uint64_t file_id;
  uint32_t pgno;
  uint32_t zero; /* keeps the key free of padding for uthash's memcmp */
} pc_key;

typedef struct pc_entry {
  pc_key key;
  UT_hash_handle hh;
  struct pc_entry *prev, *next; /* LRU list: head = most recent */
  uint32_t size;
  uint8_t data[];
} pc_entry;

struct page_cache {
  pthread_mutex_t mutex;
  pc_entry *table;
  pc_entry *head, *tail;
  size_t bytes;
  size_t limit;
  uint64_t hits, misses, evictions;
};

/* Per-entry bookkeeping counted against the limit, beside the page bytes. */
#define PC_OVERHEAD (sizeof(pc_entry) + 32)

page_cache *page_cache_new(size_t limit_bytes) {
  page_cache *pc = calloc(1, sizeof(*pc));
  if (pc == NULL) return NULL;
  pthread_mutex_init(&pc->mutex, NULL);
  pc->limit = limit_bytes;
  return pc;
}

static void lru_unlink(page_cache *pc, pc_entry *e) {
  if (e->prev) e->prev->next = e->next;
  else pc->head = e->next;
  if (e->next) e->next->prev = e->prev;
  else pc->tail = e->prev;
  e->prev = e->next = NULL;
}

static void lru_push_front(page_cache *pc, pc_entry *e) {
  e->prev = NULL;
  e->next = pc->head;
  if (pc->head) pc->head->prev = e;
  pc->head = e;
  if (pc->tail == NULL) pc->tail = e;
}

static void evict_to(page_cache *pc, size_t limit) {
  while (pc->bytes > limit && pc->tail != NULL) {
    pc_entry *e = pc->tail;
    lru_unlink(pc, e);
    HASH_DEL(pc->table, e);
    pc->bytes -= e->size + PC_OVERHEAD;
    pc->evictions++;
    free(e);
  }
}

void page_cache_free(page_cache *pc) {
  if (pc == NULL) return;
  evict_to(pc, 0);
  pthread_mutex_destroy(&pc->mutex);
  free(pc);
}

int page_cache_get(page_cache *pc, uint64_t file_id, uint32_t pgno, uint8_t *out,
                   uint32_t page_size) {
  pc_key k = {file_id, pgno, 0};
  pc_entry *e = NULL;
  int hit = 0;
  pthread_mutex_lock(&pc->mutex);
  HASH_FIND(hh, pc->table, &k, sizeof(k), e);
  if (e != NULL && e->size == page_size) {
    memcpy(out, e->data, page_size);
    lru_unlink(pc, e);
    lru_push_front(pc, e);
    pc->hits++;
    hit = 1;
  } else {
    pc->misses++;
  }
  pthread_mutex_unlock(&pc->mutex);
  return hit;
}

int page_cache_contains(page_cache *pc, uint64_t file_id, uint32_t pgno) {
  pc_key k = {file_id, pgno, 0};
  pc_entry *e = NULL;
  pthread_mutex_lock(&pc->mutex);
  HASH_FIND(hh, pc->table, &k, sizeof(k), e);
  pthread_mutex_unlock(&pc->mutex);
  return e != NULL;
}

void page_cache_put(page_cache *pc, uint64_t file_id, uint32_t pgno, const uint8_t *page,
                    uint32_t page_size) {
  pc_key k = {file_id, pgno, 0};
  pc_entry *e = NULL;
  pthread_mutex_lock(&pc->mutex);
  if (pc->limit < page_size + PC_OVERHEAD) goto out; /* caching is off */
  HASH_FIND(hh, pc->table, &k, sizeof(k), e);
  if (e != NULL) { /* same immutable bytes: only refresh its recency */
    lru_unlink(pc, e);
    lru_push_front(pc, e);
    goto out;
  }
  e = malloc(sizeof(*e) + page_size);
  if (e == NULL) goto out; /* a cache that cannot grow just misses later */
  memset(e, 0, sizeof(*e));
  e->key = k;
  e->size = page_size;
  memcpy(e->data, page, page_size);
  HASH_ADD(hh, pc->table, key, sizeof(pc_key), e);
  lru_push_front(pc, e);
  pc->bytes += page_size + PC_OVERHEAD;
  evict_to(pc, pc->limit);
out:
  pthread_mutex_unlock(&pc->mutex);
}

void page_cache_set_limit(page_cache *pc, size_t limit_bytes) {
  pthread_mutex_lock(&pc->mutex);
  pc->limit = limit_bytes;
  evict_to(pc, limit_bytes);
  pthread_mutex_unlock(&pc->mutex);
}

size_t page_cache_limit(page_cache *pc) {
  size_t limit;
  pthread_mutex_lock(&pc->mutex);
  limit = pc->limit;
  pthread_mutex_unlock(&pc->mutex);
  return limit;
}

void page_cache_stats(page_cache *pc, page_cache_stat *out) {
  pthread_mutex_lock(&pc->mutex);
  out->hits = pc->hits;
  out->misses = pc->misses;
  out->evictions = pc->evictions;
  out->bytes = pc->bytes;
  out->limit = pc->limit;
  out->entries = HASH_COUNT(pc->table);
  pthread_mutex_unlock(&pc->mutex);
}
