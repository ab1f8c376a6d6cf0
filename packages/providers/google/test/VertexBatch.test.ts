/**
 * VertexBatch (on `@google/genai` in Vertex mode and `@google-cloud/storage`)
 * against the Vertex emulator, which reads and writes the BigQuery and Cloud
 * Storage emulators: table jobs (create, find after a lost answer, status,
 * cancel), JSONL batches through Cloud Storage for chat and both kinds of
 * embedding models joined on the key each line carries, line failures,
 * synchronous calls, and what `encode` refuses.
 */
import * as Provider from "@offpeak/core/Provider"
import { Emulator as GcsEmulator } from "@offpeak/io/gcs"
import * as Request from "@offpeak/core/Request"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Option, Result, Schema, Stream } from "effect"
import { PassThroughClient } from "google-auth-library"
import * as fs from "node:fs"
import * as path from "node:path"
import { Engine } from "../../local/index.ts"
import * as GeminiBatch from "../GeminiBatch.ts"
import * as VertexBatch from "../VertexBatch.ts"
import type * as VertexEmulator from "../VertexEmulator.ts"
import { LOCATION, PROJECT, promise, rows, stack, storage, tmpDir } from "./vertexSupport.ts"

const adapter = (s: Effect.Success<ReturnType<typeof stack>>, extra: Partial<VertexBatch.Options> = {}) =>
  VertexBatch.make({
    project: PROJECT,
    location: LOCATION,
    baseURL: s.vertex.url,
    authClient: new PassThroughClient(),
    staging: { bucket: "staging", prefix: "offpeak", storage: s.storage },
    pollInterval: { initial: "20 millis", max: "100 millis" },
    ...extra
  })

/** a BigQuery input table of `n` rows with a `request` column, and the output table's name */
const tableOf = (s: Effect.Success<ReturnType<typeof stack>>, n: number) =>
  Effect.gen(function*() {
    yield* promise(async () => {
      await s.bqClient.createDataset("ds").catch(() => undefined)
      await s.bqClient.query({
        query: `CREATE TABLE ds.in_${n} AS SELECT n AS id, PARSE_JSON(CONCAT('{"contents":[{"role":"user","parts":[{"text":', TO_JSON_STRING(CONCAT('item ', CAST(n AS STRING))), '}]}]}')) AS request FROM UNNEST(GENERATE_ARRAY(1, ${n})) AS n`
      })
    })
    return { input: `bq://${PROJECT}.ds.in_${n}`, output: `bq://${PROJECT}.ds.out_${n}` }
  })

const table = (batchId: string, t: { readonly input: string; readonly output: string }, rows: number): Provider.Table => ({
  _tag: "Table",
  batchId,
  runId: "run-1",
  sealedAt: Date.now(),
  kind: "bigquery",
  model: "gemini-2.5-flash",
  input: t.input,
  output: t.output,
  keyColumns: ["id"],
  rows
})

const untilEnd = (provider: Provider.Service, remote: Provider.RemoteBatch) =>
  provider.status(remote).pipe(Effect.repeat({ schedule: provider.pollSchedule, until: (s) => Provider.isTerminal(s.state) }))

/** writes encoded lines as the runner does and describes them as a `Lines` submission */
const linesOf = (provider: Provider.Service, batchId: string, requests: ReadonlyArray<readonly [Request.Request, string]>): Provider.Lines => {
  const dir = tmpDir("lines")
  const file = path.join(dir, `${batchId}.jsonl`)
  let group = ""
  const lines = requests.map(([r, id]) => {
    const e = provider.encode(r, id)
    if (Result.isFailure(e)) throw new Error(e.failure)
    group = e.success.group
    return e.success.line
  })
  fs.writeFileSync(file, lines.join("\n") + "\n")
  return { _tag: "Lines", batchId, runId: "run-1", sealedAt: Date.now(), group, path: file, count: lines.length, bytes: fs.statSync(file).size }
}

const hexId = (i: number) => i.toString(16).padStart(64, "0")

describe("VertexBatch against the Vertex emulator", () => {
  it.live("table job: created over the staged tables, tagged with the batch id (display name, labels), polled to completed, counts from completionStats; results are the source's to land", () =>
    Effect.gen(function*() {
      const s = yield* stack({ chunkRows: 10, rowsPerSecond: 400, rowFailures: [{ code: "INTERNAL", rate: 0.1 }] })
      const provider = yield* adapter(s)
      assert.deepStrictEqual(provider.tables, ["bigquery"])
      const t = yield* tableOf(s, 40)
      const submission = table("run-1-batch-1", t, 40)
      const remote = yield* provider.submit(submission)
      assert.match(remote.id, new RegExp(`^projects/${PROJECT}/locations/${LOCATION}/batchPredictionJobs/\\d+$`))
      const job = yield* promise(async () => (await (await fetch(`${s.vertex.url}/v1beta1/${remote.id}`)).json()) as any)
      assert.strictEqual(job.displayName, "offpeak run-1-batch-1")
      assert.deepStrictEqual(job.labels, { offpeak_batch: "run-1-batch-1", offpeak_run: "run-1" })
      assert.deepStrictEqual(job.inputConfig, { instancesFormat: "bigquery", bigquerySource: { inputUri: t.input } })
      assert.deepStrictEqual(job.outputConfig, { predictionsFormat: "bigquery", bigqueryDestination: { outputUri: t.output } })
      const states: Array<string> = []
      const status = yield* provider.status(remote).pipe(
        Effect.tap((st) => Effect.sync(() => states.at(-1) !== st.providerState && states.push(st.providerState))),
        Effect.repeat({ schedule: provider.pollSchedule, until: (st) => Provider.isTerminal(st.state) })
      )
      assert.strictEqual(status.state, "completed")
      assert.strictEqual(status.counts.total, 40)
      assert.strictEqual(status.counts.completed + status.counts.failed, 40)
      assert.isAbove(status.counts.failed, 0)
      assert.strictEqual(states.at(-1), "JOB_STATE_SUCCEEDED")
      const out = yield* rows(s.bqClient, "SELECT COUNT(*) AS n FROM ds.out_40")
      assert.deepStrictEqual(out, [{ n: 40 }])
      const results = yield* Effect.exit(Stream.runCollect(provider.results(remote, status)))
      assert.isTrue(Exit.isFailure(results))
      assert.match(String(Exit.isFailure(results) ? results.cause : ""), /Unsupported/)
      console.log(`vertex adapter table job: ${states.join(" → ")}, counts ${JSON.stringify(status.counts)}`)
    }).pipe(Effect.scoped))

  it.live("a create whose answer was lost (500, or a crash before the ledger) is found by its display name: one job, never two", () =>
    Effect.gen(function*() {
      const s = yield* stack({ createSucceedsThenFails: 1 })
      const provider = yield* adapter(s)
      const t = yield* tableOf(s, 5)
      const submission = table("run-1-batch-7", t, 5)
      const error = yield* Effect.flip(provider.submit(submission))
      assert.strictEqual(error.reason._tag, "ServerError")
      const found = yield* provider.find(submission)
      assert.isTrue(Option.isSome(found))
      const status = yield* untilEnd(provider, Option.getOrThrow(found))
      assert.strictEqual(status.state, "completed")
      assert.strictEqual((yield* s.vertex.stats).jobsCreated, 1)
      // another batch id finds nothing
      assert.isTrue(Option.isNone(yield* provider.find(table("run-1-batch-8", t, 5))))
      console.log(`vertex adapter find: submit answered ${error.reason._tag}; found ${Option.getOrThrow(found).id}; jobs created 1`)
    }).pipe(Effect.scoped))

  it.live("cancel, a failed job and an expired one map to cancelled, failed (with its issue) and expired", () =>
    Effect.gen(function*() {
      const s = yield* stack({ chunkRows: 5, rowsPerSecond: 10, failJobs: { times: 1, code: "INVALID_ARGUMENT", message: "The input table has no request column." } })
      const provider = yield* adapter(s)
      const t = yield* tableOf(s, 50)
      const failed = yield* untilEnd(provider, yield* provider.submit(table("b-failed", t, 50)))
      assert.strictEqual(failed.state, "failed")
      assert.deepStrictEqual(failed.issues, [{ code: "INVALID_ARGUMENT", message: "The input table has no request column." }])
      const remote = yield* provider.submit(table("b-cancel", { ...t, output: `bq://${PROJECT}.ds.cancelled` }, 50))
      yield* Effect.sleep(400)
      yield* provider.cancel(remote)
      const cancelling = yield* provider.status(remote)
      // on a loaded machine the emulator may have finished cancelling before this poll
      assert.include(["cancelling", "cancelled"], cancelling.state)
      const cancelled = yield* untilEnd(provider, remote)
      assert.strictEqual(cancelled.state, "cancelled")
      assert.isBelow(cancelled.counts.completed, 50)
      assert.strictEqual(VertexBatch.toStatus({ state: "JOB_STATE_EXPIRED", error: { code: 4, message: "expired" } }).state, "expired")
      assert.strictEqual(VertexBatch.toStatus({ state: "JOB_STATE_QUEUED" }).state, "validating")
      assert.strictEqual(VertexBatch.toStatus({ state: "JOB_STATE_PARTIALLY_SUCCEEDED" }).state, "completed")
      console.log(`vertex adapter states: failed ${JSON.stringify(failed.issues)}, cancelled after ${cancelled.counts.completed}/50`)
    }).pipe(Effect.scoped))

  it.live("Lines through Cloud Storage: a chat batch uploaded, a job over it, answers read from outputInfo.gcsOutputDirectory and joined on the labels; failed lines retryable by code; the input removed", () =>
    Effect.gen(function*() {
      const s = yield* stack({ chunkRows: 9, rowFailures: [{ code: "RESOURCE_EXHAUSTED", rate: 0.1 }, { code: "INVALID_ARGUMENT", rate: 0.05 }] })
      yield* promise(() => s.storage.createBucket("staging"))
      const provider = yield* adapter(s)
      const Label = Schema.Struct({ category: Schema.Literals(["toys", "food", "home"]) })
      const requests = Array.from({ length: 60 }, (_, i) =>
        [Request.chat({ model: "gemini-2.5-flash", system: "Classify.", prompt: `item ${i}`, maxTokens: 100, output: { name: "Label", schema: Label } }), hexId(i)] as const
      )
      const submission = linesOf(provider, "run-1-lines-1", requests)
      assert.strictEqual(submission.group, "generate gemini-2.5-flash")
      const remote = yield* provider.submit(submission)
      assert.strictEqual(remote.meta?.kind, "lines")
      const status = yield* untilEnd(provider, remote)
      assert.strictEqual(status.state, "completed")
      const results = [...yield* Stream.runCollect(provider.results(remote, status))]
      assert.strictEqual(results.length, 60)
      assert.deepStrictEqual(results.map((r) => r.id).sort(), requests.map(([, id]) => id).sort())
      const ok = results.filter((r) => r._tag === "LineSucceeded")
      const bad = results.filter((r) => r._tag === "LineFailed")
      assert.strictEqual(ok.length, status.counts.completed)
      assert.strictEqual(bad.length, status.counts.failed)
      for (const r of ok) {
        const i = requests.findIndex(([, id]) => id === r.id)
        const text = r._tag === "LineSucceeded" && r.response._tag === "ChatResponse" ? r.response.text : ""
        const decoded = provider.decodeOutput({ name: "Label", schema: Label }, text)
        assert.isTrue(Result.isSuccess(decoded))
        const want = Engine.chat({
          model: "gemini-2.5-flash",
          messages: [{ role: "system", content: "Classify." }, { role: "user", content: `item ${i}` }],
          maxTokens: 100,
          jsonSchema: GeminiBatch.responseJsonSchema(Label as never)
        })
        assert.strictEqual(text, want.text)
      }
      const retryable = bad.filter((r) => r._tag === "LineFailed" && r.retryable)
      const final = bad.filter((r) => r._tag === "LineFailed" && !r.retryable)
      assert.isAbove(retryable.length, 0)
      assert.isAbove(final.length, 0)
      assert.isTrue(retryable.every((r) => r._tag === "LineFailed" && r.message.startsWith("RESOURCE_EXHAUSTED (8)")))
      assert.isTrue(final.every((r) => r._tag === "LineFailed" && r.message.startsWith("INVALID_ARGUMENT (3)")))
      const [files] = yield* promise(() => s.storage.bucket("staging").getFiles({ prefix: "offpeak/" }))
      assert.isFalse(files.some((f) => f.name.endsWith("run-1-lines-1.jsonl")), "the uploaded input was removed")
      assert.isTrue(files.every((f) => /-output\/prediction-model-[^/]+\/predictions_\d+\.jsonl$/.test(f.name)))
      // found again after a crash, with what results need
      const found = yield* provider.find(submission)
      assert.deepStrictEqual(Option.getOrThrow(found), remote)
      console.log(`vertex adapter lines (chat): 60 lines → ${ok.length} answers, ${retryable.length} retryable and ${final.length} final failures; outputs ${files.length} objects`)
    }).pipe(Effect.scoped))

  it.live("Lines for embeddings: text-embedding-005 (instances joined on their content through the batch file, dimensions as modelParameters) and gemini-embedding-001 (a key per line)", () =>
    Effect.gen(function*() {
      const s = yield* stack({ chunkRows: 4 })
      yield* promise(() => s.storage.createBucket("staging"))
      const provider = yield* adapter(s)
      for (const [model, dims] of [["text-embedding-005", 24], ["gemini-embedding-001", 12]] as const) {
        const requests = Array.from({ length: 10 }, (_, i) => [Request.embedding({ model, input: `document ${i}`, dimensions: dims }), hexId(100 + i)] as const)
        const submission = linesOf(provider, `run-1-${model}`, requests)
        const remote = yield* provider.submit(submission)
        const status = yield* untilEnd(provider, remote)
        const results = [...yield* Stream.runCollect(provider.results(remote, status))]
        assert.strictEqual(results.length, 10)
        for (const r of results) {
          assert.strictEqual(r._tag, "LineSucceeded")
          const i = requests.findIndex(([, id]) => id === r.id)
          const want = Engine.embed({ model, input: `document ${i}`, dimensions: dims })
          if (r._tag === "LineSucceeded" && r.response._tag === "EmbeddingResponse") assert.deepStrictEqual(Array.from(r.response.vector), Array.from(Float32Array.from(want.vector)))
        }
        console.log(`vertex adapter lines (${model}): 10 vectors of ${dims} joined on ${model.startsWith("text") ? "content" : "key"}`)
      }
    }).pipe(Effect.scoped))

  it.live("a spoiled download of the answers fails the results stream (the client checks the bytes' hashes) instead of joining wrong answers; reading again succeeds", () =>
    Effect.gen(function*() {
      const gcsDir = tmpDir("gcs-spoiled")
      const s = yield* stack({}, { gcs: gcsDir })
      yield* promise(() => s.storage.createBucket("staging"))
      const provider = yield* adapter(s)
      const requests = Array.from({ length: 5 }, (_, i) => [Request.chat({ model: "gemini-2.5-flash", prompt: `item ${i}` }), hexId(200 + i)] as const)
      const remote = yield* provider.submit(linesOf(provider, "run-1-spoiled", requests))
      const status = yield* untilEnd(provider, remote)
      // the answers are read through a Cloud Storage emulator on the same folder whose first download is spoiled
      const spoiled = yield* GcsEmulator.serve({ dir: gcsDir, corruptDownloads: 1 })
      const reader = yield* adapter(s, { staging: { bucket: "staging", prefix: "offpeak", storage: storage(spoiled.url) } })
      const first = yield* Effect.exit(Stream.runCollect(reader.results(remote, status)))
      assert.isTrue(Exit.isFailure(first))
      const again = [...yield* Stream.runCollect(reader.results(remote, status))]
      assert.strictEqual(again.length, 5)
      console.log(`vertex adapter spoiled download: first read ${Exit.isFailure(first) ? String(first.cause).split("\n")[0] : "ok"}; second read ${again.length} answers`)
    }).pipe(Effect.scoped))

  it.live("sync: generateContent, embedContent and predict through the SDK under the adaptive limit; a 429 is retried, a 400 is the line's final failure", () =>
    Effect.gen(function*() {
      const options: VertexEmulator.Options = { endpointFaults: [{ endpoint: "models.generateContent", status: 429, times: 1, retryAfter: 0 }] }
      const s = yield* stack(options)
      const provider = yield* adapter(s)
      const chat = provider.encode(Request.chat({ model: "gemini-2.5-flash", prompt: "a wooden toy" }), hexId(1))
      const r = yield* provider.sync(Result.getOrThrow(chat).line)
      assert.strictEqual(r._tag, "LineSucceeded")
      if (r._tag === "LineSucceeded" && r.response._tag === "ChatResponse") {
        assert.strictEqual(r.response.text, Engine.chat({ model: "gemini-2.5-flash", messages: [{ role: "user", content: "a wooden toy" }] }).text)
      }
      assert.strictEqual((yield* s.vertex.stats).requests["models.generateContent"], 2)
      for (const [model, dims] of [["text-embedding-005", 8], ["gemini-embedding-2", 6]] as const) {
        const e = yield* provider.sync(Result.getOrThrow(provider.encode(Request.embedding({ model, input: "hello", dimensions: dims }), hexId(2))).line)
        assert.strictEqual(e._tag === "LineSucceeded" && e.response._tag === "EmbeddingResponse" ? e.response.vector.length : -1, dims)
      }
      const bad = yield* provider.sync(JSON.stringify({ model: "gemini-2.5-flash", request: { contents: [{ role: "user", parts: [{ text: "x" }] }], generationConfig: { maxOutputTokens: 0 }, labels: { offpeak_key: "k1" } } }))
      assert.strictEqual(bad._tag, "LineFailed")
      if (bad._tag === "LineFailed") {
        assert.strictEqual(bad.id, "k1")
        assert.isFalse(bad.retryable)
        assert.strictEqual(bad.status, 400)
      }
      console.log(`vertex adapter sync: chat after one 429, embeddings 8 and 6 dims, maxOutputTokens 0 → ${bad._tag === "LineFailed" ? bad.message : ""}`)
    }).pipe(Effect.scoped))

  it("encode: chat lines carry the custom id in labels and no model; embeddings by model kind; what Vertex cannot take is refused with the reason", () => {
    const line = VertexBatch.encode(Request.chat({ model: "gemini-2.5-flash", system: "s", prompt: "p", maxTokens: 5 }), hexId(7))
    const parsed = JSON.parse(Result.getOrThrow(line).line)
    assert.deepStrictEqual(parsed.request.labels, { offpeak_key: hexId(7).slice(0, 63), offpeak_key_2: hexId(7).slice(63) })
    assert.isUndefined(parsed.request.model)
    assert.deepStrictEqual(JSON.parse(VertexBatch.inputLine(Result.getOrThrow(line).line)), { request: parsed.request })
    const text = JSON.parse(Result.getOrThrow(VertexBatch.encode(Request.embedding({ model: "text-embedding-005", input: "x", dimensions: 3 }), "k")).line)
    assert.deepStrictEqual(text, { model: "text-embedding-005", key: "k", content: "x", dimensions: 3 })
    assert.strictEqual(Result.getOrThrow(VertexBatch.encode(Request.embedding({ model: "text-embedding-005", input: "x", dimensions: 3 }), "k")).group, "embed text-embedding-005 3")
    const refusals = [
      VertexBatch.encode(Request.chat({ model: "text-embedding-005", prompt: "p" }), "k"),
      VertexBatch.encode(Request.embedding({ model: "gemini-2.5-flash", input: "x" }), "k"),
      VertexBatch.encode(Request.chat({ model: "gemini-2.5-flash", prompt: "p" }), "Not A Label"),
      VertexBatch.encode(Request.chat({ model: "gemini-2.5-flash", system: "only system" , messages: [] }), "k")
    ]
    assert.isTrue(refusals.every(Result.isFailure))
    console.log(`vertex adapter encode refusals:\n  ${refusals.map((r) => (Result.isFailure(r) ? r.failure : "")).join("\n  ")}`)
  })
})
