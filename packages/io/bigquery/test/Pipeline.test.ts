/**
 * An embedding backfill from a warehouse under the real runner: BigQuery
 * (emulator) → OpenAI Batch embeddings (emulator) → BigQuery, incremental on
 * `updated_at`; and the same pipeline SIGKILLed between a part's load and its
 * MERGE, and after its MERGE, then resumed: every key once, every vector its
 * document's.
 */
import * as Ledger from "@offpeak/core/Ledger"
import * as Pipeline from "@offpeak/core/Pipeline"
import * as Progress from "@offpeak/core/Progress"
import * as Provider from "@offpeak/core/Provider"
import * as SqliteClient from "@offpeak/core/SqliteClient"
import { Engine } from "@offpeak/providers/local"
import { Emulator as OpenAiEmulator } from "@offpeak/providers/openai"
import * as OpenAiBatch from "@offpeak/providers/openai/OpenAiBatch"
import type { BigQuery as Client } from "@google-cloud/bigquery"
import { Effect, Layer, Redacted } from "effect"
import { spawn } from "node:child_process"
import * as path from "node:path"
import { describe, expect, it } from "vitest"
import * as Emulator from "../Emulator.ts"
import { backfill, DIMENSIONS, input, seed } from "./fixtures/backfill.ts"
import { clientOf, tmp } from "./support.ts"

const query = (bq: Client, sql: string) => Effect.promise(() => bq.query({ query: sql }).then(([rows]) => rows as Array<any>))

const expected = (doc: { readonly title: string; readonly body: string }) =>
  Array.from(Engine.embed({ model: "text-embedding-3-small", input: input(doc), dimensions: DIMENSIONS }).vector)

/** every document has exactly one embedding row, and it is its own */
const checkAll = (bq: Client, n: number) =>
  Effect.gen(function*() {
    const [counts] = yield* query(bq, "SELECT COUNT(*) AS n, COUNT(DISTINCT id) AS d FROM ds.embeddings")
    expect(counts).toEqual({ n, d: n })
    const rows = yield* query(bq, "SELECT d.id, d.title, d.body, e.embedding FROM ds.documents AS d JOIN ds.embeddings AS e ON d.id = e.id")
    expect(rows).toHaveLength(n)
    for (const row of rows) {
      const want = expected(row)
      expect(row.embedding).toHaveLength(DIMENSIONS)
      row.embedding.forEach((x: number, i: number) => expect(x).toBeCloseTo(want[i]!, 6))
    }
  })

describe("BigQuery → provider → BigQuery under Pipeline.run", () => {
  it("an embedding backfill from a warehouse: every document once with its vector; an incremental rerun sends only the edited and added documents", async () => {
    await Effect.runPromise(Effect.scoped(Effect.gen(function*() {
      const bqEmulator = yield* Emulator.serve({})
      const openai = yield* OpenAiEmulator.serve({ validationMs: 5, finalizingMs: 5 })
      const bq = clientOf(bqEmulator.url)
      yield* Effect.promise(() => bq.createDataset("ds"))
      yield* query(bq, seed(2_000))
      const provider = yield* OpenAiBatch.make({ apiKey: Redacted.make("test"), baseURL: openai.url, pollInterval: { initial: "10 millis", max: "50 millis" } })
      const stateDir = tmp("pipeline")
      const layer = Layer.mergeAll(
        Layer.succeed(Provider.Provider, provider),
        Ledger.layer.pipe(Layer.provide(SqliteClient.layer({ filename: path.join(stateDir, "state.db") })))
      )
      const pipeline = backfill({ projectId: "test-proj", apiEndpoint: bqEmulator.url })
      const started = Date.now()
      const progress1 = Progress.make()
      const first = yield* Pipeline.run(pipeline, { stateDir, progress: progress1 }).pipe(Effect.provide(layer))
      const firstMs = Date.now() - started
      expect(first).toMatchObject({ state: "completed", rows: 2_000, succeeded: 2_000, failed: 0 })
      yield* checkAll(bq, 2_000)

      // 50 documents edited (updated_at bumped), 10 added: the next run reads and sends only those 60
      yield* query(bq, "UPDATE ds.documents SET body = CONCAT(body, ' (revised)'), updated_at = TIMESTAMP_ADD(updated_at, INTERVAL 1 DAY) WHERE MOD(id, 40) = 0")
      yield* query(bq, `INSERT INTO ds.documents (id, title, body, updated_at)
        SELECT x, CONCAT('Document ', CAST(x AS STRING)), 'A new one', TIMESTAMP '2030-01-01 00:00:00 UTC' FROM UNNEST(GENERATE_ARRAY(2001, 2010)) AS x`)
      const progress2 = Progress.make()
      const second = yield* Pipeline.run(pipeline, { stateDir, progress: progress2 }).pipe(Effect.provide(layer))
      expect(second).toMatchObject({ state: "completed", rows: 60, succeeded: 60, failed: 0 })
      expect(progress2.submitted).toBe(60)
      yield* checkAll(bq, 2_010)
      const revised = yield* query(bq, "SELECT COUNT(*) AS n FROM ds.documents WHERE body LIKE '%(revised)'")
      expect(revised).toEqual([{ n: 50 }])
      const stats = yield* bqEmulator.stats
      console.log(
        `warehouse backfill: 2,000 documents embedded into BigQuery in ${(firstMs / 1000).toFixed(1)} s (${first.batches} batches, ${progress1.submitted} requests); ` +
          `incremental rerun after 50 edits + 10 inserts: read ${second.rows}, sent ${progress2.submitted}; BigQuery jobs ${stats.jobsCreated}, rows loaded ${stats.rowsLoaded}`
      )
    })))
  }, 120_000)

  it("SIGKILL between a part's load and its MERGE, and after its MERGE before the ledger commits: resume delivers every key once, values equal", async () => {
    for (const failpoint of ["part.writing:2", "part.written:3"]) {
      await Effect.runPromise(Effect.scoped(Effect.gen(function*() {
        const bqEmulator = yield* Emulator.serve({})
        const openai = yield* OpenAiEmulator.serve({ validationMs: 5, finalizingMs: 5 })
        const bq = clientOf(bqEmulator.url)
        yield* Effect.promise(() => bq.createDataset("ds"))
        yield* query(bq, seed(1_500))
        const state = tmp("kill")
        const child = (env: Record<string, string>) =>
          Effect.promise(() =>
            new Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }>((resolve) => {
              const p = spawn(process.execPath, [path.join(import.meta.dirname, "fixtures/backfill.run.ts")], {
                env: { ...process.env, BQ_URL: bqEmulator.url, OPENAI_URL: openai.url, STATE: state, RUN_ID: "killed", ...env },
                stdio: ["ignore", "pipe", "pipe"]
              })
              let stdout = ""
              let stderr = ""
              p.stdout.on("data", (d) => (stdout += d))
              p.stderr.on("data", (d) => (stderr += d))
              p.on("exit", (code, signal) => resolve({ code, signal, stdout, stderr }))
            })
          )
        const killed = yield* child({ OFFPEAK_FAILPOINTS: failpoint })
        expect(killed.signal, killed.stderr).toBe("SIGKILL")
        const [partial] = yield* query(bq, "SELECT COUNT(*) AS n FROM ds.embeddings")
        const resumed = yield* child({ RESUME: "1" })
        expect(resumed.code, resumed.stderr).toBe(0)
        expect(JSON.parse(resumed.stdout.trim().split("\n").at(-1)!)).toMatchObject({ state: "completed", rows: 1_500, succeeded: 1_500 })
        yield* checkAll(bq, 1_500)
        const jobs = yield* Effect.promise(() => bq.getJobs().then(([js]) => js.map((j) => j.id!)))
        const merges = jobs.filter((id) => id.includes("_merge_"))
        // one MERGE per part, none run twice (a part rewritten after the kill found its jobs)
        expect(new Set(merges.map((id) => id.replace(/_merge_\d+$/, ""))).size).toBe(merges.length)
        console.log(`warehouse backfill killed at ${failpoint}: ${partial.n} of 1,500 embeddings in BigQuery at the kill; resumed: 1,500 keys once, ${merges.length} MERGE jobs, none twice`)
      })))
    }
  }, 240_000)
})
