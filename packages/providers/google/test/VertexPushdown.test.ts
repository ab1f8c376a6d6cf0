/**
 * The pushdown end to end: `BigQuery.pushdown` stages tables in the BigQuery
 * emulator, `VertexBatch` runs jobs over them on the Vertex emulator (which
 * reads and writes the BigQuery emulator), the pushdown tallies and lands the
 * answers, retries the failed keys as smaller jobs and hands the rest to the
 * dead letter — no row through this process.
 */
import * as Provider from "@offpeak/core/Provider"
import { BigQuery, Pushdown } from "@offpeak/sources/bigquery"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Option, Schema } from "effect"
import { PassThroughClient } from "google-auth-library"
import * as VertexBatch from "../VertexBatch.ts"
import { drive } from "./pushdownDriver.ts"
import { LOCATION, PROJECT, promise, rows, stack } from "./vertexSupport.ts"

const Classification = Schema.Struct({
  category: Schema.Literals(["electronics", "kitchen", "toys", "garden", "clothing"]),
  confidence: Schema.Number,
  summary: Schema.String
})

const seed = (bq: ReturnType<typeof import("./vertexSupport.ts").bigquery>, n: number) =>
  promise(async () => {
    await bq.createDataset("shop")
    await bq.query({
      query: `CREATE TABLE shop.products AS SELECT n AS sku, CONCAT('Product ', CAST(n AS STRING)) AS title,
        CONCAT('A ', IF(MOD(n, 3) = 0, 'stainless steel kettle', IF(MOD(n, 3) = 1, 'wooden toy train', 'garden hose')), ', model ', CAST(n AS STRING)) AS description
        FROM UNNEST(GENERATE_ARRAY(1, ${n})) AS n`
    })
  })

const pushdownOf = (url: string) =>
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
    connection: { projectId: PROJECT, apiEndpoint: url }
  })

describe("Vertex batch prediction from BigQuery, pushed down", () => {
  it.live("failed rows are retried as smaller jobs over their keys only, the rest dead-lettered; every key lands once", () =>
    Effect.gen(function*() {
      const s = yield* stack({ chunkRows: 100, rowFailures: [{ code: "RESOURCE_EXHAUSTED", rate: 0.08 }], malformedAnswers: 0.04 })
      yield* seed(s.bqClient, 500)
      const provider = yield* VertexBatch.make({
        project: PROJECT,
        location: LOCATION,
        baseURL: s.vertex.url,
        authClient: new PassThroughClient(),
        pollInterval: { initial: "20 millis", max: "200 millis" }
      })
      const { jobs, deadLetter, landed } = yield* drive(provider, pushdownOf(s.bq.url), { runId: "run-1", maxAttempts: 3 })
      assert.strictEqual(jobs.length, 3)
      assert.strictEqual(jobs[0]!.rows, 500)
      assert.isBelow(jobs[1]!.rows, jobs[0]!.rows)
      assert.strictEqual(jobs[1]!.rows, jobs[0]!.tally.failed)
      assert.strictEqual(jobs[2]!.rows, jobs[1]!.tally.failed)
      for (const j of jobs) assert.strictEqual(j.status.state, "completed")
      assert.strictEqual(deadLetter.length, jobs[2]!.tally.failed)
      const [target] = yield* rows(s.bqClient, "SELECT COUNT(*) AS n, COUNT(DISTINCT sku) AS d FROM shop.classified")
      assert.strictEqual(target!.n, landed)
      assert.strictEqual(target!.d, landed)
      assert.strictEqual(landed + deadLetter.length, 500)
      const dead = new Set(deadLetter.map((f) => Number(f.key)))
      const inTarget = yield* rows(s.bqClient, "SELECT sku FROM shop.classified")
      assert.isTrue(inTarget.every((r) => !dead.has(r.sku)), "no dead-lettered key is in the target")
      const sample = yield* rows(s.bqClient, "SELECT * FROM shop.classified ORDER BY sku LIMIT 2")
      assert.includeMembers(["electronics", "kitchen", "toys", "garden", "clothing"], sample.map((r) => r.category))
      assert.strictEqual((yield* s.vertex.stats).jobsCreated, 3)
      const reasons = new Map<string, number>()
      for (const f of deadLetter) {
        const r = f.message.replace(/\{.*"status":"(\w+)".*$/, "$1").replace(/got .*$/, "got …")
        reasons.set(r, (reasons.get(r) ?? 0) + 1)
      }
      console.log(`vertex pushdown: jobs of ${jobs.map((j) => j.rows).join(" → ")} rows, landed ${jobs.map((j) => j.landed).join(" + ")} = ${landed}, dead letter ${deadLetter.length}: ${[...reasons].map(([r, n]) => `${n}× ${r}`).join("; ")}`)
    }).pipe(Effect.scoped))

  it.live("a crash between the create and the ledger write: the job is found by its batch id and adopted, never created twice; staging and landing again change nothing", () =>
    Effect.gen(function*() {
      const s = yield* stack({ createSucceedsThenFails: 1 })
      yield* seed(s.bqClient, 40)
      const provider = yield* VertexBatch.make({ project: PROJECT, location: LOCATION, baseURL: s.vertex.url, authClient: new PassThroughClient(), pollInterval: { initial: "20 millis", max: "100 millis" } })
      const pd = pushdownOf(s.bq.url)
      const staged = yield* pd.stage({ runId: "run-2", batchId: "run-2-1" })
      const submission: Provider.Table = { _tag: "Table", batchId: "run-2-1", runId: "run-2", sealedAt: Date.now(), ...staged }
      // the create goes through, its answer is lost; the process dies
      const lost = yield* Effect.flip(provider.submit(submission))
      assert.strictEqual(lost.reason._tag, "ServerError")
      // the run resumes: it stages again (idempotent) and looks for the job before creating one
      const again = yield* pd.stage({ runId: "run-2", batchId: "run-2-1" })
      assert.deepStrictEqual(again, staged)
      const { jobs } = yield* drive(provider, pd, { runId: "run-2", maxAttempts: 1 })
      assert.isTrue(jobs[0]!.found)
      assert.strictEqual((yield* s.vertex.stats).jobsCreated, 1)
      assert.strictEqual(yield* pd.land(staged, { runId: "run-2", batchId: "run-2-1" }), 40)
      const [target] = yield* rows(s.bqClient, "SELECT COUNT(*) AS n, COUNT(DISTINCT sku) AS d FROM shop.classified")
      assert.deepStrictEqual([target!.n, target!.d], [40, 40])
      assert.isTrue(Option.isSome(yield* provider.find(submission)))
      console.log(`vertex pushdown crash: create answered ${lost.reason._tag}; resumed run found ${jobs[0]!.remote}; jobs created 1; target 40 keys once`)
    }).pipe(Effect.scoped))

  it.live("text embeddings from a BigQuery column: a `content` column staged, predictions landed as vectors", () =>
    Effect.gen(function*() {
      const s = yield* stack()
      yield* seed(s.bqClient, 30)
      const provider = yield* VertexBatch.make({ project: PROJECT, location: LOCATION, baseURL: s.vertex.url, authClient: new PassThroughClient(), pollInterval: { initial: "20 millis", max: "100 millis" } })
      const pd = BigQuery.pushdown({
        source: { query: "SELECT sku, description FROM shop.products WHERE sku <= @n", params: { n: 20 } },
        key: "sku",
        request: Pushdown.embedding({ model: "text-embedding-005", input: "description" }),
        target: { table: "shop.vectors" },
        dataset: "offpeak_jobs",
        connection: { projectId: PROJECT, apiEndpoint: s.bq.url }
      })
      const { landed, jobs } = yield* drive(provider, pd, { runId: "emb", maxAttempts: 2 })
      assert.strictEqual(landed, 20)
      const got = yield* rows(s.bqClient, "SELECT sku, embedding FROM shop.vectors ORDER BY sku LIMIT 1")
      const vector = JSON.parse(got[0]!.embedding) as Array<number>
      assert.strictEqual(vector.length, 768)
      console.log(`vertex pushdown embeddings: ${jobs.length} job, ${landed} vectors of ${vector.length}`)
    }).pipe(Effect.scoped))
})
