/**
 * BigQuery.sink against the emulator: idempotent parts (job ids derived from
 * the run, the part and its rows), MERGE on the key, the three dispositions,
 * refused values naming the row and the column, a part interrupted between
 * its load and its MERGE and written again.
 */
import type { BigQuery as Client } from "@google-cloud/bigquery"
import * as Sink from "@offpeak/core/Sink"
import { Effect, Fiber, Schema } from "effect"
import { describe, expect, it } from "vitest"
import * as BigQuery from "../BigQuery.ts"
import type * as Emulator from "../Emulator.ts"
import { withEmulatorEffect } from "./support.ts"

const run = <A>(options: Emulator.Options, f: (connection: BigQuery.Connection, emulator: Emulator.Handle, bq: Client) => Effect.Effect<A, unknown>) =>
  withEmulatorEffect(options, (emulator, bq) =>
    Effect.flatMap(Effect.promise(() => bq.createDataset("ds")), () => f({ projectId: "test-proj", apiEndpoint: emulator.url }, emulator, bq)))

const query = (bq: Client, sql: string) => Effect.promise(() => bq.query({ query: sql }).then(([rows]) => rows as Array<any>))

const tables = (bq: Client) => Effect.promise(() => bq.dataset("ds").getTables().then(([ts]) => ts.map((t) => t.id!).sort()))

interface Doc {
  readonly id: number
  readonly title: string
  readonly embedding: ReadonlyArray<number>
}

const docs = (from: number, to: number, tag = "v1"): Array<Doc> =>
  Array.from({ length: to - from + 1 }, (_, i) => ({ id: from + i, title: `${tag} ${from + i}`, embedding: [from + i, 0.5] }))

describe("BigQuery.sink", () => {
  it("merge (default): a part written twice runs no job again; a later part updates and inserts on the key; a repeated key keeps its last row", async () => {
    await run({}, (connection, emulator, bq) =>
      Effect.gen(function*() {
        const sink = BigQuery.sink<Doc>({ table: "ds.embeddings", key: "id", connection })
        expect(sink.dispositions).toEqual(["merge", "append", "replace"])
        expect(Sink.dispositionOf(sink)).toBe("merge")
        yield* sink.write({ runId: "run-1", seq: 1 }, docs(1, 500))
        const after1 = (yield* emulator.stats).jobsCreated
        yield* sink.write({ runId: "run-1", seq: 1 }, docs(1, 500)) // a crash before the ledger committed part 1: written again
        expect((yield* emulator.stats).jobsCreated).toBe(after1)
        yield* sink.write({ runId: "run-1", seq: 2 }, [...docs(400, 600, "v2"), { id: 700, title: "first", embedding: [] }, { id: 700, title: "last", embedding: [7] }])
        const jobsOfPart2 = (yield* emulator.stats).jobsCreated - after1
        expect(jobsOfPart2).toBe(2) // a load and a MERGE
        const rows = yield* query(bq, "SELECT id, title, embedding FROM ds.embeddings ORDER BY id")
        expect(rows).toHaveLength(601)
        expect(new Set(rows.map((r) => r.id)).size).toBe(601)
        expect(rows[0]).toEqual({ id: 1, title: "v1 1", embedding: [1, 0.5] })
        expect(rows.find((r) => r.id === 450)).toEqual({ id: 450, title: "v2 450", embedding: [450, 0.5] })
        expect(rows.at(-1)).toEqual({ id: 700, title: "last", embedding: [7] })
        // the table was created from the first part's rows; staging tables are gone
        const [meta] = yield* Effect.promise(() => bq.dataset("ds").table("embeddings").getMetadata())
        expect(meta.schema.fields.map((f: { name: string; type: string; mode: string }) => `${f.name}:${f.type}:${f.mode}`)).toEqual([
          "id:INTEGER:NULLABLE", "title:STRING:NULLABLE", "embedding:FLOAT:REPEATED"
        ])
        expect(yield* tables(bq)).toEqual(["embeddings"])
        console.log(`bigquery sink merge: 2 parts, 601 keys; part 1 took 2 jobs, writing it again 0, part 2 ${jobsOfPart2}`)
      }))
  })

  it("the target's schema comes from an Effect Schema when given (INT64 key, REPEATED FLOAT64, TIMESTAMP, a RECORD)", async () => {
    await run({}, (connection, _, bq) =>
      Effect.gen(function*() {
        const Row = Schema.Struct({
          id: Schema.Int,
          tags: Schema.Array(Schema.String),
          at: Schema.Date,
          meta: Schema.Struct({ score: Schema.Number, label: Schema.optional(Schema.String) }),
          note: Schema.NullOr(Schema.String)
        })
        const sink = BigQuery.sink<typeof Row.Type>({ table: "ds.typed", key: "id", schema: Row, connection })
        yield* sink.write({ runId: "r", seq: 1 }, [{ id: 1, tags: ["a"], at: new Date("2024-01-02T03:04:05.678Z"), meta: { score: 0.5 }, note: null }])
        const [meta] = yield* Effect.promise(() => bq.dataset("ds").table("typed").getMetadata())
        expect(meta.schema.fields.map((f: any) => `${f.name}:${f.type}:${f.mode}`)).toEqual([
          "id:INTEGER:REQUIRED", "tags:STRING:REPEATED", "at:TIMESTAMP:REQUIRED", "meta:RECORD:REQUIRED", "note:STRING:NULLABLE"
        ])
        const rows = yield* query(bq, "SELECT id, UNIX_MILLIS(at) AS ms, meta.score AS score, meta.label AS label FROM ds.typed")
        expect(rows).toEqual([{ id: 1, ms: 1704164645678, score: 0.5, label: null }])
      }))
  })

  it("append: a part written twice appears once; another run's parts are added; replace: the target holds the run's rows only after finish, a run without finish changes nothing", async () => {
    await run({}, (connection, _, bq) =>
      Effect.gen(function*() {
        const append = BigQuery.sink<Doc>({ table: "ds.log", key: "id", disposition: "append", connection })
        yield* append.write({ runId: "a", seq: 1 }, docs(1, 3))
        yield* append.write({ runId: "a", seq: 1 }, docs(1, 3))
        yield* append.write({ runId: "b", seq: 1 }, docs(1, 3))
        expect((yield* query(bq, "SELECT id, COUNT(*) AS n FROM ds.log GROUP BY id ORDER BY id")).map((r) => r.n)).toEqual([2, 2, 2])

        const replace = BigQuery.sink<Doc>({ table: "ds.snapshot", key: "id", disposition: "replace", connection })
        yield* replace.write({ runId: "first", seq: 1 }, docs(1, 10))
        yield* replace.finish!({ runId: "first", disposition: "replace" })
        expect((yield* query(bq, "SELECT COUNT(*) AS n FROM ds.snapshot"))[0].n).toBe(10)
        // a second run writes parts (one of them twice) but has not finished: the target is unchanged
        yield* replace.write({ runId: "second", seq: 1 }, docs(5, 7, "v2"))
        yield* replace.write({ runId: "second", seq: 1 }, docs(5, 7, "v2"))
        yield* replace.write({ runId: "second", seq: 2 }, docs(20, 21, "v2"))
        expect((yield* query(bq, "SELECT COUNT(*) AS n FROM ds.snapshot"))[0].n).toBe(10)
        yield* replace.finish!({ runId: "second", disposition: "replace" })
        yield* replace.finish!({ runId: "second", disposition: "replace" }) // a crash after finish: called again
        const rows = yield* query(bq, "SELECT id, title FROM ds.snapshot ORDER BY id")
        expect(rows).toEqual([5, 6, 7, 20, 21].map((id) => ({ id, title: `v2 ${id}` })))
        expect((yield* tables(bq)).filter((t) => t.includes("__offpeak"))).toEqual([])
      }))
  })

  it("refused values fail the write with Refused naming the row and the column; nothing of the part is written", async () => {
    await run({}, (connection, _, bq) =>
      Effect.gen(function*() {
        const sink = BigQuery.sink<Record<string, unknown>>({
          table: "ds.strict",
          key: "id",
          schema: [{ name: "id", type: "INT64", mode: "REQUIRED" }, { name: "n", type: "INT64" }, { name: "s", type: "STRING" }],
          connection
        })
        const refusal = (rows: Array<Record<string, unknown>>) =>
          Effect.map(Effect.flip(sink.write({ runId: "r", seq: 9 }, rows)), (e) => ({ refused: Sink.isRefused(e), ...(e.reason as { row?: number; column?: string }), message: e.message }))
        const typeError = yield* refusal([{ id: 1, n: 1 }, { id: 2, n: 2 }, { id: 3, n: "three" }, { id: 4, n: 4 }])
        expect(typeError).toMatchObject({ refused: true, row: 2, column: "n" })
        expect(typeError.message).toMatch(/Could not convert value to integer\. Field: n; Value: three/)
        const unknownColumn = yield* refusal([{ id: 1, n: 1 }, { id: 2, extra: "x" }])
        expect(unknownColumn).toMatchObject({ refused: true, row: 1, column: "extra" })
        const noKey = yield* refusal([{ id: 1 }, { n: 5 }])
        expect(noKey).toMatchObject({ refused: true, row: 1, column: "id" })
        const nested = yield* refusal([{ id: 1, s: { not: "a string" } }])
        expect(nested).toMatchObject({ refused: true, row: 0, column: "s" })
        expect(yield* query(bq, "SELECT COUNT(*) AS n FROM ds.strict")).toEqual([{ n: 0 }])
        // the rows that are fine go through once the bad one is left out (what the runner's bisection does)
        yield* sink.write({ runId: "r", seq: 9 }, [{ id: 1, n: 1 }, { id: 2, n: 2 }, { id: 4, n: 4 }])
        expect((yield* query(bq, "SELECT id FROM ds.strict ORDER BY id")).map((r) => r.id)).toEqual([1, 2, 4])
        console.log(`bigquery sink refusals: ${[typeError, unknownColumn, noKey, nested].map((r) => `row ${r.row} column ${r.column}`).join("; ")}`)
      }))
  })

  it("a part a wrongly typed table refused is written once the table is fixed: an earlier attempt's failed job is not its answer", async () => {
    await run({}, (connection, _, bq) =>
      Effect.gen(function*() {
        // the target exists with a column of the wrong type (a STRING where the rows hold arrays)
        yield* query(bq, "CREATE TABLE ds.embeddings (id INT64, title STRING, embedding STRING)")
        const sink = BigQuery.sink<Doc>({ table: "ds.embeddings", key: "id", connection })
        const refused = yield* Effect.flip(sink.write({ runId: "run-1", seq: 1 }, docs(1, 20)))
        expect(Sink.isRefused(refused)).toBe(true)
        // fixed: the same part (same run, part and rows, so the same job ids) is written again, as a resume does
        yield* query(bq, "DROP TABLE ds.embeddings")
        yield* query(bq, "CREATE TABLE ds.embeddings (id INT64, title STRING, embedding ARRAY<FLOAT64>)")
        // a resume is a new process: a sink of its own, which reads the fixed table
        yield* BigQuery.sink<Doc>({ table: "ds.embeddings", key: "id", connection }).write({ runId: "run-1", seq: 1 }, docs(1, 20))
        const rows = yield* query(bq, "SELECT id FROM ds.embeddings ORDER BY id")
        expect(rows.map((r) => r.id)).toEqual(docs(1, 20).map((d) => d.id))
        console.log(`bigquery sink: refused by the wrong table (${refused.message.slice(0, 70)}…), written once fixed: ${rows.length} rows`)
      }))
  })

  it("service faults: a jobs.insert answered 500 after creating its job is found, not run twice; a MERGE job failing with backendError runs again under the next id", async () => {
    await run({ jobInsertSucceedsThenFails: 1, failJobs: { kind: "query", times: 1, reason: "backendError" } }, (connection, emulator, bq) =>
      Effect.gen(function*() {
        const sink = BigQuery.sink<Doc>({ table: "ds.faulty", key: "id", connection, pollInterval: "20 millis" })
        yield* sink.write({ runId: "f", seq: 1 }, docs(1, 50))
        const rows = yield* query(bq, "SELECT COUNT(*) AS n, COUNT(DISTINCT id) AS d FROM ds.faulty")
        expect(rows).toEqual([{ n: 50, d: 50 }])
        const jobs = yield* Effect.promise(() => bq.getJobs().then(([js]) => js.map((j) => j.id!)))
        const merges = jobs.filter((id) => id.includes("_merge_"))
        expect(merges.sort().map((id) => id.slice(-8))).toEqual(["merge_0", "merge_1"].map((s) => s.padStart(8, "_")))
        expect(jobs.filter((id) => id.includes("_load_"))).toHaveLength(1)
        console.log(`bigquery sink faults: jobs ${JSON.stringify((yield* emulator.stats).requests["jobs.insert"])} inserts for 1 load + 2 merges`)
      }))
  }, 30_000)

  it("a part interrupted after its load (and one interrupted during its MERGE) is written again: the load is found, the MERGE runs once, every key once", async () => {
    for (const stopAt of ["after the load", "during the MERGE"] as const) {
      await run({ jobDelayMs: 400 }, (connection, emulator, bq) =>
        Effect.gen(function*() {
          const sink = BigQuery.sink<Doc>({ table: "ds.crashy", key: "id", connection, pollInterval: "20 millis" })
          yield* sink.write({ runId: "c", seq: 1 }, docs(1, 100))
          const base = yield* emulator.stats
          const fiber = yield* Effect.forkChild(sink.write({ runId: "c", seq: 2 }, docs(90, 300, "v2")))
          // wait until the load ran (and, for the second case, the MERGE job exists but has not run)
          while (true) {
            const s = yield* emulator.stats
            if (stopAt === "after the load" && s.jobsRun - base.jobsRun === 1) break
            if (stopAt === "during the MERGE" && s.jobsCreated - base.jobsCreated === 2 && s.jobsRun - base.jobsRun === 1) break
            yield* Effect.sleep("5 millis")
          }
          yield* Fiber.interrupt(fiber)
          if (stopAt === "after the load") {
            // and the staging table is lost meanwhile (expired): the part is loaded again before the MERGE
            const staging = (yield* tables(bq)).find((t) => t.includes("__offpeak_stage_"))!
            yield* Effect.promise(() => bq.dataset("ds").table(staging).delete())
          }
          yield* sink.write({ runId: "c", seq: 2 }, docs(90, 300, "v2"))
          const rows = yield* query(bq, "SELECT id, title FROM ds.crashy ORDER BY id")
          expect(rows).toHaveLength(300)
          expect(new Set(rows.map((r) => r.id)).size).toBe(300)
          expect(rows.filter((r) => r.title.startsWith("v2")).map((r) => r.id)).toEqual(Array.from({ length: 211 }, (_, i) => 90 + i))
          const jobs = yield* Effect.promise(() => bq.getJobs().then(([js]) => js.map((j) => j.id!)))
          expect(jobs.filter((id) => id.includes("_2_") && id.includes("_merge_"))).toHaveLength(1)
          console.log(`bigquery sink interrupted ${stopAt}: rewritten, 300 keys once; jobs of part 2: ${jobs.filter((id) => id.includes("_2_")).map((id) => id.replace(/^.*_2_[0-9a-f]+_/, "")).sort().join(", ")}`)
        }))
    }
  }, 60_000)
})
