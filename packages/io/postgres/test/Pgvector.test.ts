/**
 * The pgvector path of Postgres.sink and Postgres.source.
 *
 * Debian bookworm packages no pgvector for its PostgreSQL 15, so the system
 * server cannot hold a `vector` column. These tests run PGlite (PostgreSQL
 * compiled to WASM) with `@electric-sql/pglite-pgvector`, served over TCP by
 * `@electric-sql/pglite-socket`: the connector talks to it through the same
 * `@effect/sql-pg` wire protocol as to any server. One PGlite per file
 * (starting one takes seconds). PGlite is one session behind a multiplexer
 * that runs one transaction at a time: the tests never hold a transaction on
 * one connection while another queries.
 */
import { assert, describe, it } from "@effect/vitest"
import { PGlite } from "@electric-sql/pglite"
import { vector } from "@electric-sql/pglite-pgvector"
import { PGLiteSocketServer } from "@electric-sql/pglite-socket"
import type * as SourceModel from "@offpeak/core/Source"
import { Effect, Logger, Schema, Stream } from "effect"
import { afterAll, beforeAll } from "vitest"
import * as Pg from "../../../core/test/support/postgres.ts"
import { Postgres } from "../index.ts"

let db: PGlite
let server: PGLiteSocketServer
let url: string

beforeAll(async () => {
  db = await PGlite.create({ extensions: { vector } })
  await db.exec("CREATE EXTENSION IF NOT EXISTS vector")
  server = new PGLiteSocketServer({ db, host: "127.0.0.1", port: 0, maxConnections: 8 })
  await server.start()
  url = `postgres://postgres@${server.getServerConn()}/postgres`
}, 120_000)

afterAll(async () => {
  await server?.stop()
  await db?.close()
})

const part = (seq: number) => ({ runId: "run-1", seq })

const captureLogs = () => {
  const lines: Array<string> = []
  const logger = Logger.make((options) => {
    lines.push((Array.isArray(options.message) ? options.message : [options.message]).map(String).join(" "))
  })
  return { lines, layer: Logger.layer([logger]) }
}

/** corner of a cube, scaled: exactly representable as float32 */
const vec = (i: number): Array<number> => [(i & 1) * 0.5 + i, ((i >> 1) & 1) * 0.25 - i, i / 8]

describe("Postgres.sink and Postgres.source with pgvector (PGlite)", () => {
  it.effect("writes vector(n) columns: vectors read back equal (emb::text), <-> finds nearest neighbours", () =>
    Effect.gen(function*() {
      const logs = captureLogs()
      const sink = Postgres.sink<{ id: number; title: string; emb: ReadonlyArray<number> }>({
        url,
        table: "docs",
        key: "id",
        vectorColumns: ["emb"],
        createTable: { columns: { id: "bigint", title: "text", emb: "vector(3)" } }
      })
      const written = Array.from({ length: 40 }, (_, i) => ({ id: i, title: `doc ${i}`, emb: vec(i) }))
      yield* sink.write(part(1), written).pipe(Effect.provide(logs.layer))
      // the same part again, then an update: no duplicates
      yield* sink.write(part(1), written).pipe(Effect.provide(logs.layer))
      yield* sink.write(part(2), [{ id: 0, title: "doc 0 again", emb: [9, 9, 9] }]).pipe(Effect.provide(logs.layer))
      const version = (yield* Effect.promise(() => db.query<{ v: string }>("SELECT extversion AS v FROM pg_extension WHERE extname = 'vector'"))).rows[0]!.v
      assert.deepStrictEqual(logs.lines.filter((l) => l.includes("pgvector")), [
        `postgres sink docs: pgvector ${version} is installed in ${server.getServerConn()}/postgres; writing "emb" as vector(3)`
      ])

      const sql = yield* Pg.connect(url)
      const type = yield* sql.unsafe<{ t: string }>(
        "SELECT format_type(atttypid, atttypmod) AS t FROM pg_attribute WHERE attrelid = 'docs'::regclass AND attname = 'emb'"
      )
      assert.deepStrictEqual(type, [{ t: "vector(3)" }])
      const back = yield* sql.unsafe<{ id: bigint; title: string; emb: string }>("SELECT id, title, emb::text AS emb FROM docs ORDER BY id")
      assert.strictEqual(back.length, 40)
      assert.deepStrictEqual(back[0], { id: 0n, title: "doc 0 again", emb: "[9,9,9]" })
      for (let i = 1; i < 40; i++) assert.strictEqual(back[i]!.emb, `[${vec(i).join(",")}]`)

      // nearest neighbours by L2 distance, through an HNSW index
      yield* sql.unsafe("CREATE INDEX docs_emb ON docs USING hnsw (emb vector_l2_ops)")
      const query = "SELECT id FROM docs ORDER BY emb <-> $1 LIMIT 3"
      const target = `[${vec(17).join(",")}]`
      const [plan, near] = yield* Effect.gen(function*() {
        yield* sql.unsafe("SET LOCAL enable_seqscan = off")
        const plan = yield* sql.unsafe<{ "QUERY PLAN": string }>(`EXPLAIN ${query}`, [target])
        return [plan.map((r) => r["QUERY PLAN"]).join("\n"), yield* sql.unsafe<{ id: bigint }>(query, [target])] as const
      }).pipe(sql.withTransaction)
      assert.include(plan, "Index Scan using docs_emb")
      const l2 = (a: ReadonlyArray<number>, b: ReadonlyArray<number>) => Math.hypot(...a.map((x, k) => x - b[k]!))
      const expected = [{ id: 0, emb: [9, 9, 9] }, ...written.slice(1)]
        .sort((a, b) => l2(a.emb, vec(17)) - l2(b.emb, vec(17)))
        .slice(0, 3)
        .map((d) => d.id)
      assert.strictEqual(expected[0], 17)
      assert.deepStrictEqual(near.map((r) => Number(r.id)), expected)
    }))

  it.effect("the source reads vector columns as arrays of numbers, through its cursor and checkpoint", () =>
    Effect.gen(function*() {
      const sql = yield* Pg.connect(url)
      yield* sql.unsafe("CREATE TABLE items (id int PRIMARY KEY, emb vector(3))")
      yield* sql.unsafe("INSERT INTO items SELECT g, ('[' || g || ',0.5,-1]')::vector FROM generate_series(1, 12) g")
      const Item = Schema.Struct({ id: Schema.Number, emb: Schema.Array(Schema.Number) })
      const source = Postgres.source({ url, query: "SELECT id, emb FROM items", schema: Item, key: "id", checkpoint: { column: "id" }, after: 4, batchSize: 5, startPosition: 5 })
      const items = yield* Stream.runCollect(source.read)
      assert.deepStrictEqual(
        items.map((i) => [i.position, (i as SourceModel.Row<typeof Item.Type>).value]),
        Array.from({ length: 8 }, (_, k) => [k + 5, { id: k + 5, emb: [k + 5, 0.5, -1] }])
      )
    }))

  it.effect("pgvector installed but the column is real[]: written as real[]; a wrong dimension is refused naming the row, nothing kept", () =>
    Effect.gen(function*() {
      const sql = yield* Pg.connect(url)
      yield* sql.unsafe("CREATE TABLE plain (id int PRIMARY KEY, emb real[])")
      const logs = captureLogs()
      yield* Postgres.sink({ url, table: "plain", key: "id", vectorColumns: ["emb"] })
        .write(part(1), [{ id: 1, emb: [1, 2] }])
        .pipe(Effect.provide(logs.layer))
      assert.match(logs.lines.join("\n"), /pgvector [\d.]+ is installed in .*; writing "emb" as real\[\]/)
      assert.deepStrictEqual(yield* sql.unsafe("SELECT emb FROM plain"), [{ emb: [1, 2] }])

      yield* sql.unsafe("CREATE TABLE dims (id int PRIMARY KEY, emb vector(3))")
      const error = yield* Postgres.sink({ url, table: "dims", key: "id", vectorColumns: ["emb"] })
        .write(part(1), [{ id: 1, emb: [1, 2, 3] }, { id: 2, emb: [1, 2] }])
        .pipe(Effect.flip)
      assert.match(error.message, /^dims: part run-1\/1 row 2 \(id 2\): expected 3 dimensions, not 2/)
      assert.deepStrictEqual([error.reason?._tag, (error.reason as { row?: number }).row], ["Refused", 1])
      assert.deepStrictEqual(yield* sql.unsafe("SELECT count(*)::int AS n FROM dims"), [{ n: 0 }])
    }))
})
