#!/usr/bin/python3
# tests/primary_writer.py: an application writing through litestream-primary,
# for the crash loop (tests/primary_crash.sh) and the several-writers test.
# Python's sqlite3 module is the application: it loads libltvfs, opens the
# database with vfs=litestream-primary, and commits small transactions in a
# loop, each inserting a run of ids; after each COMMIT returns it appends
# "first count" to the acknowledgement log (flushed), so a test that kills
# it knows which commits it saw succeed.
#
#   primary_writer.py --missing DB ACKLOG
#       prints how many rows that ACKLOG acknowledges are not in DB (a
#       restored replica): what every test of acknowledged commits checks.
#       A last line the kill cut short is not an acknowledgement.
#   primary_writer.py LIB DB URL ACKLOG [--mode wal|delete] [--params P]
#                     [--commits N] [--id-base B] [--checkpoint-every K]
# Ids are B*1e9 + a counter, so several writers never collide. Every K
# commits: PRAGMA wal_checkpoint(TRUNCATE) (WAL mode), which makes the VFS
# seal the WAL it was capturing. With --commits the writer stops after N
# commits and closes cleanly (the close uploads what is pending).
# --interval S sleeps between commits; --hold S keeps the database open S
# seconds before the close; --stop-on-error: a failing commit prints
# "error: MESSAGE", then "read ok N" if the database still answers a query,
# and the writer exits 3 (the lease and outage tests); --retry-full S retries
# a commit that fails with SQLITE_FULL (a full spool) for up to S seconds. Prints "opened" once
# the database is open for writing.
import argparse
import random
import sqlite3
import sys
import time

if len(sys.argv) == 4 and sys.argv[1] == "--missing":
    have = set(r[0] for r in sqlite3.connect(sys.argv[2]).execute("SELECT id FROM t"))
    missing = 0
    for line in open(sys.argv[3]):
        parts = line.split()
        if len(parts) != 2 or not line.endswith("\n"):
            continue
        first, n = int(parts[0]), int(parts[1])
        missing += sum(1 for i in range(first, first + n) if i not in have)
    print(missing)
    sys.exit(0)

ap = argparse.ArgumentParser()
ap.add_argument("lib")
ap.add_argument("db")
ap.add_argument("url")
ap.add_argument("acklog")
ap.add_argument("--mode", default="wal")
ap.add_argument("--params", default="")
ap.add_argument("--commits", type=int, default=0)
ap.add_argument("--id-base", type=int, default=0)
ap.add_argument("--checkpoint-every", type=int, default=40)
ap.add_argument("--synchronous", default="FULL")
ap.add_argument("--interval", type=float, default=0)
ap.add_argument("--hold", type=float, default=0)
ap.add_argument("--stop-on-error", action="store_true")
ap.add_argument("--retry-full", type=float, default=0)
a = ap.parse_args()

boot = sqlite3.connect(":memory:")
boot.enable_load_extension(True)
boot.load_extension(a.lib)  # registers the VFS for every later connection

uri = "file:%s?vfs=litestream-primary&replica=%s%s" % (a.db, a.url, a.params)
con = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=30)
con.execute("PRAGMA synchronous=%s" % a.synchronous)
con.execute("PRAGMA journal_mode=%s" % a.mode).fetchone()
con.execute("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v BLOB)")
lo, hi = a.id_base * 10**9, (a.id_base + 1) * 10**9
row = con.execute("SELECT max(id) FROM t WHERE id >= ? AND id < ?", (lo, hi)).fetchone()
next_id = (row[0] + 1) if row[0] is not None else lo + 1
ack = open(a.acklog, "a")
print("opened", flush=True)
start = time.time()
done = 0


def commit(n):
    con.execute("BEGIN IMMEDIATE")
    for k in range(n):
        con.execute("INSERT INTO t VALUES(?, randomblob(?))", (next_id + k, random.randint(10, 3000)))
    if next_id - lo > 20 and random.random() < 0.3:
        con.execute("UPDATE t SET v = randomblob(?) WHERE id = ?",
                    (random.randint(10, 2000), random.randint(lo + 1, next_id - 1)))
    con.execute("COMMIT")


while a.commits == 0 or done < a.commits:
    n = random.randint(1, 5)
    try:
        commit(n)
    except sqlite3.Error as e:
        if a.retry_full and "full" in str(e) and time.time() < start + a.retry_full:
            con.execute("ROLLBACK") if con.in_transaction else None
            time.sleep(0.1)  # an application waiting for the spool to drain
            continue
        if not a.stop_on_error:
            raise
        detail = con.execute("SELECT ltvfs_last_error()").fetchone()[0]
        print("error: %s (%s)" % (e, detail), flush=True)
        try:
            con.execute("ROLLBACK")
        except sqlite3.Error:
            pass
        rows = con.execute("SELECT count(*) FROM t").fetchone()[0]
        print("read ok %d" % rows, flush=True)
        sys.exit(3)
    ack.write("%d %d\n" % (next_id, n))
    ack.flush()
    next_id += n
    done += 1
    if a.mode == "wal" and a.checkpoint_every and done % a.checkpoint_every == 0:
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    if a.interval:
        time.sleep(a.interval)
if a.hold:
    time.sleep(a.hold)
con.close()
sys.exit(0)
