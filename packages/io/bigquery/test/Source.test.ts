/**
 * BigQuery.source against the emulator: types as mapped, pages fetched one
 * ahead, checkpoints on the total order (column, key) with ties, snapshots,
 * counts, bad rows.
 */
import type * as Source from "@offpeak/core/Source"
import { Effect, Option, Schema, Stream } from "effect"
import { spawn } from "node:child_process"
import * as path from "node:path"
import { describe, expect, it } from "vitest"
import * as BigQuery from "../BigQuery.ts"
import type * as Emulator from "../Emulator.ts"
import { withEmulatorEffect } from "./support.ts"

const run = <A>(options: Emulator.Options, f: (connection: BigQuery.Connection, emulator: Emulator.Handle, sql: (q: string) => Effect.Effect<Array<any>>) => Effect.Effect<A, unknown>) =>
  withEmulatorEffect(options, (emulator, bq) => {
    const sql = (query: string) => Effect.promise(() => bq.query({ query }).then(([rows]) => rows as Array<any>))
    return Effect.flatMap(sql("CREATE SCHEMA ds"), () => f({ projectId: "test-proj", apiEndpoint: emulator.url }, emulator, sql))
  })

const collect = <A>(source: Source.Source<A>) => Effect.map(Stream.runCollect(source.read), (items) => [...items])

const rowsOf = <A>(items: ReadonlyArray<Source.Item<A>>) => items.filter((i): i is Source.Row<A> => i._tag === "Row")

describe("BigQuery.source", () => {
  it("maps BigQuery's types honestly: INT64 beyond 2^53 is Malformed as a number and exact as bigint or string; TIMESTAMP micros; NUMERIC as text", async () => {
    await run({}, (connection, _, sql) =>
      Effect.gen(function*() {
        yield* sql(`CREATE TABLE ds.t (id INT64, n INT64, f FLOAT64, num NUMERIC, bn BIGNUMERIC, ok BOOL, s STRING, b BYTES, ts TIMESTAMP,
          d DATE, dt DATETIME, t TIME, j JSON, tags ARRAY<STRING>, rec STRUCT<a INT64, b STRING>)`)
        yield* sql(`INSERT INTO ds.t VALUES
          (1, 42, 1.5, NUMERIC '123456789012345678.123456789', BIGNUMERIC '-0.5', TRUE, 'x', b'\\x00\\xff', TIMESTAMP '2024-03-04 05:06:07.123456 UTC',
           DATE '2024-02-29', DATETIME '2024-03-04 05:06:07.5', TIME '23:59:58', JSON '{"a": [1, 2]}', ['p', 'q'], STRUCT(7 AS a, 'z' AS b)),
          (2, 9007199254740993, CAST('NaN' AS FLOAT64), NUMERIC '0', BIGNUMERIC '1', FALSE, 'y', b'', TIMESTAMP '1969-12-31 23:59:59.999999 UTC',
           DATE '1970-01-01', DATETIME '1970-01-01 00:00:00', TIME '00:00:00', JSON 'null', CAST([] AS ARRAY<STRING>), STRUCT(8 AS a, 'w' AS b))`)
        const Row = Schema.Struct({
          id: Schema.Number,
          n: Schema.Number,
          f: Schema.Number,
          num: Schema.String,
          bn: Schema.String,
          ok: Schema.Boolean,
          s: Schema.String,
          b: Schema.Uint8Array,
          ts: Schema.String,
          d: Schema.String,
          dt: Schema.String,
          t: Schema.String,
          j: Schema.Unknown,
          tags: Schema.Array(Schema.String),
          rec: Schema.Struct({ a: Schema.Number, b: Schema.String })
        })
        const items = yield* collect(BigQuery.source({ query: "SELECT * FROM ds.t ORDER BY id", schema: Row, key: "id", connection }))
        expect(items[0]).toEqual({
          _tag: "Row",
          position: 1,
          value: {
            id: 1,
            n: 42,
            f: 1.5,
            num: "123456789012345678.123456789",
            bn: "-0.5",
            ok: true,
            s: "x",
            b: new Uint8Array([0, 255]),
            ts: "2024-03-04T05:06:07.123456Z",
            d: "2024-02-29",
            dt: "2024-03-04T05:06:07.500000",
            t: "23:59:58",
            j: { a: [1, 2] },
            tags: ["p", "q"],
            rec: { a: 7, b: "z" }
          }
        })
        // 9007199254740993 cannot be a number: the row is Malformed, naming the column, with its key and its values
        const second = items[1] as Source.Malformed
        expect(second._tag).toBe("Malformed")
        expect(second.reason).toBe(
          `query "SELECT * FROM ds.t ORDER BY id" row 2 (id "2"): field "n": INT64 9007199254740993 is beyond ±2^53 and would lose precision as a number: read it with int64: "bigint" or "string"`
        )
        expect(second.key).toBe("2")
        expect(JSON.parse(second.raw!).n).toBe("9007199254740993")

        const Exact = Schema.Struct({ id: Schema.BigInt, n: Schema.BigInt, ts: Schema.BigInt, f: Schema.Number })
        const exact = rowsOf(yield* collect(BigQuery.source({ query: "SELECT id, n, ts, f FROM ds.t ORDER BY id", schema: Exact, int64: "bigint", timestamps: "micros", connection })))
        expect(exact.map((r) => r.value)).toEqual([
          { id: 1n, n: 42n, ts: 1709528767123456n, f: 1.5 },
          { id: 2n, n: 9007199254740993n, ts: -1n, f: Number.NaN }
        ])
        const asText = rowsOf(yield* collect(BigQuery.source({
          query: "SELECT n, ts FROM ds.t WHERE id = 2",
          schema: Schema.Struct({ n: Schema.String, ts: Schema.Date }),
          int64: "string",
          timestamps: "date",
          connection
        })))
        expect(asText[0]!.value).toEqual({ n: "9007199254740993", ts: new Date("1969-12-31T23:59:59.999Z") })
      }))
  })

  it("streams page by page, the next page requested while one is consumed, never further ahead (queries and tables)", async () => {
    await run({}, (connection, emulator, sql) =>
      Effect.gen(function*() {
        yield* sql("CREATE TABLE ds.big AS SELECT x AS id, CONCAT('body ', CAST(x AS STRING)) AS body FROM UNNEST(GENERATE_ARRAY(1, 25000)) AS x")
        const Doc = Schema.Struct({ id: Schema.Number, body: Schema.String })
        for (const [what, options, endpoint] of [
          ["query", { query: "SELECT id, body FROM ds.big ORDER BY id" }, "jobs.getQueryResults"],
          ["table", { table: "ds.big" }, "tabledata.list"]
        ] as const) {
          const before = (yield* emulator.stats).requests[endpoint] ?? 0
          const seenAtFirst: Array<number> = []
          let n = 0
          let sum = 0
          yield* Stream.runForEach(BigQuery.source({ ...options, schema: Doc, pageSize: 2_000, connection }).read, (item) =>
            Effect.gen(function*() {
              n++
              if (item._tag === "Row") sum += item.value.id
              if (n === 1) {
                // the consumer is slow on page 1: only page 2 may be fetched meanwhile
                yield* Effect.sleep("400 millis")
                seenAtFirst.push(((yield* emulator.stats).requests[endpoint] ?? 0) - before)
              }
            }))
          const total = ((yield* emulator.stats).requests[endpoint] ?? 0) - before
          expect(n).toBe(25_000)
          expect(sum).toBe(25_000 * 25_001 / 2)
          expect(seenAtFirst).toEqual([2])
          expect(total).toBe(13)
          console.log(`bigquery source (${what}): 25,000 rows in ${total} pages of 2,000; while page 1 was consumed ${seenAtFirst[0]} pages had been requested`)
        }
      }))
  })

  it("checkpoints order on (column, key): 2,500 rows tied on the column across pages of 1,000 are each read once; continuing mid-tie reads exactly the rest", async () => {
    await run({}, (connection, _, sql) =>
      Effect.gen(function*() {
        // 2,500 rows share one updated_at; then pairs of equal values straddle every page boundary
        yield* sql(`CREATE TABLE ds.docs AS
          SELECT x AS id, TIMESTAMP '2024-01-01 00:00:00 UTC' AS updated_at FROM UNNEST(GENERATE_ARRAY(1, 2500)) AS x
          UNION ALL SELECT 2500 + x, TIMESTAMP_ADD(TIMESTAMP '2024-01-02 00:00:00 UTC', INTERVAL DIV0 SECOND)
          FROM (SELECT x, CAST(FLOOR(x / 2) AS INT64) AS DIV0 FROM UNNEST(GENERATE_ARRAY(1, 1999)) AS x)`)
        const Doc = Schema.Struct({ id: Schema.Number, updated_at: Schema.String })
        const docs = BigQuery.source({ table: "ds.docs", schema: Doc, key: "id", checkpoint: { column: "updated_at" }, pageSize: 1_000, connection })
        const rows = rowsOf(yield* collect(docs))
        expect(rows).toHaveLength(4_499)
        expect(new Set(rows.map((r) => r.value.id)).size).toBe(4_499)
        expect(rows.map((r) => r.position)).toEqual(Array.from({ length: 4_499 }, (_, i) => i + 1))
        // within the tie group the key orders the rows
        expect(rows.slice(0, 2_500).map((r) => r.value.id)).toEqual(Array.from({ length: 2_500 }, (_, i) => i + 1))
        // continue after row 1,234 (in the middle of the tie group)
        const mid = rows[1_233]!
        const rest = rowsOf(yield* collect(docs.continueAfter(mid.checkpoint!, mid.position + 1)))
        expect(rest.map((r) => r.value.id)).toEqual(rows.slice(1_234).map((r) => r.value.id))
        expect(rest[0]!.position).toBe(1_235)
        expect(yield* docs.continueAfter(mid.checkpoint!, 1).count!).toBe(4_499 - 1_234)
        console.log(`bigquery source checkpoints: 4,499 rows (2,500 tied on updated_at) read once each in pages of 1,000; continued mid-tie after row 1,234: ${rest.length} rows`)
      }))
  })

  it("a snapshot: rows edited or added after `high` are not read by this run and are read once by the next; count matches read", async () => {
    await run({}, (connection, _, sql) =>
      Effect.gen(function*() {
        yield* sql("CREATE TABLE ds.docs AS SELECT x AS id, CONCAT('v1 ', CAST(x AS STRING)) AS body, x AS version FROM UNNEST(GENERATE_ARRAY(1, 300)) AS x")
        const Doc = Schema.Struct({ id: Schema.Number, body: Schema.String, version: Schema.Number })
        const docs = BigQuery.source({ query: "SELECT id, body, version FROM ds.docs", schema: Doc, key: "id", checkpoint: { column: "version" }, pageSize: 50, connection })
        const high = Option.getOrThrow(yield* docs.snapshot!.high)
        expect(yield* docs.snapshot!.upTo(high).count!).toBe(300)
        // the run starts; while it reads, row 10 is edited (its version bumped past high) and row 301 is added
        let edited = false
        const first: Array<Source.Item<typeof Doc.Type>> = []
        yield* Stream.runForEach(docs.snapshot!.upTo(high).read, (item) =>
          Effect.gen(function*() {
            first.push(item)
            if (first.length === 5 && !edited) {
              edited = true
              yield* sql("UPDATE ds.docs SET body = 'v2 10', version = 1000 WHERE id = 10")
              yield* sql("INSERT INTO ds.docs (id, body, version) VALUES (301, 'v1 301', 301)")
            }
          }))
        const firstRows = rowsOf(first)
        // row 10 was read before the edit or not at all; the query's snapshot never shows it twice
        expect(new Set(firstRows.map((r) => r.value.id)).size).toBe(firstRows.length)
        expect(firstRows.every((r) => r.value.id <= 300)).toBe(true)
        // the next run continues after this run's high: the edited row (new text) and the new row, each once
        const next = docs.continueAfter(high, 301)
        const nextHigh = Option.getOrThrow(yield* next.snapshot!.high)
        const second = rowsOf(yield* collect(next.snapshot!.upTo(nextHigh)))
        expect(second.map((r) => [r.value.id, r.value.body])).toEqual([[301, "v1 301"], [10, "v2 10"]])
        expect(yield* next.snapshot!.upTo(nextHigh).count!).toBe(2)
        expect(yield* BigQuery.source({ query: "SELECT id FROM ds.docs", schema: Schema.Struct({ id: Schema.Number }), connection }).count!).toBe(301)
        console.log(`bigquery source snapshot: run 1 read ${firstRows.length} rows up to its high; run 2 read the edited and the added row: ${second.map((r) => r.value.id).join(", ")}`)
      }))
  })

  it("bad input: a row failing the schema is Malformed naming the column; NULL checkpoints and a missing table are SourceErrors naming them", async () => {
    await run({}, (connection, _, sql) =>
      Effect.gen(function*() {
        yield* sql("CREATE TABLE ds.tickets (id INT64, priority STRING, seq INT64)")
        yield* sql("INSERT INTO ds.tickets VALUES (1, 'low', 1), (2, 'urgent', 2), (3, 'high', NULL)")
        const Ticket = Schema.Struct({ id: Schema.Number, priority: Schema.Literals(["low", "high"]) })
        const items = yield* collect(BigQuery.source({ query: "SELECT id, priority FROM ds.tickets ORDER BY id", schema: Ticket, key: "id", name: "tickets", connection }))
        expect(items.map((i) => i._tag)).toEqual(["Row", "Malformed", "Row"])
        const bad = items[1] as Source.Malformed
        expect(bad.reason).toBe(`tickets row 2 (id "2"): field "priority": Expected "low" | "high", got "urgent"`)
        expect(bad.key).toBe("2")
        expect(JSON.parse(bad.raw!)).toEqual({ id: "2", priority: "urgent" })

        const withNull = BigQuery.source({ table: "ds.tickets", schema: Ticket, key: "id", checkpoint: { column: "seq" }, name: "tickets", connection })
        const nullError = yield* Effect.flip(withNull.snapshot!.high)
        expect(nullError.message).toMatch(/tickets: the checkpoint column "seq" is NULL in a row \(id "3"\)/)

        const missing = yield* Effect.flip(Stream.runCollect(BigQuery.source({ table: "ds.nope", schema: Ticket, connection }).read))
        expect(missing._tag).toBe("SourceError")
        expect(missing.message).toMatch(/ds\.nope: cannot read the table: Not found: Table test-proj:ds\.nope/)
        const noKey = yield* Effect.flip(Stream.runCollect(BigQuery.source({ table: "ds.tickets", schema: Ticket, checkpoint: { column: "seq" }, connection }).read))
        expect(noKey.message).toMatch(/a checkpoint column needs the `key` option/)
        const badQuery = yield* Effect.flip(Stream.runCollect(BigQuery.source({ query: "SELECT FORMAT('%d', 1) AS x", schema: Ticket, connection }).read))
        expect(badQuery.message).toMatch(/the function FORMAT\(\) is not supported by the emulator/)
      }))
  })

  it("named parameters are sent as parameters; a 500 on a page is retried by the client and no row is lost", async () => {
    await run({ endpointFaults: [{ endpoint: "jobs.getQueryResults", status: 500, times: 2 }] }, (connection, _, sql) =>
      Effect.gen(function*() {
        yield* sql("CREATE TABLE ds.t AS SELECT x AS id, IF(MOD(x, 2) = 0, 'even', 'odd') AS kind FROM UNNEST(GENERATE_ARRAY(1, 1000)) AS x")
        const hostile = "even' OR '1'='1"
        const source = (kind: string) =>
          BigQuery.source({
            query: "SELECT id FROM ds.t WHERE kind = @kind AND id > @min",
            params: { kind, min: 100 },
            schema: Schema.Struct({ id: Schema.Number }),
            pageSize: 100,
            connection
          })
        const rows = rowsOf(yield* collect(source("even")))
        expect(rows.length).toBe(450)
        expect(yield* source("even").count!).toBe(450)
        expect(rowsOf(yield* collect(source(hostile)))).toHaveLength(0)
      }))
  }, 60_000)

  it("memory is bounded by pages, not rows: 100,000 and 1,000,000 rows streamed in a child process peak within 20 % of each other, under 300 MB", async () => {
    await run({}, (_, emulator, sql) =>
      Effect.gen(function*() {
        yield* sql(`CREATE TABLE ds.big AS SELECT x AS id, CONCAT('document body number ', CAST(x AS STRING), ' with some words') AS body,
          TIMESTAMP_SECONDS(1700000000 + x) AS updated_at FROM UNNEST(GENERATE_ARRAY(1, 1000000)) AS x`)
        const stream = (n: number) =>
          Effect.promise(() =>
            new Promise<{ rows: number; sum: number; malformed: number; ms: number; maxRssMb: number; heapAfterGc: Array<number> }>((resolve, reject) => {
              // the runner's memory settings: an 8 MB young generation, two malloc arenas, a full collection as the heap grows
              const child = spawn(process.execPath, ["--max-semi-space-size=8", "--expose-gc", path.join(import.meta.dirname, "fixtures/stream.run.ts")], {
                env: { ...process.env, MALLOC_ARENA_MAX: "2", GC_EVERY: "50000", BQ_URL: emulator.url, QUERY: `SELECT * FROM ds.big WHERE id <= ${n}` },
                stdio: ["ignore", "pipe", "inherit"]
              })
              let out = ""
              child.stdout.on("data", (d) => (out += d))
              child.on("exit", (code) => (code === 0 ? resolve(JSON.parse(out.trim())) : reject(new Error(`exit ${code}`))))
            })
          )
        const small = yield* stream(100_000)
        const large = yield* stream(1_000_000)
        expect(small).toMatchObject({ rows: 100_000, sum: 5_000_050_000, malformed: 0 })
        expect(large).toMatchObject({ rows: 1_000_000, sum: 500_000_500_000, malformed: 0 })
        expect(large.maxRssMb).toBeLessThan(300)
        expect(large.maxRssMb / small.maxRssMb).toBeLessThan(1.2)
        // what is live after each collection does not grow with the rows read
        expect(Math.max(...large.heapAfterGc) - Math.min(...large.heapAfterGc)).toBeLessThan(10)
        console.log(
          `bigquery source memory: 100,000 rows peak RSS ${small.maxRssMb.toFixed(0)} MB (${(small.rows / small.ms * 1000).toFixed(0)} rows/s); ` +
            `1,000,000 rows peak RSS ${large.maxRssMb.toFixed(0)} MB (${(large.rows / large.ms * 1000).toFixed(0)} rows/s), ` +
            `live heap after collections ${Math.min(...large.heapAfterGc)}-${Math.max(...large.heapAfterGc)} MB; pages of 10,000 rows`
        )
      }))
  }, 180_000)
})
