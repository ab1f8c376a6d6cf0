/**
 * The checkpointed Postgres source never loses a row: keyset pages on
 * (checkpoint column, key), a snapshot bound per run, counts of what a read
 * yields, NULLs refused, old plain-value checkpoints still read. Real
 * PostgreSQL (`OFFPEAK_TEST_PG_URL`), each test in a schema of its own.
 */
import { assert, it } from "@effect/vitest"
import type { PgClient } from "@effect/sql-pg"
import type * as SourceModel from "@offpeak/core/Source"
import { Effect, Option, Schema, Stream } from "effect"
import type { Scope } from "effect"
import * as Pg from "../../../core/test/support/postgres.ts"
import { Postgres } from "../index.ts"

const rows = <A>(items: ReadonlyArray<SourceModel.Item<A>>) =>
  items.filter((i): i is SourceModel.Row<A> => i._tag === "Row")

const fresh = (prefix: string): Effect.Effect<{ url: string; sql: PgClient.PgClient }, unknown, Scope.Scope> =>
  Effect.gen(function*() {
    const schema = yield* Pg.freshSchema(Pg.url()!, prefix)
    const sql = yield* Pg.connect(schema.url)
    return { url: schema.url, sql }
  })

const Doc = Schema.Struct({ id: Schema.Number, body: Schema.String })
type Doc = typeof Doc.Type

/** every value seen more than once */
const repeated = <A>(values: ReadonlyArray<A>): Array<A> => {
  const seen = new Set<A>()
  const twice = new Set<A>()
  for (const v of values) (seen.has(v) ? twice : seen).add(v)
  return [...twice]
}

/**
 * What paging on the checkpoint column alone (`WHERE col > $last ORDER BY col
 * LIMIT n`, the source before this change) reads of a table: the figure the
 * fix is measured against.
 */
const oldPaging = (sql: PgClient.PgClient, table: string, column: string, batchSize: number) =>
  Effect.gen(function*() {
    let read = 0
    let last: string | undefined
    while (true) {
      const page: ReadonlyArray<{ c: string }> = last === undefined
        ? yield* sql.unsafe<{ c: string }>(`SELECT ${column}::text AS c FROM ${table} ORDER BY ${column} LIMIT ${batchSize}`)
        : yield* sql.unsafe<{ c: string }>(
          `SELECT ${column}::text AS c FROM ${table} WHERE ${column} > $1 ORDER BY ${column} LIMIT ${batchSize}`,
          [last]
        )
      read += page.length
      if (page.length < batchSize) return read
      last = page.at(-1)!.c
    }
  })

Pg.describePostgres("Postgres.source: keyset pages on (checkpoint column, key)", () => {
  it.effect("2,500 rows sharing one updated_at, batchSize 1,000: 2,500 read, each once; continuing inside the tie group reads exactly the rest", () =>
    Effect.gen(function*() {
      const { sql, url } = yield* fresh("ties")
      yield* sql.unsafe("CREATE TABLE docs (id int PRIMARY KEY, body text NOT NULL, updated_at timestamptz NOT NULL)")
      yield* sql.unsafe("CREATE INDEX ON docs (updated_at, id)")
      // what a loader writing now() produces: one value for the whole load, ids in no particular order
      yield* sql.unsafe(`INSERT INTO docs SELECT g, 'doc ' || g, '2026-03-01T09:00:00.123456Z'
        FROM generate_series(1, 2500) g ORDER BY random()`)
      const source = Postgres.source({
        url,
        query: "SELECT id, body, updated_at FROM docs",
        schema: Doc,
        key: "id",
        checkpoint: { column: "updated_at" },
        batchSize: 1_000,
        name: "docs"
      })
      const started = Date.now()
      const all = yield* Stream.runCollect(source.read)
      const ms = Date.now() - started
      const ids = rows(all).map((r) => r.value.id)
      assert.strictEqual(all.length, 2_500)
      assert.deepStrictEqual(repeated(ids), [])
      assert.deepStrictEqual(ids, Array.from({ length: 2_500 }, (_, i) => i + 1))
      assert.deepStrictEqual(all.map((i) => i.position), Array.from({ length: 2_500 }, (_, i) => i + 1))
      assert.strictEqual(yield* source.count, 2_500)
      const old = yield* oldPaging(sql, "docs", "updated_at", 1_000)
      assert.strictEqual(old, 1_000)
      console.log(`2,500 rows with one updated_at, pages of 1,000: read ${all.length} (${new Set(ids).size} distinct) in ${ms} ms; count ${yield* source.count}; paging on updated_at alone reads ${old}`)

      // continue after the 1,234th row, inside the tie group (and across the next page boundary)
      const cp = Option.getOrThrow(Postgres.checkpointOf(all[1_233]!))
      assert.strictEqual(cp, "{\"col\":\"2026-03-01 09:00:00.123456+00\",\"key\":\"1234\"}")
      const rest = yield* Stream.runCollect(source.continueAfter(cp, 1_235).read)
      assert.deepStrictEqual(rest.map((i) => [i.position, (i as SourceModel.Row<Doc>).value.id]), all.slice(1_234).map((i) => [i.position, (i as SourceModel.Row<Doc>).value.id]))
      assert.strictEqual(yield* source.continueAfter(cp, 1_235).count, 1_266)
      console.log(`continued after row 1,234 of the tie group: ${rest.length} rows, first id ${(rest[0] as SourceModel.Row<Doc>).value.id}, last id ${(rest.at(-1) as SourceModel.Row<Doc>).value.id}`)
    }))

  it.effect("ties straddling every page boundary and a tie group longer than three pages: every row once, in (column, key) order", () =>
    Effect.gen(function*() {
      const { sql, url } = yield* fresh("bounds")
      yield* sql.unsafe("CREATE TABLE t (k text PRIMARY KEY, v int NOT NULL, body text NOT NULL)")
      // rows 1..1000 take v = floor(i / 2): rows 100 and 101, 200 and 201, … share a value, so with pages of 100 a pair
      // straddles every boundary; 350 more rows share v = 250 (pages 5 to 9); keys are hashes, unrelated to v
      yield* sql.unsafe(`INSERT INTO t SELECT md5(g::text), g / 2, 'row ' || g FROM generate_series(1, 1000) g ORDER BY random()`)
      yield* sql.unsafe(`INSERT INTO t SELECT md5('extra' || g), 250, 'extra ' || g FROM generate_series(1, 350) g`)
      const Row = Schema.Struct({ k: Schema.String, v: Schema.Number })
      const source = Postgres.source({ url, query: "SELECT k, v FROM t", schema: Row, key: "k", checkpoint: { column: "v" }, batchSize: 100 })
      const all = rows(yield* Stream.runCollect(source.read)).map((r) => r.value)
      assert.strictEqual(all.length, 1_350)
      assert.deepStrictEqual(repeated(all.map((r) => r.k)), [])
      const expected = yield* sql.unsafe<{ k: string; v: number }>("SELECT k, v FROM t ORDER BY v, k")
      assert.deepStrictEqual(all, expected)
      // the pairs really straddle the boundaries
      const boundaries = Array.from({ length: 13 }, (_, p) => [all[p * 100 + 99]!.v, all[p * 100 + 100]!.v])
      const straddled = boundaries.filter(([a, b]) => a === b).length
      assert.isAtLeast(straddled, 10)
      assert.strictEqual(yield* source.count, 1_350)
      const old = yield* oldPaging(sql, "t", "v", 100)
      console.log(`1,350 rows, pages of 100, ${straddled} of 13 page boundaries inside a tie: read ${all.length}, each once; count ${yield* source.count}; paging on v alone reads ${old}`)
      assert.isBelow(old, 1_350)
    }))

  it.effect("hostile identifiers and key values: a table, column and key named with quotes, spaces and keywords", () =>
    Effect.gen(function*() {
      const { sql, url } = yield* fresh("hostile")
      yield* sql.unsafe(`CREATE TABLE "we""ird; DROP TABLE x; --" ("select" text PRIMARY KEY, "up""d at" int NOT NULL, "from" text)`)
      const keys = ["'); DROP TABLE x; --", "a\"b", "名前 🙂", "$1", "\\", "plain", "", " "]
      for (const [i, k] of keys.entries()) {
        yield* sql.unsafe(`INSERT INTO "we""ird; DROP TABLE x; --" VALUES ($1, $2, $3)`, [k, i % 3, `v${i}`])
      }
      const Row = Schema.Struct({ select: Schema.String, from: Schema.String })
      const source = Postgres.source({
        url,
        query: `SELECT * FROM "we""ird; DROP TABLE x; --"`,
        schema: Row,
        key: "select",
        checkpoint: { column: "up\"d at" },
        batchSize: 2
      })
      const all = yield* Stream.runCollect(source.read)
      assert.deepStrictEqual(
        rows(all).map((r) => r.value.select),
        (yield* sql.unsafe<{ k: string }>(`SELECT "select" AS k FROM "we""ird; DROP TABLE x; --" ORDER BY "up""d at", "select"`)).map((r) => r.k)
      )
      // continue after each row in turn: exactly the rows after it
      for (let i = 0; i < all.length; i++) {
        const rest = yield* Stream.runCollect(source.continueAfter(Option.getOrThrow(Postgres.checkpointOf(all[i]!)), i + 2).read)
        assert.deepStrictEqual(rows(rest).map((r) => r.value.select), rows(all).slice(i + 1).map((r) => r.value.select))
      }
      assert.strictEqual(yield* source.count, keys.length)
      assert.deepStrictEqual(yield* sql.unsafe(`SELECT count(*)::int AS n FROM "we""ird; DROP TABLE x; --"`), [{ n: keys.length }])
    }))

  it.effect("old plain-value checkpoints (an earlier version's) continue after the value: numbers, text forms, timestamps", () =>
    Effect.gen(function*() {
      const { sql, url } = yield* fresh("old")
      yield* sql.unsafe("CREATE TABLE t (id int PRIMARY KEY, v int NOT NULL, at timestamptz NOT NULL)")
      // ten values, three rows each
      yield* sql.unsafe(`INSERT INTO t SELECT g, (g - 1) / 3 + 1, '2026-01-01T00:00:00Z'::timestamptz + ((g - 1) / 3 + 1) * interval '1 second'
        FROM generate_series(1, 30) g ORDER BY random()`)
      const Row = Schema.Struct({ id: Schema.Number, v: Schema.Number })
      const byV = Postgres.source({ url, query: "SELECT id, v, at FROM t", schema: Row, key: "id", checkpoint: { column: "v" }, batchSize: 4 })
      // "5" is what the old source stored after a row with v = 5: it had read every row with v = 5 (or lost them)
      const rest = yield* Stream.runCollect(byV.continueAfter("5", 16).read)
      assert.deepStrictEqual(rows(rest).map((r) => r.value.id), Array.from({ length: 15 }, (_, i) => i + 16))
      assert.deepStrictEqual(rest.map((i) => i.position), Array.from({ length: 15 }, (_, i) => i + 16))
      assert.strictEqual(yield* byV.continueAfter("5", 16).count, 15)
      // the items read from there carry checkpoints of this version
      assert.strictEqual(Option.getOrThrow(Postgres.checkpointOf(rest[0]!)), "{\"col\":\"6\",\"key\":\"16\"}")
      for (const after of [5, 5n]) {
        assert.strictEqual((yield* Stream.runCollect(byV.continueAfter(after, 1).read)).length, 15)
      }
      const byAt = Postgres.source({ url, query: "SELECT id, v, at FROM t", schema: Row, key: "id", checkpoint: { column: "at" }, batchSize: 4 })
      const old = "2026-01-01 00:00:07+00"
      assert.deepStrictEqual(rows(yield* Stream.runCollect(byAt.continueAfter(old, 1).read)).map((r) => r.value.id), [22, 23, 24, 25, 26, 27, 28, 29, 30])
      assert.strictEqual((yield* Stream.runCollect(byAt.continueAfter(new Date("2026-01-01T00:00:07Z"), 1).read)).length, 9)
      // a plain upper bound keeps the rows at or before it
      assert.strictEqual(yield* Postgres.source({ url, query: "SELECT id, v FROM t", schema: Row, key: "id", checkpoint: { column: "v" }, after: "2", upTo: "4" }).count, 6)
    }))
})

Pg.describePostgres("Postgres.source: a snapshot per run, and counts", () => {
  it.effect("rows edited (updated_at bumped) or inserted while a read runs are not read by it, and are read, with their new text, after its high", () =>
    Effect.gen(function*() {
      const { sql, url } = yield* fresh("snap")
      yield* sql.unsafe("CREATE TABLE docs (id int PRIMARY KEY, body text NOT NULL, updated_at timestamptz NOT NULL)")
      yield* sql.unsafe("CREATE INDEX ON docs (updated_at, id)")
      // 300 rows in groups of 7 sharing a value, long ago
      yield* sql.unsafe(`INSERT INTO docs SELECT g, 'original ' || g, '2001-01-01T00:00:00Z'::timestamptz + (g / 7) * interval '1 second'
        FROM generate_series(1, 300) g ORDER BY random()`)
      const source = Postgres.source({
        url,
        query: "SELECT id, body, updated_at FROM docs",
        schema: Doc,
        key: "id",
        checkpoint: { column: "updated_at" },
        batchSize: 50,
        name: "docs"
      })
      const snapshot = source.snapshot!
      const high = Option.getOrThrow(yield* snapshot.high)
      assert.strictEqual(high, "{\"col\":\"2001-01-01 00:00:42+00\",\"key\":\"300\"}")
      const run1 = snapshot.upTo(high)
      assert.strictEqual(yield* run1.count, 300)

      const alreadyRead = [10, 11, 12, 13, 14]
      const notYetRead = [250, 251, 252, 253, 254, 255, 256, 257, 258, 259]
      const edit = sql.unsafe(
        `UPDATE docs SET body = 'edited ' || id, updated_at = now() WHERE id = ANY($1::int[])`,
        [`{${[...alreadyRead, ...notYetRead].join(",")}}`]
      ).pipe(
        Effect.andThen(sql.unsafe("INSERT INTO docs SELECT g, 'new ' || g, now() FROM generate_series(1001, 1005) g")),
        // a row tied with high on updated_at but after it on the key: past high too
        Effect.andThen(sql.unsafe("INSERT INTO docs VALUES (2000, 'tied with high', '2001-01-01T00:00:42Z')"))
      )
      // edit at row 100, while pages 1 and 2 are read and page 3 is not
      const first = yield* run1.read.pipe(
        Stream.tap((item) => item.position === 100 ? edit : Effect.void),
        Stream.runCollect
      )
      const firstDocs = rows(first).map((r) => r.value)
      const firstIds = firstDocs.map((d) => d.id)
      assert.deepStrictEqual(repeated(firstIds), [])
      assert.strictEqual(firstDocs.length, 290)
      for (const id of notYetRead) assert.notInclude(firstIds, id)
      for (const id of [1001, 1002, 1003, 1004, 1005, 2000]) assert.notInclude(firstIds, id)
      for (const id of alreadyRead) assert.strictEqual(firstDocs.find((d) => d.id === id)!.body, `original ${id}`)
      assert.deepStrictEqual(firstDocs.filter((d) => !d.body.startsWith("original")), [])
      // the run's range, counted again at its end: what it read, less the 5 rows edited after it read them (they
      // moved past high): a run reads at least what its range holds at the end, and a row missing would show
      const end1 = yield* run1.count
      assert.strictEqual(end1, firstDocs.length - alreadyRead.length)

      // the next run: a new high, continuing after the last row this run read
      const last = Option.getOrThrow(Postgres.checkpointOf(first.at(-1)!))
      assert.strictEqual(last, high)
      const high2 = Option.getOrThrow(yield* snapshot.high)
      const run2 = snapshot.upTo(high2).continueAfter(last, 291)
      const second = rows(yield* Stream.runCollect(run2.read)).map((r) => r.value)
      assert.deepStrictEqual(
        second.map((d) => d.id).sort((a, b) => a - b),
        [...alreadyRead, ...notYetRead, 1001, 1002, 1003, 1004, 1005, 2000].sort((a, b) => a - b)
      )
      assert.strictEqual(second[0]!.id, 2000) // tied with high, after it on the key: first in the next run
      for (const d of second) assert.match(d.body, /^(edited|new|tied)/)
      assert.strictEqual(yield* run2.count, second.length)
      // across both runs every row is read, once per version of its text
      const union = new Set([...firstIds, ...second.map((d) => d.id)])
      const [{ n }] = yield* sql.unsafe<{ n: number }>("SELECT count(*)::int AS n FROM docs")
      assert.strictEqual(union.size, n)
      console.log(`snapshot: run 1 read ${firstDocs.length} of 300 (10 edited before it reached them, 6 inserted past high: none read); range counted at its end ${end1}; run 2 read ${second.length} (15 edited, 6 new), count ${yield* run2.count}; ${union.size} of ${n} rows read in all`)
    }))

  it.effect("a row committed late with an old value, behind the read: this read cannot see it, its range counted again does", () =>
    Effect.gen(function*() {
      const { sql, url } = yield* fresh("late")
      yield* sql.unsafe("CREATE TABLE docs (id int PRIMARY KEY, body text NOT NULL, updated_at timestamptz NOT NULL)")
      yield* sql.unsafe(`INSERT INTO docs SELECT g, 'b', '2001-01-01T00:00:00Z'::timestamptz + g * interval '1 second'
        FROM generate_series(1, 300) g`)
      const source = Postgres.source({ url, query: "SELECT * FROM docs", schema: Doc, key: "id", checkpoint: { column: "updated_at" }, batchSize: 50 })
      const run = source.snapshot!.upTo(Option.getOrThrow(yield* source.snapshot!.high))
      // at row 100, a transaction that began long ago commits a row stamped before everything read so far
      const late = Effect.asVoid(sql.unsafe("INSERT INTO docs VALUES (5000, 'late', '2001-01-01T00:00:00.5Z')"))
      const read = yield* run.read.pipe(Stream.tap((item) => item.position === 100 ? late : Effect.void), Stream.runCollect)
      const counted = yield* run.count
      assert.strictEqual(read.length, 300)
      assert.strictEqual(counted, 301)
      console.log(`late commit behind the read: read ${read.length}, the range counted at the end ${counted} (the runner's end-of-run check fails such a run)`)
    }))

  it.effect("count equals the rows read, Malformed included: plain query, checkpointed source, a range (after, upTo]", () =>
    Effect.gen(function*() {
      const { sql, url } = yield* fresh("count")
      yield* sql.unsafe("CREATE TABLE t (id int PRIMARY KEY, n text NOT NULL, g int NOT NULL)")
      yield* sql.unsafe("INSERT INTO t SELECT g, CASE WHEN g % 10 = 0 THEN 'x' ELSE g::text END, g / 3 FROM generate_series(1, 2345) g")
      const Row = Schema.Struct({ id: Schema.Number, n: Schema.FiniteFromString })
      const plain = Postgres.source({ url, query: "SELECT id, n FROM t WHERE id % 7 <> 0 ORDER BY id;", schema: Row, key: "id", batchSize: 500 })
      const plainItems = yield* Stream.runCollect(plain.read)
      assert.strictEqual(yield* plain.count, plainItems.length)
      const malformed = plainItems.filter((i) => i._tag === "Malformed")
      assert.isAbove(malformed.length, 100)
      // a Malformed row carries its key, so the dead letter can be filed under it
      assert.strictEqual((malformed[0] as SourceModel.Malformed).key, "10")

      const keyed = Postgres.source({ url, query: "SELECT id, n, g FROM t", schema: Row, key: "id", checkpoint: { column: "g" }, batchSize: 300 })
      const all = yield* Stream.runCollect(keyed.read)
      assert.strictEqual(yield* keyed.count, all.length)
      assert.strictEqual(all.length, 2_345)
      assert.strictEqual((all.find((i) => i._tag === "Malformed") as SourceModel.Malformed).key, "10")
      // the rows after the 100th and up to the 2,000th: 1,900
      const after = Option.getOrThrow(Postgres.checkpointOf(all[99]!))
      const upTo = Option.getOrThrow(Postgres.checkpointOf(all[1_999]!))
      const range = keyed.snapshot!.upTo(upTo).continueAfter(after, 101)
      const inRange = yield* Stream.runCollect(range.read)
      assert.strictEqual(inRange.length, 1_900)
      assert.strictEqual(yield* range.count, 1_900)
      assert.deepStrictEqual(inRange.map((i) => i.position), all.slice(100, 2_000).map((i) => i.position))
      assert.deepStrictEqual(Postgres.checkpointOf(inRange.at(-1)!), Option.some(upTo))
      // an empty query: no high, count 0
      const empty = Postgres.source({ url, query: "SELECT id, n, g FROM t WHERE false", schema: Row, key: "id", checkpoint: { column: "g" } })
      assert.isTrue(Option.isNone(yield* empty.snapshot!.high))
      assert.strictEqual(yield* empty.count, 0)
      console.log(`count: plain ${yield* plain.count} = ${plainItems.length} read (${malformed.length} malformed); checkpointed ${yield* keyed.count} = ${all.length} read; range (100th, 2,000th] ${yield* range.count} = ${inRange.length} read`)
    }))

  it.effect("NULL in the checkpoint column or the key: read, count and high fail naming the column and the row; never skipped", () =>
    Effect.gen(function*() {
      const { sql, url } = yield* fresh("nulls")
      yield* sql.unsafe("CREATE TABLE t (id int, updated_at timestamptz, body text)")
      yield* sql.unsafe("INSERT INTO t SELECT g, '2026-01-01'::timestamptz + g * interval '1 minute', 'b' FROM generate_series(1, 50) g")
      yield* sql.unsafe("UPDATE t SET updated_at = NULL WHERE id = 37")
      const Row = Schema.Struct({ id: Schema.Number })
      const source = Postgres.source({ url, query: "SELECT * FROM t", schema: Row, key: "id", checkpoint: { column: "updated_at" }, name: "t", batchSize: 10 })
      const expected = "t: the checkpoint column \"updated_at\" is NULL in the row with id \"37\": a checkpointed read orders rows by " +
        "(updated_at, id) and cannot place it; give every row a value, or select one (e.g. COALESCE(updated_at, …) AS updated_at)"
      const read = yield* Effect.flip(Stream.runCollect(source.read))
      assert.deepStrictEqual([read._tag, read.source, read.message], ["SourceError", "t", expected])
      assert.strictEqual((yield* Effect.flip(source.count)).message, expected)
      assert.strictEqual((yield* Effect.flip(source.snapshot!.high)).message, expected)
      // continuing after a checkpoint does not hide it either
      assert.strictEqual((yield* Effect.flip(Stream.runCollect(source.continueAfter("{\"col\":\"2026-01-01 00:40:00+00\",\"key\":\"40\"}", 41).read))).message, expected)
      // selecting a value for it reads every row
      const filled = Postgres.source({
        url,
        query: "SELECT id, COALESCE(updated_at, '2000-01-01') AS updated_at FROM t",
        schema: Row,
        key: "id",
        checkpoint: { column: "updated_at" },
        batchSize: 10
      })
      assert.strictEqual((yield* Stream.runCollect(filled.read)).length, 50)

      yield* sql.unsafe("UPDATE t SET updated_at = now(), id = NULL WHERE id = 37")
      const key = yield* Effect.flip(Stream.runCollect(source.read))
      assert.match(key.message, /^t: the key column "id" is NULL in a row \(updated_at "[^"]+"\): .* the key must be unique and not NULL$/)
      assert.match((yield* Effect.flip(source.count)).message, /the key column "id" is NULL/)
    }))

  it("a checkpoint column without `key` is refused when the source is made, naming the option", () => {
    assert.throws(
      () => Postgres.source({ url: "postgres://x@127.0.0.1:1/db", query: "SELECT 1 AS id", schema: Doc, checkpoint: { column: "updated_at" }, name: "docs" }),
      TypeError,
      /Postgres\.source docs: checkpoint column "updated_at" needs the `key` option/
    )
  })

  it.effect("a plain query has no snapshot; after and upTo need a checkpoint column", () =>
    Effect.gen(function*() {
      const url = Pg.url()!
      const plain = Postgres.source({ url, query: "VALUES (1), (2), (3)", schema: Schema.Struct({ column1: Schema.Number }) })
      assert.isUndefined(plain.snapshot)
      assert.strictEqual(yield* plain.count, 3)
      const upTo = Postgres.source({ url, query: "SELECT 1 AS id", schema: Doc, upTo: "3" })
      assert.match((yield* Effect.flip(upTo.count)).message, /`upTo` needs a checkpoint column/)
      assert.match((yield* Effect.flip(Stream.runCollect(upTo.read))).message, /`upTo` needs a checkpoint column/)
    }))
})
