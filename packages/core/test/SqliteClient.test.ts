/**
 * The node:sqlite client: the database lives in a worker thread, and writes inside a transaction are sent without
 * waiting for an answer. What callers rely on: a failed write fails its transaction and leaves nothing behind,
 * streams page through rows, two clients on one file wait for each other, statements do not pile up in memory,
 * and closing releases the file.
 */
import { assert, describe, it } from "@effect/vitest"
import { Context, Effect, Layer, Stream } from "effect"
import { SqlClient } from "effect/sql"
import * as childProcess from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as SqliteClient from "../src/SqliteClient.ts"

const tmpFile = () => path.join(fs.mkdtempSync(path.join(os.tmpdir(), "offpeak-sqlite-")), "db.sqlite")

const client = (filename: string) =>
  Effect.map(Layer.build(SqliteClient.layer({ filename })), (context) => Context.get(context, SqlClient.SqlClient))

const sqliteClient = (filename: string) =>
  Effect.map(Layer.build(SqliteClient.layer({ filename })), (context) => Context.get(context, SqliteClient.SqliteClient))

const openFiles = () =>
  fs.readdirSync("/proc/self/fd").flatMap((fd) => {
    try {
      return [fs.readlinkSync(`/proc/self/fd/${fd}`)]
    } catch {
      return []
    }
  })

describe("SqliteClient", () => {
  it.effect("a write that fails inside a transaction fails it with SQLite's reason and keeps none of it", () =>
    Effect.gen(function*() {
      const sql = yield* client(tmpFile())
      yield* sql`CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)`
      yield* sql`INSERT INTO t ${sql.insert({ id: 1, v: "kept" })}`
      const error = yield* Effect.gen(function*() {
        yield* sql`INSERT INTO t ${sql.insert([{ id: 2, v: "a" }, { id: 3, v: "b" }])}`
        // the duplicate key: this write is not answered, so its failure shows on the next statement
        yield* sql`INSERT INTO t ${sql.insert({ id: 1, v: "again" })}`
        yield* sql`UPDATE t SET v = 'changed' WHERE id = 2`
        return yield* sql<{ n: number }>`SELECT COUNT(*) AS n FROM t`
      }).pipe(sql.withTransaction, Effect.flip)
      assert.match(error.message, /UNIQUE constraint failed: t\.id/)
      // the transaction was rolled back and the connection goes on
      const rows = yield* sql<{ id: number; v: string }>`SELECT id, v FROM t ORDER BY id`
      assert.deepStrictEqual(rows.map((r) => [r.id, r.v]), [[1, "kept"]])
      yield* sql`INSERT INTO t ${sql.insert({ id: 4, v: "after" })}`.pipe(sql.withTransaction)
      assert.strictEqual((yield* sql<{ n: number }>`SELECT COUNT(*) AS n FROM t`)[0]!.n, 2)
    }).pipe(Effect.scoped))

  it.effect("schema changes inside a transaction are sent on too: one that fails fails it, and none of them stays", () =>
    Effect.gen(function*() {
      const sql = yield* client(tmpFile())
      yield* sql`CREATE TABLE t (id INTEGER PRIMARY KEY)`
      const tables = sql<{ name: string }>`SELECT name FROM sqlite_master WHERE type IN ('table', 'index') ORDER BY name`
      const error = yield* Effect.gen(function*() {
        yield* sql`CREATE TABLE u (id INTEGER PRIMARY KEY, v TEXT)`
        yield* sql`CREATE INDEX u_v ON u (v)`
        // t exists: not answered, so the failure shows on the next statement
        yield* sql`CREATE TABLE t (id INTEGER PRIMARY KEY)`
        yield* sql`ALTER TABLE u ADD COLUMN w TEXT`
        return yield* tables
      }).pipe(sql.withTransaction, Effect.flip)
      assert.match(error.message, /table t already exists/)
      assert.deepStrictEqual((yield* tables).map((r) => r.name), ["t"])
      // the same changes in order go through, and a read in the transaction sees them
      const seen = yield* Effect.gen(function*() {
        yield* sql`CREATE TABLE u (id INTEGER PRIMARY KEY, v TEXT)`
        yield* sql`CREATE INDEX u_v ON u (v)`
        yield* sql`ALTER TABLE u ADD COLUMN w TEXT`
        return yield* sql<{ name: string }>`SELECT name FROM pragma_table_info('u') ORDER BY cid`
      }).pipe(sql.withTransaction)
      assert.deepStrictEqual(seen.map((r) => r.name), ["id", "v", "w"])
      assert.deepStrictEqual((yield* tables).map((r) => r.name), ["t", "u", "u_v"])
    }).pipe(Effect.scoped))

  it.effect("a failing write outside a transaction fails at once", () =>
    Effect.gen(function*() {
      const sql = yield* client(":memory:")
      yield* sql`CREATE TABLE t (id INTEGER PRIMARY KEY)`
      yield* sql`INSERT INTO t ${sql.insert({ id: 1 })}`
      const error = yield* sql`INSERT INTO t ${sql.insert({ id: 1 })}`.pipe(Effect.flip)
      assert.match(error.message, /UNIQUE constraint failed/)
    }).pipe(Effect.scoped))

  it.effect("a stream pages through every row", () =>
    Effect.gen(function*() {
      const sql = yield* client(":memory:")
      yield* sql`CREATE TABLE t (id INTEGER PRIMARY KEY)`
      yield* Effect.gen(function*() {
        for (let i = 0; i < 25; i++) {
          yield* sql`INSERT INTO t ${sql.insert(Array.from({ length: 100 }, (_, j) => ({ id: i * 100 + j })) as any)}`
        }
      }).pipe(sql.withTransaction)
      const ids = yield* Stream.runCollect(sql<{ id: number }>`SELECT id FROM t ORDER BY id`.stream)
      assert.strictEqual(ids.length, 2_500)
      assert.deepStrictEqual([ids[0]!.id, ids[2_499]!.id], [0, 2_499])
    }).pipe(Effect.scoped))

  it.live("two clients on one file: a transaction waits for the other's instead of failing", () =>
    Effect.gen(function*() {
      const file = tmpFile()
      const a = yield* client(file)
      const b = yield* client(file)
      yield* a`CREATE TABLE t (id INTEGER PRIMARY KEY, who TEXT)`
      const write = (sql: SqlClient.SqlClient, who: string, from: number) =>
        Effect.gen(function*() {
          yield* sql<{ n: number }>`SELECT COUNT(*) AS n FROM t`
          yield* Effect.sleep("20 millis")
          yield* sql`INSERT INTO t ${sql.insert(Array.from({ length: 10 }, (_, i) => ({ id: from + i, who })) as any)}`
        }).pipe(sql.withTransaction)
      yield* Effect.all([write(a, "a", 0), write(b, "b", 100)], { concurrency: 2 })
      assert.strictEqual((yield* a<{ n: number }>`SELECT COUNT(*) AS n FROM t`)[0]!.n, 20)
    }).pipe(Effect.scoped))

  it.effect("statements of every list length do not pile up: memory stays flat over hundreds of long IN lists", () =>
    Effect.gen(function*() {
      const sql = yield* client(tmpFile())
      yield* sql`CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)`
      yield* sql`INSERT INTO t ${sql.insert({ id: 7, v: "seven" })}`
      const before = process.memoryUsage().rss
      // a prepared IN list of 5,000 parameters is about 0.8 MB of SQLite program: 200 of them kept would be ~170 MB
      for (let i = 0; i < 200; i++) {
        const ids = Array.from({ length: 5_000 + i }, (_, k) => k)
        const rows = yield* sql<{ v: string }>`SELECT v FROM t WHERE ${sql.in("id", ids)}`
        assert.deepStrictEqual(rows.map((r) => r.v), ["seven"])
      }
      const grownMb = (process.memoryUsage().rss - before) / 1024 / 1024
      assert.isBelow(grownMb, 120, `RSS grew ${grownMb.toFixed(0)} MB`)
      // a short statement used again still comes from the cache, and answers the same
      for (let i = 0; i < 3; i++) {
        assert.deepStrictEqual(yield* sql<{ v: string }>`SELECT v FROM t WHERE id = ${7}`, [{ v: "seven" }])
      }
    }).pipe(Effect.scoped))

  it.effect("many rows in one message: every row inserted (in groups and one by one), read back, counted", () =>
    Effect.gen(function*() {
      const sql = yield* sqliteClient(tmpFile())
      yield* sql`CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT, n INTEGER, big INTEGER)`
      // 250 rows of 4 values: groups of 249 rows (996 parameters) and the one row left one at a time
      const rows = Array.from({ length: 250 }, (_, i) => [i + 1, i % 7 === 0 ? null : `v${i + 1} \u00e9\u{1F600}`, i * 3, 2n ** 60n + BigInt(i)])
      const started = performance.now()
      yield* sql.writeMany("INSERT OR FAIL INTO t (id, v, n, big) VALUES (?, ?, ?, ?)", rows).pipe(sql.withTransaction)
      console.log(`writeMany: 250 rows in ${(performance.now() - started).toFixed(1)} ms`)
      const back = yield* sql`SELECT id, v, n, CAST(big AS TEXT) AS big FROM t ORDER BY id`.values
      assert.deepStrictEqual(back, rows.map(([id, v, n, big]) => [id, v, n, String(big)]))
      // outside a transaction: answered, with the rows each statement returned and the rows changed
      const found = yield* sql.executeMany("SELECT id, n FROM t WHERE id = ?", [[1], [2], [300]])
      assert.deepStrictEqual(found.rows, [[1, 0], [2, 3]])
      const changed = yield* sql.executeMany("UPDATE t SET n = n + ? WHERE id = ?", [[1, 1], [1, 2], [1, 999]])
      assert.strictEqual(changed.changes, 2)
      // `params` first: n > 5 (ids 3 and 4 have n = 6 and 9; id 1 has n = 1)
      const fixed = yield* sql.executeMany("SELECT v FROM t WHERE n > ? AND id = ?", [[1], [3], [4]], [5])
      assert.deepStrictEqual(fixed.rows, [["v3 \u00e9\u{1F600}"], ["v4 \u00e9\u{1F600}"]])
    }).pipe(Effect.scoped))

  it.effect("a many-row write that fails inside a transaction fails it and keeps none of its rows", () =>
    Effect.gen(function*() {
      const sql = yield* sqliteClient(tmpFile())
      yield* sql`CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)`
      yield* sql`INSERT INTO t ${sql.insert({ id: 500, v: "kept" })}`
      const rows = Array.from({ length: 600 }, (_, i) => [i + 1, `v${i}`])
      const error = yield* Effect.gen(function*() {
        yield* sql.writeMany("INSERT OR FAIL INTO t (id, v) VALUES (?, ?)", rows)
        // not answered: its failure (id 500 exists) shows on the next statement
        return yield* sql`SELECT COUNT(*) AS n FROM t`
      }).pipe(sql.withTransaction, Effect.flip)
      assert.match(error.message, /UNIQUE constraint failed: t\.id/)
      assert.deepStrictEqual(yield* sql`SELECT id, v FROM t`.values, [[500, "kept"]])
      // and the connection goes on
      yield* sql.writeMany("INSERT OR FAIL INTO t (id, v) VALUES (?, ?)", [[1, "a"], [2, "b"]]).pipe(sql.withTransaction)
      assert.strictEqual((yield* sql`SELECT COUNT(*) FROM t`.values)[0]![0], 3)
    }).pipe(Effect.scoped))

  it.effect("closing the client closes the database and ends its thread", () =>
    Effect.gen(function*() {
      const file = tmpFile()
      yield* Effect.gen(function*() {
        const sql = yield* client(file)
        yield* sql`CREATE TABLE t (id INTEGER PRIMARY KEY)`
        assert.isTrue(openFiles().some((f) => f.startsWith(file)), "open while the client is")
      }).pipe(Effect.scoped)
      assert.deepStrictEqual(openFiles().filter((f) => f.startsWith(file)), [])
    }))

  it.live("a thread started ahead (prewarm) is the one the next client takes, and an unused one lets the process exit", () =>
    Effect.gen(function*() {
      // the SQLite threads of this process, by the name the client gives them
      const sqliteThreads = () =>
        fs.readdirSync("/proc/self/task").filter((t) => {
          try {
            return fs.readFileSync(`/proc/self/task/${t}/comm`, "utf8").trim() === "offpeak-sqlite"
          } catch {
            return false
          }
        })
      const until = (n: number) =>
        Effect.gen(function*() {
          for (let i = 0; i < 200 && sqliteThreads().length !== n; i++) yield* Effect.sleep("20 millis")
          return sqliteThreads()
        })
      assert.deepStrictEqual(yield* until(0), [], "no SQLite thread before")
      SqliteClient.prewarm()
      SqliteClient.prewarm()
      const warm = yield* until(1)
      assert.strictEqual(warm.length, 1, "one thread started ahead, however many calls")
      yield* Effect.gen(function*() {
        const sql = yield* client(tmpFile())
        yield* sql`CREATE TABLE t (id INTEGER PRIMARY KEY)`
        assert.deepStrictEqual(sqliteThreads(), warm, "the client works on the thread started ahead, not a second one")
      }).pipe(Effect.scoped)
      assert.deepStrictEqual(yield* until(0), [], "closed with its client")

      // a process that starts a thread ahead and never opens a ledger still exits by itself
      const script = `import * as SqliteClient from ${JSON.stringify(path.resolve(import.meta.dirname, "../src/SqliteClient.ts"))}
SqliteClient.prewarm()
setTimeout(() => process.stdout.write("done"), 300)`
      const child = yield* Effect.promise(() =>
        new Promise<{ code: number | null; out: string }>((resolve) => {
          const p = childProcess.spawn(process.execPath, ["--input-type=module", "-e", script], { stdio: ["ignore", "pipe", "inherit"] })
          let out = ""
          p.stdout.on("data", (d: Buffer) => (out += d.toString()))
          const timer = setTimeout(() => p.kill("SIGKILL"), 20_000)
          p.on("exit", (code) => {
            clearTimeout(timer)
            resolve({ code, out })
          })
        })
      )
      assert.deepStrictEqual(child, { code: 0, out: "done" }, "exits on its own (killed after 20 s otherwise)")
    }))
})
