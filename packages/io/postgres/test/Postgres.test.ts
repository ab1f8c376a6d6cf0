/**
 * Postgres.source and Postgres.sink against a real PostgreSQL
 * (`OFFPEAK_TEST_PG_URL`), each test in a schema of its own. The system
 * server has no pgvector: vector columns take the `real[]` path here;
 * `Pgvector.test.ts` covers `vector(n)` on PGlite.
 */
import { assert, it } from "@effect/vitest"
import type { PgClient } from "@effect/sql-pg"
import { Refused } from "@offpeak/core/Sink"
import type * as SourceModel from "@offpeak/core/Source"
import { Effect, Logger, Option, Redacted, Schema, Stream } from "effect"
import type { Scope } from "effect"
import * as Pg from "../../../core/test/support/postgres.ts"
import * as v8 from "node:v8"
import * as vm from "node:vm"
import { Postgres } from "../index.ts"

const rows = <A>(items: ReadonlyArray<SourceModel.Item<A>>) =>
  items.filter((i): i is SourceModel.Row<A> => i._tag === "Row")

/** a fresh schema, and a client whose search_path is it */
const fresh = (prefix: string): Effect.Effect<{ url: string; sql: PgClient.PgClient }, unknown, Scope.Scope> =>
  Effect.gen(function*() {
    const schema = yield* Pg.freshSchema(Pg.url()!, prefix)
    const sql = yield* Pg.connect(schema.url)
    return { url: schema.url, sql }
  })

/** V8's garbage collector, exposed at run time */
const collector = (): (() => void) => {
  v8.setFlagsFromString("--expose-gc")
  return vm.runInNewContext("gc") as () => void
}

/** log lines written by `effect` */
const captureLogs = () => {
  const lines: Array<string> = []
  const logger = Logger.make((options) => {
    lines.push((Array.isArray(options.message) ? options.message : [options.message]).map(String).join(" "))
  })
  return { lines, layer: Logger.layer([logger]) }
}

const Ticket = Schema.Struct({
  id: Schema.Number,
  title: Schema.String,
  priority: Schema.Literals(["low", "high"]),
  tags: Schema.Array(Schema.String),
  meta: Schema.NullOr(Schema.Struct({ source: Schema.String })),
  created: Schema.Date
})

const createTickets = (sql: PgClient.PgClient) =>
  Effect.gen(function*() {
    yield* sql.unsafe(`CREATE TABLE tickets (
      id int PRIMARY KEY, title text NOT NULL, priority text, tags text[], meta jsonb, created timestamptz, big int8)`)
    yield* sql.unsafe(`INSERT INTO tickets VALUES
      (1, 'printer on fire', 'high', '{hw,urgent}', '{"source":"mail"}', '2026-01-01T10:00:00Z', 9007199254740993),
      (2, 'password reset', 'low', '{}', NULL, '2026-01-02T10:00:00Z', 2),
      (3, 'it''s "quoted"', 'urgent', '{a}', NULL, '2026-01-03T10:00:00Z', 3),
      (4, 'wrong tags', 'low', NULL, '{"source":7}', '2026-01-04T10:00:00Z', 4),
      (5, 'fine again', 'high', '{b}', '{"source":"web"}', '2026-01-05T10:00:00Z', 5)`)
  })

Pg.describePostgres("Postgres.source", () => {
  it.effect("decodes rows with the schema, in the query's order; position is the ordinal", () =>
    Effect.gen(function*() {
      const { sql, url } = yield* fresh("src")
      yield* createTickets(sql)
      const source = Postgres.source({
        url,
        query: "SELECT id, title, priority, tags, meta, created, big FROM tickets WHERE id IN (1, 2, 5) ORDER BY id DESC;",
        schema: Ticket,
        name: "tickets"
      })
      assert.strictEqual(source.name, "tickets")
      assert.strictEqual(source.schema, Ticket)
      const items = yield* Stream.runCollect(source.read)
      assert.deepStrictEqual(items.map((i) => [i._tag, i.position]), [["Row", 1], ["Row", 2], ["Row", 3]])
      assert.deepStrictEqual(rows(items).map((r) => r.value), [
        { id: 5, title: "fine again", priority: "high", tags: ["b"], meta: { source: "web" }, created: new Date("2026-01-05T10:00:00Z") },
        { id: 2, title: "password reset", priority: "low", tags: [], meta: null, created: new Date("2026-01-02T10:00:00Z") },
        { id: 1, title: "printer on fire", priority: "high", tags: ["hw", "urgent"], meta: { source: "mail" }, created: new Date("2026-01-01T10:00:00Z") }
      ])
      // int8 comes as a bigint, exactly
      const Big = Schema.Struct({ big: Schema.BigInt })
      const big = yield* Stream.runCollect(Postgres.source({ url, query: "SELECT big FROM tickets WHERE id = 1", schema: Big }).read)
      assert.strictEqual((big[0] as SourceModel.Row<{ big: bigint }>).value.big, 9007199254740993n)
      // an empty result is an empty stream; the default name is the query
      const none = Postgres.source({ url, query: "SELECT * FROM tickets WHERE false", schema: Ticket })
      assert.strictEqual(none.name, "query \"SELECT * FROM tickets WHERE false\"")
      assert.deepStrictEqual(yield* Stream.runCollect(none.read), [])
    }))

  it.effect("a row failing the schema is Malformed naming the source, the row, its key and the field; the rest comes through", () =>
    Effect.gen(function*() {
      const { sql, url } = yield* fresh("src")
      yield* createTickets(sql)
      const items = yield* Stream.runCollect(
        Postgres.source({ url, query: "SELECT * FROM tickets ORDER BY id", schema: Ticket, key: "id", name: "tickets" }).read
      )
      assert.deepStrictEqual(items.map((i) => [i._tag, i.position]), [
        ["Row", 1],
        ["Row", 2],
        ["Malformed", 3],
        ["Malformed", 4],
        ["Row", 5]
      ])
      const bad = items.filter((i): i is SourceModel.Malformed => i._tag === "Malformed")
      assert.strictEqual(bad[0]!.reason, "tickets row 3 (id 3): field \"priority\": Expected \"low\" | \"high\", got \"urgent\"")
      assert.strictEqual(
        bad[1]!.reason,
        "tickets row 4 (id 4): field \"tags\": Expected array, got null; field \"meta.source\": Expected string, got 7"
      )
      assert.include(bad[0]!.raw!, "\"title\":\"it's \\\"quoted\\\"\"")
      assert.include(bad[0]!.raw!, "\"big\":3")
    }))

  it.effect("checkpoint: reads in the column's order, from after a checkpoint or a value; checkpoints are exact text", () =>
    Effect.gen(function*() {
      const { sql, url } = yield* fresh("src")
      yield* sql.unsafe("CREATE TABLE events (id bigint PRIMARY KEY, at timestamptz UNIQUE NOT NULL, body text)")
      // microseconds apart: a Date (milliseconds) could not tell them apart
      yield* sql.unsafe(`INSERT INTO events
        SELECT g, '2026-01-01T00:00:00Z'::timestamptz + g * interval '1 microsecond', 'e' || g
        FROM generate_series(1, 25) g ORDER BY random()`)
      const Event = Schema.Struct({ id: Schema.BigInt, body: Schema.String })
      const options = { url, query: "SELECT id, at, body FROM events", schema: Event, key: "id", batchSize: 4, name: "events" }
      const byId = Postgres.source({ ...options, checkpoint: { column: "id" } })
      assert.strictEqual(byId.checkpoint, "id")
      assert.isTrue(Option.isNone(yield* byId.lastCheckpoint))
      const all = yield* Stream.runCollect(byId.read)
      assert.deepStrictEqual(rows(all).map((r) => r.value.body), Array.from({ length: 25 }, (_, i) => `e${i + 1}`))
      assert.deepStrictEqual(
        all.map((i) => Postgres.checkpointOf(i)),
        Array.from({ length: 25 }, (_, i) => Option.some(`{"col":"${i + 1}","key":"${i + 1}"}`))
      )
      assert.deepStrictEqual(yield* byId.lastCheckpoint, Option.some("{\"col\":\"25\",\"key\":\"25\"}"))

      // continue after the 10th row: its checkpoint, a plain text form (an old checkpoint), a number and a bigint
      for (const after of [Option.getOrThrow(Postgres.checkpointOf(all[9]!)), "10", 10, 10n]) {
        const rest = yield* Stream.runCollect(Postgres.source({ ...options, checkpoint: { column: "id" }, after, startPosition: 11 }).read)
        assert.deepStrictEqual(rest.map((i) => i.position), Array.from({ length: 15 }, (_, i) => i + 11))
        assert.deepStrictEqual(rows(rest).map((r) => r.value.body)[0], "e11")
      }

      // continueAfter: the same source from a checkpoint, numbered on (the URL may be Redacted)
      const resumed = Postgres.source({ ...options, url: Redacted.make(url), checkpoint: { column: "id" } })
        .continueAfter(Option.getOrThrow(Postgres.checkpointOf(all[19]!)), 21)
      assert.deepStrictEqual(
        (yield* Stream.runCollect(resumed.read)).map((i) => [i.position, (i as SourceModel.Row<typeof Event.Type>).value.id]),
        [[21, 21n], [22, 22n], [23, 23n], [24, 24n], [25, 25n]]
      )

      // a timestamp checkpoint keeps its microseconds
      const byTime = Postgres.source({ ...options, checkpoint: { column: "at" } })
      const first = yield* Stream.runCollect(byTime.read.pipe(Stream.take(3)))
      const third = Option.getOrThrow(Postgres.checkpointOf(first[2]!))
      assert.strictEqual(third, "{\"col\":\"2026-01-01 00:00:00.000003+00\",\"key\":\"3\"}")
      const next = yield* Stream.runCollect(Postgres.source({ ...options, checkpoint: { column: "at" }, after: third }).read)
      assert.deepStrictEqual(rows(next).map((r) => r.value.body).slice(0, 2), ["e4", "e5"])
      assert.strictEqual(next.length, 22)
      // an item of another source has no checkpoint
      assert.isTrue(Option.isNone(Postgres.checkpointOf({ _tag: "Row", position: 1, value: 1 })))
    }))

  it.effect("200,000 rows stream through a cursor: memory stays far below the table's size", () =>
    Effect.gen(function*() {
      const { sql, url } = yield* fresh("big")
      yield* sql.unsafe("CREATE TABLE big (id int PRIMARY KEY, body text NOT NULL)")
      yield* sql.unsafe("INSERT INTO big SELECT g, repeat(md5(g::text), 16) FROM generate_series(1, 200000) g")
      const [{ bytes }] = yield* sql.unsafe<{ bytes: bigint }>("SELECT pg_table_size('big') AS bytes")
      const tableBytes = Number(bytes)
      assert.isAbove(tableBytes, 100_000_000)
      const Big = Schema.Struct({ id: Schema.Number, body: Schema.String })
      // measure what is retained, not garbage waiting for a collection
      const gc = collector()
      gc()
      const base = process.memoryUsage().heapUsed
      let peak = 0
      const count = yield* Postgres.source({ url, query: "SELECT id, body FROM big", schema: Big, batchSize: 500, key: "id", checkpoint: { column: "id" } }).read.pipe(
        Stream.tap((item) =>
          Effect.sync(() => {
            if (item.position % 20_000 === 0) {
              gc()
              peak = Math.max(peak, process.memoryUsage().heapUsed - base)
            }
          })
        ),
        Stream.runFold(() => 0, (n, item) => (item._tag === "Row" && item.value.body.length === 512 ? n + 1 : n))
      )
      assert.strictEqual(count, 200_000)
      // the whole table would be more than 100 MB of heap
      assert.isBelow(peak, tableBytes / 10, `heap grew by ${(peak / 1e6).toFixed(1)} MB for a ${(tableBytes / 1e6).toFixed(0)} MB table`)
    }), { timeout: 120_000 })

  it.effect("taking 10 rows fetches one page, not the table, and ends the read's transaction", () =>
    Effect.gen(function*() {
      const { sql, url } = yield* fresh("take")
      yield* sql.unsafe("CREATE TABLE big (id int PRIMARY KEY, body text NOT NULL)")
      yield* sql.unsafe("INSERT INTO big SELECT g, md5(g::text) FROM generate_series(1, 200000) g")
      // nextval() counts the rows the server actually produced
      yield* sql.unsafe("CREATE SEQUENCE produced")
      const Row = Schema.Struct({ id: Schema.Number })
      const taken = yield* Postgres.source({
        url,
        query: "SELECT id, body, nextval('produced') AS n FROM big",
        schema: Row,
        batchSize: 100
      }).read.pipe(Stream.take(10), Stream.runCollect)
      assert.strictEqual(taken.length, 10)
      const [{ last_value }] = yield* sql.unsafe<{ last_value: bigint }>("SELECT last_value FROM produced")
      assert.isAtMost(Number(last_value), 100)
      const open = yield* sql.unsafe<{ n: bigint }>(
        "SELECT count(*) AS n FROM pg_stat_activity WHERE application_name = 'offpeak' AND state LIKE 'idle in transaction%'"
      )
      assert.strictEqual(Number(open[0]!.n), 0)
      // with a checkpoint too (ordered through the primary key's index), starting near the end
      const tail = yield* Postgres.source({
        url,
        query: "SELECT id FROM big",
        schema: Row,
        key: "id",
        checkpoint: { column: "id" },
        after: 199_995
      }).read.pipe(Stream.runCollect)
      assert.deepStrictEqual(rows(tail).map((r) => r.value.id), [199_996, 199_997, 199_998, 199_999, 200_000])
    }))

  it.effect("an unreachable server, a failing query or bad options fail with SourceError naming the source", () =>
    Effect.gen(function*() {
      const Row = Schema.Struct({ id: Schema.Number })
      const refused = yield* Postgres.source({
        url: "postgres://app:s3cret-pw@127.0.0.1:1/appdb",
        query: "SELECT 1 AS id",
        schema: Row,
        name: "docs"
      }).read.pipe(Stream.runCollect, Effect.flip)
      assert.strictEqual(refused._tag, "SourceError")
      assert.strictEqual(refused.source, "docs")
      assert.match(refused.message, /^docs: 127\.0\.0\.1:1\/appdb: .*ECONNREFUSED/)
      assert.notInclude(refused.message, "s3cret")

      const url = Pg.url()!
      const missing = yield* Postgres.source({ url, query: "SELECT id FROM no_such_table", schema: Row, name: "docs" }).read.pipe(
        Stream.runCollect,
        Effect.flip
      )
      assert.match(missing.message, /^docs: .*relation "no_such_table" does not exist/)
      const noColumn = yield* Postgres.source({ url, query: "SELECT 1 AS id", schema: Row, key: "id", checkpoint: { column: "nope" } }).read.pipe(
        Stream.runCollect,
        Effect.flip
      )
      assert.match(noColumn.message, /column offpeak_q\.nope does not exist/)
      const noCheckpoint = yield* Postgres.source({ url, query: "SELECT 1 AS id", schema: Row, after: 3 }).read.pipe(
        Stream.runCollect,
        Effect.flip
      )
      assert.match(noCheckpoint.message, /`after` needs a checkpoint column/)
      const badBatch = yield* Postgres.source({ url, query: "SELECT 1 AS id", schema: Row, batchSize: 0 }).read.pipe(
        Stream.runCollect,
        Effect.flip
      )
      assert.match(badBatch.message, /batchSize must be a positive integer/)
      const badStart = yield* Postgres.source({ url, query: "SELECT 1 AS id", schema: Row, startPosition: 0 }).read.pipe(
        Stream.runCollect,
        Effect.flip
      )
      assert.match(badStart.message, /startPosition must be a positive integer, got 0/)
    }))
})

// ===== Sink =====

const part = (seq: number) => ({ runId: "run-1", seq })

Pg.describePostgres("Postgres.sink", () => {
  it.effect("upserts: the same part written twice leaves no duplicates; a changed row updates on conflict", () =>
    Effect.gen(function*() {
      const { sql, url } = yield* fresh("sink")
      yield* sql.unsafe("CREATE TABLE labels (id text PRIMARY KEY, label text, score float8, n int)")
      const sink = Postgres.sink<{ id: string; label: string; score: number; n: number }>({ url, table: "labels", key: "id" })
      assert.strictEqual(sink.name, "labels")
      const batch = Array.from({ length: 2_500 }, (_, i) => ({ id: `k${i}`, label: i % 2 === 0 ? "even" : "odd", score: i / 4, n: i }))
      yield* sink.write(part(1), batch)
      yield* sink.write(part(1), batch)
      const [{ n, s }] = yield* sql.unsafe<{ n: bigint; s: number }>("SELECT count(*) AS n, sum(score) AS s FROM labels")
      assert.strictEqual(Number(n), 2_500)
      assert.strictEqual(s, batch.reduce((t, r) => t + r.score, 0))
      yield* sink.write(part(2), [{ id: "k1", label: "changed", score: -1, n: 7 }, { id: "new", label: "x", score: 0, n: 0 }])
      const changed = yield* sql.unsafe<{ id: string; label: string; score: number; n: number }>(
        "SELECT * FROM labels WHERE id IN ('k1', 'new') ORDER BY id"
      )
      assert.deepStrictEqual(changed, [{ id: "k1", label: "changed", score: -1, n: 7 }, { id: "new", label: "x", score: 0, n: 0 }])
      // a key repeated in one write keeps its last row; an empty part is nothing
      yield* sink.write(part(3), [{ id: "dup", label: "first", score: 1, n: 1 }, { id: "dup", label: "last", score: 2, n: 2 }])
      assert.deepStrictEqual(yield* sql.unsafe("SELECT label FROM labels WHERE id = 'dup'"), [{ label: "last" }])
      yield* sink.write(part(4), [])
      assert.strictEqual(Number((yield* sql.unsafe<{ n: bigint }>("SELECT count(*) AS n FROM labels"))[0]!.n), 2_502)
    }))

  it.effect("update mode writes one column of existing rows (NOT NULL columns untouched); missing keys are skipped", () =>
    Effect.gen(function*() {
      const { sql, url } = yield* fresh("update")
      yield* sql.unsafe(`CREATE TABLE "we""ird docs" (
        "doc id" int PRIMARY KEY, title text NOT NULL, body text NOT NULL, "the emb" real[], updated timestamptz)`)
      yield* sql.unsafe(`INSERT INTO "we""ird docs" VALUES (1, 'a', 'x', NULL, now()), (2, 'b', 'y', NULL, now())`)
      const sink = Postgres.sink<{ "doc id": number; "the emb": ReadonlyArray<number> }>({
        url,
        table: "we\"ird docs",
        key: "doc id",
        columns: ["doc id", "the emb"],
        vectorColumns: ["the emb"],
        mode: "update"
      })
      const part = { runId: "r", seq: 1 }
      yield* sink.write(part, [{ "doc id": 1, "the emb": [0.5, 1.5] }, { "doc id": 3, "the emb": [9, 9] }])
      yield* sink.write(part, [{ "doc id": 1, "the emb": [0.5, 1.5] }, { "doc id": 2, "the emb": [2, 3] }])
      const got = yield* sql.unsafe<{ id: number; title: string; emb: Array<number> | null }>(
        `SELECT "doc id" AS id, title, "the emb" AS emb FROM "we""ird docs" ORDER BY 1`
      )
      assert.deepStrictEqual(got, [{ id: 1, title: "a", emb: [0.5, 1.5] }, { id: 2, title: "b", emb: [2, 3] }])
    }))

  it.effect("hostile identifiers: table, schema, key and columns named we\"ird, select, with spaces, unicode", () =>
    Effect.gen(function*() {
      const { sql, url } = yield* fresh("ident")
      const schema = `my "schema" ${Math.random().toString(36).slice(2, 8)}`
      const quoted = (name: string) => `"${name.replaceAll("\"", "\"\"")}"`
      yield* Effect.acquireRelease(
        sql.unsafe(`CREATE SCHEMA ${quoted(schema)}`),
        () => Effect.ignore(sql.unsafe(`DROP SCHEMA ${quoted(schema)} CASCADE`))
      )
      const table = "we\"ird; DROP TABLE x; --"
      const sink = Postgres.sink<Record<string, unknown>>({
        url,
        schema,
        table,
        key: ["select", "ключ 名"],
        createTable: {
          columns: { "select": "text", "ключ 名": "int", "from where": "text", "\"": "text", "Mixed Case": "int" }
        }
      })
      const write = [
        { "select": "a", "ключ 名": 1, "from where": "x", "\"": "q", "Mixed Case": 10 },
        { "select": "a", "ключ 名": 2, "from where": "y", "\"": "r", "Mixed Case": 20 }
      ]
      yield* sink.write(part(1), write)
      yield* sink.write(part(1), write)
      const back = yield* sql.unsafe(`SELECT * FROM ${quoted(schema)}.${quoted(table)} ORDER BY "ключ 名"`)
      assert.deepStrictEqual(back, write)
      // the name is the schema and table as given
      assert.strictEqual(sink.name, `${schema}.${table}`)
    }))

  it.effect("hostile values are parameters: quotes, injections, control characters, huge text, unicode round-trip", () =>
    Effect.gen(function*() {
      const { sql, url } = yield* fresh("values")
      yield* sql.unsafe("CREATE TABLE x (id int PRIMARY KEY, v text, doc jsonb, tags text[])")
      const controls = Array.from({ length: 31 }, (_, i) => String.fromCharCode(i + 1)).join("") + "\u007f"
      const values = [
        "it's",
        "\"double\" and 'single' and `back`",
        "'); DROP TABLE x; --",
        "$1 $$ $tag$ \\ \\\\ \\x00",
        controls,
        "x".repeat(3_000_000),
        "ünïcødé 名前 🙂 \u2028\u2029",
        "",
        null
      ]
      const input = values.map((v, i) => ({
        id: i,
        v,
        doc: v === null ? null : { v, nested: [v, { k: v }] },
        tags: v === null ? null : [v, "plain", "with \"quote\"", "back\\slash", ""]
      }))
      const sink = Postgres.sink<typeof input[number]>({ url, table: "x", key: "id" })
      yield* sink.write(part(1), input)
      const back = yield* sql.unsafe<typeof input[number]>("SELECT id, v, doc, tags FROM x ORDER BY id")
      assert.strictEqual(back.length, values.length)
      assert.deepStrictEqual(back, input)
      assert.deepStrictEqual(yield* sql.unsafe("SELECT count(*)::int AS n FROM x"), [{ n: values.length }])
    }))

  it.effect("types by column: json, arrays, bytea, timestamps, booleans, bigints, numbers in text columns", () =>
    Effect.gen(function*() {
      const { sql, url } = yield* fresh("types")
      yield* sql.unsafe(`CREATE TABLE t (
        id bigint PRIMARY KEY, j json, jb jsonb, s text, ints int[], b boolean, bin bytea, at timestamptz, num numeric, n text)`)
      const sink = Postgres.sink({ url, table: "t", key: "id" })
      yield* sink.write(part(1), [{
        id: 9007199254740993n,
        j: "a string",
        jb: [1, "two", { three: 3n }],
        s: { as: "json" },
        ints: [1, 2, null],
        b: false,
        bin: new Uint8Array([0, 1, 255]),
        at: new Date("2026-11-26T10:00:00.123Z"),
        num: 0.1,
        n: 42
      }])
      const [back] = yield* sql.unsafe<Record<string, unknown>>(
        "SELECT id, j::text AS j, jb, s, ints, b, bin, at, num::text AS num, n FROM t"
      )
      assert.deepStrictEqual(back, {
        id: 9007199254740993n,
        j: "\"a string\"",
        jb: [1, "two", { three: 3 }],
        s: "{\"as\":\"json\"}",
        ints: [1, 2, null],
        b: false,
        bin: new Uint8Array([0, 1, 255]),
        at: new Date("2026-11-26T10:00:00.123Z"),
        num: "0.1",
        n: "42"
      })
    }))

  it.effect("vectors without pgvector: createTable makes vector(n) a real[], said once in a log line; values read back", () =>
    Effect.gen(function*() {
      const { sql, url } = yield* fresh("vec")
      const logs = captureLogs()
      const sink = Postgres.sink<{ id: number; emb: ReadonlyArray<number> | Float32Array; title: string }>({
        url,
        table: "docs",
        key: "id",
        vectorColumns: ["emb"],
        createTable: { columns: { id: "bigint", emb: "vector(3)", title: "text" } }
      })
      const written = [
        { id: 1, emb: [0.5, -1, 2.25], title: "a" },
        { id: 2, emb: new Float32Array([1, 0, 0]), title: "b" }
      ]
      yield* sink.write(part(1), written).pipe(Effect.provide(logs.layer))
      yield* sink.write(part(1), written).pipe(Effect.provide(logs.layer))
      const type = yield* sql.unsafe<{ t: string }>(
        "SELECT format_type(atttypid, atttypmod) AS t FROM pg_attribute WHERE attrelid = 'docs'::regclass AND attname = 'emb'"
      )
      assert.deepStrictEqual(type, [{ t: "real[]" }])
      assert.deepStrictEqual(logs.lines.filter((l) => l.includes("pgvector")), [
        `postgres sink docs: pgvector is not installed in ${new URL(Pg.url()!).host}/postgres; writing "emb" as real[]`
      ])
      const back = yield* sql.unsafe<{ id: bigint; emb: Array<number> }>("SELECT id, emb FROM docs ORDER BY id")
      assert.deepStrictEqual(back.map((r) => r.emb), [[0.5, -1, 2.25], [1, 0, 0]])
      // double precision[] works too, and a real[] table made beforehand
      yield* sql.unsafe("CREATE TABLE d2 (id int PRIMARY KEY, emb float8[])")
      yield* Postgres.sink({ url, table: "d2", key: "id", vectorColumns: ["emb"] }).write(part(1), [{ id: 1, emb: [0.1, 0.2] }])
      assert.deepStrictEqual(yield* sql.unsafe("SELECT emb FROM d2"), [{ emb: [0.1, 0.2] }])
    }))

  it.effect("one transaction per write: a row the server refuses leaves nothing of the part", () =>
    Effect.gen(function*() {
      const { sql, url } = yield* fresh("tx")
      yield* sql.unsafe("CREATE TABLE t (id int PRIMARY KEY, n int)")
      const sink = Postgres.sink<{ id: number; n: number | string }>({ url, table: "t", key: "id", name: "numbers" })
      // 2,500 rows: three statements; the bad value is in the last one
      const rowsIn = Array.from({ length: 2_500 }, (_, i) => ({ id: i, n: i === 2_400 ? "not a number" : i }))
      const error = yield* sink.write(part(7), rowsIn).pipe(Effect.flip)
      assert.strictEqual(error._tag, "SinkError")
      assert.strictEqual(error.sink, "numbers")
      assert.strictEqual(
        error.message,
        "numbers: part run-1/7 row 2401 (id 2400): column \"n\": invalid input syntax for type integer: \"not a number\""
      )
      assert.deepStrictEqual(
        error.reason,
        new Refused({ message: "id 2400: column \"n\": invalid input syntax for type integer: \"not a number\"", row: 2_400, column: "n" })
      )
      assert.deepStrictEqual(yield* sql.unsafe("SELECT count(*)::int AS n FROM t"), [{ n: 0 }])
    }))

  it.effect("refuses what it cannot write with a SinkError naming the sink", () =>
    Effect.gen(function*() {
      const { sql, url } = yield* fresh("err")
      yield* sql.unsafe("CREATE TABLE t (id int PRIMARY KEY, title text, emb real[], label text)")
      yield* sql.unsafe("CREATE TABLE nokey (id int, title text)")
      const message = <A>(sink: { write: (p: { runId: string; seq: number }, r: ReadonlyArray<A>) => Effect.Effect<void, { message: string }> }, r: ReadonlyArray<A>) =>
        Effect.map(Effect.flip(sink.write(part(1), r)), (e) => e.message)
      assert.match(
        yield* message(Postgres.sink({ url, table: "missing", key: "id" }), [{ id: 1 }]),
        /^missing: table "missing" does not exist \(pass createTable to create it\)/
      )
      assert.match(
        yield* message(Postgres.sink({ url, table: "t", key: "id" }), [{ id: 1, titel: "typo" }]),
        /^t: table "t" has no column "titel" \(it has "id", "title", "emb", "label"\)/
      )
      assert.match(
        yield* message(Postgres.sink({ url, table: "t", key: "id", columns: ["title"] }), [{ id: 1, title: "x" }]),
        /key column "id" is not among the columns written/
      )
      assert.match(
        yield* message(Postgres.sink({ url, table: "t", key: "id" }), [{ id: 1, title: "x" }, { id: null, title: "y" }]),
        /^t: part run-1\/1 row 2: column "id": no value for the key column$/
      )
      assert.match(
        yield* message(Postgres.sink({ url, table: "t", key: "id", vectorColumns: ["emb"] }), [{ id: 1, emb: "[1,2]" }]),
        /^t: part run-1\/1 row 1 \(id 1\): column "emb": expected an array of numbers, got a string/
      )
      assert.match(
        yield* message(Postgres.sink({ url, table: "t", key: "id", vectorColumns: ["label"] }), [{ id: 1, label: "x" }]),
        /column "label" is text: a vector column must be vector\(n\) \(pgvector\) or real\[\]/
      )
      assert.match(
        yield* message(Postgres.sink({ url, table: "nokey", key: "id" }), [{ id: 1, title: "x" }]),
        /there is no unique or exclusion constraint matching the ON CONFLICT specification/
      )
      assert.match(
        yield* message(Postgres.sink({ url, table: "t", key: "x".repeat(64) }), [{ id: 1 }]),
        /invalid key column: .* PostgreSQL cuts names at 63/
      )
      const refused = yield* message(
        Postgres.sink({ url: "postgres://app:s3cret-pw@127.0.0.1:1/appdb", table: "t", key: "id", name: "out" }),
        [{ id: 1 }]
      )
      assert.match(refused, /^out: part run-1\/1: 127\.0\.0\.1:1\/appdb: .*ECONNREFUSED/)
      assert.notInclude(refused, "s3cret")
    }))
})
