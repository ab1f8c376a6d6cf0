/**
 * The pushdown end to end through the core's runner: `Pipeline.run` with a
 * source whose `BigQuery.pushdown` stages tables in the BigQuery emulator and
 * `VertexBatch` running jobs over them on the Vertex emulator (which reads and
 * writes the BigQuery emulator); the runner tracks each job as a ledger batch,
 * the pushdown tallies and lands the answers, the failed keys go again as
 * smaller jobs and the rest to the dead letter — no row through this process.
 * The adapter's and the pushdown's own promises (find after a lost create,
 * staging and landing idempotent) are tested on them directly.
 */
import * as Ledger from "@offpeak/core/Ledger"
import * as Pipeline from "@offpeak/core/Pipeline"
import * as Provider from "@offpeak/core/Provider"
import * as Request from "@offpeak/core/Request"
import type * as Result from "@offpeak/core/Result"
import type * as Sink from "@offpeak/core/Sink"
import * as SqliteClient from "@offpeak/core/SqliteClient"
import { BigQuery, Pushdown } from "@offpeak/io/bigquery"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer, Option, Schedule, Schema } from "effect"
import { PassThroughClient } from "google-auth-library"
import * as path from "node:path"
import * as VertexBatch from "../VertexBatch.ts"
import * as VertexEmulator from "../VertexEmulator.ts"
import { LOCATION, PROJECT, promise, rows, stack, tmpDir } from "./vertexSupport.ts"

const Classification = Schema.Struct({
  category: Schema.Literals(["electronics", "kitchen", "toys", "garden", "clothing"]),
  confidence: Schema.Number,
  summary: Schema.String
})

const Product = Schema.Struct({ sku: Schema.Number, title: Schema.String, description: Schema.String })

const seed = (bq: ReturnType<typeof import("./vertexSupport.ts").bigquery>, n: number) =>
  promise(async () => {
    await bq.createDataset("shop")
    await bq.query({
      query: `CREATE TABLE shop.products AS SELECT n AS sku, CONCAT('Product ', CAST(n AS STRING)) AS title,
        CONCAT('A ', IF(MOD(n, 3) = 0, 'stainless steel kettle', IF(MOD(n, 3) = 1, 'wooden toy train', 'garden hose')), ', model ', CAST(n AS STRING)) AS description
        FROM UNNEST(GENERATE_ARRAY(1, ${n})) AS n`
    })
  })

const classify = (url: string) =>
  BigQuery.pushdown({
    source: { table: "shop.products" },
    key: "sku",
    request: Pushdown.chat({
      model: "gemini-2.5-flash",
      system: "Classify the product into one category.",
      prompt: "CONCAT(title, '\\n', description)",
      maxTokens: 256,
      output: { name: "Classification", schema: Classification }
    }),
    target: { table: "shop.classified" },
    dataset: "offpeak_jobs",
    connection: { projectId: PROJECT, apiEndpoint: url },
    pollInterval: "20 millis"
  })

const adapter = (url: string) =>
  VertexBatch.make({
    project: PROJECT,
    location: LOCATION,
    baseURL: url,
    authClient: new PassThroughClient(),
    pollInterval: { initial: "20 millis", max: "200 millis" }
  })

/** rows the runner must never hand over: the pushdown lands them itself */
const noRows: Sink.Sink<unknown> = {
  name: "shop.classified",
  write: (_part, r) => Effect.die(new Error(`the pushdown runner handed ${r.length} rows to the sink`))
}

const memoryDeadLetter = () => {
  const rows: Array<Result.Failed<unknown>> = []
  const sink: Sink.Sink<Result.Failed<unknown>> = { name: "memory dead letter", write: (_part, r) => Effect.sync(() => void rows.push(...r)) }
  return { sink, rows }
}

/**
 * Runs a pushed-down pipeline over `shop.products` with `Pipeline.run` (VertexBatch on the emulator, a SQLite
 * ledger in a folder of its own); the summary, the ledger's batches and the dead letter's rows.
 */
const runPushdown = (
  s: { readonly bq: { readonly url: string }; readonly vertex: VertexEmulator.Handle },
  pushdown: Pushdown.BigQueryPushdown,
  options: { readonly name: string; readonly maxAttempts: number }
) =>
  Effect.gen(function*() {
    const dir = tmpDir(options.name)
    const dead = memoryDeadLetter()
    const source = BigQuery.source({ table: "shop.products", schema: Product, connection: { projectId: PROJECT, apiEndpoint: s.bq.url } })
    const pipeline = Pipeline.make({
      name: options.name,
      source: { ...source, pushdown },
      key: (p) => String(p.sku),
      request: (p) => Request.chat({ model: "gemini-2.5-flash", prompt: `${p.title}\n${p.description}` }),
      sink: noRows,
      deadLetter: dead.sink,
      retry: { maxAttempts: options.maxAttempts }
    })
    const provider = yield* adapter(s.vertex.url)
    const layer = Layer.mergeAll(
      Layer.succeed(Provider.Provider, provider),
      Ledger.layer.pipe(Layer.provide(SqliteClient.layer({ filename: path.join(dir, "state.db") })))
    )
    return yield* Effect.gen(function*() {
      const summary = yield* Pipeline.run(pipeline, { stateDir: dir, runId: options.name })
      const ledger = yield* Ledger.Ledger
      const batches = yield* ledger.batches(summary.runId)
      return { summary, batches, dead: dead.rows }
    }).pipe(Effect.provide(layer))
  })

describe("Vertex batch prediction from BigQuery, pushed down, through Pipeline.run", () => {
  it.live("failed rows are retried as smaller jobs over their keys only, the rest dead-lettered; every key lands once", () =>
    Effect.gen(function*() {
      const s = yield* stack({ chunkRows: 100, rowFailures: [{ code: "RESOURCE_EXHAUSTED", rate: 0.08 }], malformedAnswers: 0.04 })
      yield* seed(s.bqClient, 500)
      const { summary, batches, dead } = yield* runPushdown(s, classify(s.bq.url), { name: "retries", maxAttempts: 3 })
      assert.strictEqual(summary.state, "completed")
      assert.strictEqual(summary.rows, 500)
      // job 1 over every row, job 2 over the rows job 1 failed, job 3 over the rows job 2 failed
      assert.deepStrictEqual(batches.map((b) => [b.mode, b.state]), [["table", "collected"], ["table", "collected"], ["table", "collected"]])
      assert.strictEqual(batches[0]!.requestCount, 500)
      assert.strictEqual(batches[1]!.requestCount, batches[0]!.failed)
      assert.strictEqual(batches[2]!.requestCount, batches[1]!.failed)
      assert.isBelow(batches[2]!.requestCount, batches[1]!.requestCount)
      assert.isAbove(batches[2]!.failed, 0)
      assert.strictEqual(summary.failed, batches[2]!.failed)
      assert.strictEqual(dead.length, summary.failed)
      const landed = batches.reduce((n, b) => n + b.completed, 0)
      assert.strictEqual(summary.succeeded, landed)
      assert.strictEqual(landed + dead.length, 500)
      const [target] = yield* rows(s.bqClient, "SELECT COUNT(*) AS n, COUNT(DISTINCT sku) AS d FROM shop.classified")
      assert.deepStrictEqual([target!.n, target!.d], [landed, landed])
      const deadKeys = new Set(dead.map((f) => f.key))
      assert.strictEqual(deadKeys.size, dead.length)
      const inTarget = yield* rows(s.bqClient, "SELECT sku FROM shop.classified")
      assert.isTrue(inTarget.every((r) => !deadKeys.has(String(r.sku))), "no dead-lettered key is in the target")
      for (const f of dead) assert.match(f.message, /RESOURCE_EXHAUSTED|finishReason|field|not JSON|not a JSON object|MAX_TOKENS|cut/i)
      const sample = yield* rows(s.bqClient, "SELECT * FROM shop.classified ORDER BY sku LIMIT 2")
      assert.includeMembers(["electronics", "kitchen", "toys", "garden", "clothing"], sample.map((r) => r.category))
      assert.strictEqual((yield* s.vertex.stats).jobsCreated, 3)
      const reasons = new Map<string, number>()
      for (const f of dead) {
        const r = f.message.replace(/\{.*"status":"(\w+)".*$/, "$1").replace(/got .*$/, "got …")
        reasons.set(r, (reasons.get(r) ?? 0) + 1)
      }
      console.log(
        `vertex pushdown (Pipeline.run): jobs of ${batches.map((b) => b.requestCount).join(" → ")} rows, landed ${batches.map((b) => b.completed).join(" + ")} = ${landed}, dead letter ${dead.length}: ${[...reasons].map(([r, n]) => `${n}× ${r}`).join("; ")}`
      )
    }).pipe(Effect.scoped))

  it.live("a create that made the job but answered 500: the runner finds the job by its batch id and never creates a second", () =>
    Effect.gen(function*() {
      const s = yield* stack({ createSucceedsThenFails: 1 })
      yield* seed(s.bqClient, 40)
      const { summary, batches } = yield* runPushdown(s, classify(s.bq.url), { name: "lost-create", maxAttempts: 1 })
      const stats = yield* s.vertex.stats
      assert.strictEqual(summary.state, "completed")
      assert.deepStrictEqual([summary.succeeded, summary.failed], [40, 0])
      assert.strictEqual(batches.length, 1)
      assert.strictEqual(stats.jobsCreated, 1, "one job at the emulator for one ledger batch")
      const [target] = yield* rows(s.bqClient, "SELECT COUNT(*) AS n, COUNT(DISTINCT sku) AS d FROM shop.classified")
      assert.deepStrictEqual([target!.n, target!.d], [40, 40])
      console.log(
        `vertex pushdown lost create (Pipeline.run): creates sent ${stats.requests["batchPredictionJobs.create"] ?? 0}, lists ${stats.requests["batchPredictionJobs.list"] ?? 0}, jobs created ${stats.jobsCreated}; target 40 keys once`
      )
    }).pipe(Effect.scoped))

  it.live("a job that failed as a whole is sent again over the same rows as the next job, and every key lands", () =>
    Effect.gen(function*() {
      const s = yield* stack({ failJobs: { times: 1, code: "INTERNAL" } })
      yield* seed(s.bqClient, 60)
      const { summary, batches } = yield* runPushdown(s, classify(s.bq.url), { name: "job-failed", maxAttempts: 3 })
      assert.strictEqual(summary.state, "completed")
      assert.deepStrictEqual([summary.rows, summary.succeeded, summary.failed], [60, 60, 0])
      assert.deepStrictEqual(batches.map((b) => [b.requestCount, b.remoteState]), [[60, "JOB_STATE_FAILED"], [60, "JOB_STATE_SUCCEEDED"]])
      const [target] = yield* rows(s.bqClient, "SELECT COUNT(*) AS n, COUNT(DISTINCT sku) AS d FROM shop.classified")
      assert.deepStrictEqual([target!.n, target!.d], [60, 60])
      console.log(`vertex pushdown whole-job failure (Pipeline.run): jobs ${batches.map((b) => `${b.requestCount} rows ${b.remoteState}`).join(", then ")}; 60 keys once`)
    }).pipe(Effect.scoped))

  it.live("text embeddings from a BigQuery query: a `content` column staged, predictions landed as vectors", () =>
    Effect.gen(function*() {
      const s = yield* stack()
      yield* seed(s.bqClient, 30)
      const pd = BigQuery.pushdown({
        source: { query: "SELECT sku, description FROM shop.products WHERE sku <= @n", params: { n: 20 } },
        key: "sku",
        request: Pushdown.embedding({ model: "text-embedding-005", input: "description" }),
        target: { table: "shop.vectors" },
        dataset: "offpeak_jobs",
        connection: { projectId: PROJECT, apiEndpoint: s.bq.url },
        pollInterval: "20 millis"
      })
      const { summary, batches } = yield* runPushdown(s, pd, { name: "embeddings", maxAttempts: 2 })
      assert.strictEqual(summary.state, "completed")
      assert.deepStrictEqual([summary.rows, summary.succeeded, batches.length], [20, 20, 1])
      const got = yield* rows(s.bqClient, "SELECT sku, embedding FROM shop.vectors ORDER BY sku")
      assert.strictEqual(got.length, 20)
      const vector = JSON.parse(got[0]!.embedding) as Array<number>
      assert.strictEqual(vector.length, 768)
      console.log(`vertex pushdown embeddings (Pipeline.run): ${batches.length} job, ${got.length} vectors of ${vector.length}`)
    }).pipe(Effect.scoped))
})

describe("the adapter and the pushdown on their own", () => {
  it.live("after a lost create the job is found by its batch id; staging again and landing again change nothing", () =>
    Effect.gen(function*() {
      const s = yield* stack({ createSucceedsThenFails: 1 })
      yield* seed(s.bqClient, 40)
      const provider = yield* adapter(s.vertex.url)
      const pd = classify(s.bq.url)
      const staged = yield* pd.stage({ runId: "run-2", batchId: "run-2-b00001" })
      const submission: Provider.Table = { _tag: "Table", batchId: "run-2-b00001", runId: "run-2", sealedAt: Date.now(), ...staged }
      // the create goes through, its answer is lost
      const lost = yield* Effect.flip(provider.submit(submission))
      assert.strictEqual(lost.reason._tag, "ServerError")
      // staging again (a resume) is idempotent: the same tables, the same rows
      assert.deepStrictEqual(yield* pd.stage({ runId: "run-2", batchId: "run-2-b00001" }), staged)
      const found = yield* provider.find(submission)
      assert.isTrue(Option.isSome(found))
      // another batch id finds nothing
      assert.isTrue(Option.isNone(yield* provider.find({ ...submission, batchId: "run-2-b00002" })))
      const status = yield* provider.status(Option.getOrThrow(found)).pipe(
        Effect.repeat({ schedule: Schedule.spaced("20 millis"), until: (st) => Provider.isTerminal(st.state) })
      )
      assert.strictEqual(status.state, "completed")
      assert.deepStrictEqual(yield* pd.tally(staged), { succeeded: 40, failed: 0 })
      assert.strictEqual(yield* pd.land(staged, { runId: "run-2", batchId: "run-2-b00001" }), 40)
      yield* pd.land(staged, { runId: "run-2", batchId: "run-2-b00001" })
      const [target] = yield* rows(s.bqClient, "SELECT COUNT(*) AS n, COUNT(DISTINCT sku) AS d FROM shop.classified")
      assert.deepStrictEqual([target!.n, target!.d], [40, 40])
      assert.strictEqual((yield* s.vertex.stats).jobsCreated, 1)
      console.log(`vertex adapter: create answered ${lost.reason._tag}; find adopted ${Option.getOrThrow(found).id}; landed twice, target 40 keys once`)
    }).pipe(Effect.scoped))
})
