/**
 * The node:sqlite client: the database lives in a worker thread, and writes inside a transaction are sent without
 * waiting for an answer. What callers rely on: a failed write fails its transaction and leaves nothing behind,
 * streams page through rows, two clients on one file wait for each other, statements do not pile up in memory,
 * and closing releases the file.
 */
import { assert, describe, it } from "@effect/vitest"
import { Context, Effect, Layer, Stream } from "effect"
import { SqlClient } from "effect/sql"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as SqliteClient from "../src/SqliteClient.ts"

const tmpFile = () => path.join(fs.mkdtempSync(path.join(os.tmpdir(), "offpeak-sqlite-")), "db.sqlite")

const client = (filename: string) =>
  Effect.map(Layer.build(SqliteClient.layer({ filename })), (context) => Context.get(context, SqlClient.SqlClient))

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
})
