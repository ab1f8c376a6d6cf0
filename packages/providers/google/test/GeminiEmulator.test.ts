/**
 * The Gemini emulator driven by the official `@google/genai` SDK through whole
 * lifecycles: inline and file batches (resumable upload, responses file
 * download), embedding batches, cancel, expiry, per-line and whole-batch
 * failures, endpoint faults, limits, state on disk across a restart, and the
 * synchronous endpoints. Raw HTTP reads check what the SDK does not show
 * (`BATCH_STATE_*`, int64-string counts, `error.code`).
 */
import { ApiError, GoogleGenAI } from "@google/genai"
import type { BatchJob, InlinedRequest } from "@google/genai"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Scope } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { Engine } from "../../local/index.ts"
import * as GeminiEmulator from "../GeminiEmulator.ts"

const tmpDir = () => fs.mkdtempSync(path.join(os.tmpdir(), "offpeak-gemini-emu-"))

const sdk = (url: string) => new GoogleGenAI({ apiKey: "test", vertexai: false, httpOptions: { baseUrl: url, apiVersion: "v1beta" } })

const promise = <A>(f: () => Promise<A>) => Effect.promise(f)

/** the error a call rejects with */
const failure = <A>(f: () => Promise<A>) => Effect.flip(Effect.tryPromise({ try: f, catch: (e) => e as ApiError }))

/** raw JSON of a GET, as the API sends it */
const raw = (url: string, pathname: string) =>
  promise(async () => (await (await fetch(`${url}/v1beta/${pathname}`, { headers: { "x-goog-api-key": "test" } })).json()) as any)

const TERMINAL = new Set(["JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED", "JOB_STATE_EXPIRED"])

/** polls a batch with the SDK until it ends; the states seen on the way */
const untilDone = (ai: GoogleGenAI, name: string) =>
  promise(async () => {
    const seen: Array<string> = []
    for (let i = 0; i < 2_000; i++) {
      const job = await ai.batches.get({ name })
      if (seen.at(-1) !== job.state) seen.push(job.state!)
      if (TERMINAL.has(job.state!)) return { job, seen }
      await new Promise((r) => setTimeout(r, 10))
    }
    throw new Error(`batch ${name} did not end`)
  })

const chatRequest = (text: string, key: string, extra: Partial<InlinedRequest> = {}): InlinedRequest => ({
  contents: [{ role: "user", parts: [{ text }] }],
  metadata: { key },
  config: { maxOutputTokens: 200 },
  ...extra
})

const LABEL_SCHEMA = {
  type: "object",
  properties: { category: { type: "string", enum: ["billing", "bug", "other"] }, urgent: { type: "boolean" } },
  required: ["category", "urgent"]
}

const writeJsonl = (file: string, lines: ReadonlyArray<unknown>) => fs.writeFileSync(file, lines.map((l) => JSON.stringify(l)).join("\n") + "\n")

describe("GeminiEmulator through @google/genai", () => {
  it.live("inline batch: PENDING → RUNNING → SUCCEEDED, keyed inline responses in shuffled order, engine answers, int64-string stats", () =>
    Effect.gen(function*() {
      const emulator = yield* GeminiEmulator.serve({ linesPerSecond: 100, pendingMs: 1_000 })
      const ai = sdk(emulator.url)
      const texts = Array.from({ length: 40 }, (_, i) => `ticket ${i}: I was charged twice on my invoice`)
      const src = texts.map((t, i) =>
        chatRequest(t, `k${i}`, i % 2 === 0 ? { config: { responseMimeType: "application/json", responseJsonSchema: LABEL_SCHEMA } } : {})
      )
      const created = yield* promise(() => ai.batches.create({ model: "gemini-2.5-flash", src, config: { displayName: "inline-1" } }))
      assert.strictEqual(created.state, "JOB_STATE_PENDING")
      assert.match(created.name!, /^batches\/[a-z0-9]+$/)
      assert.strictEqual(created.displayName, "inline-1")
      const { job, seen } = yield* untilDone(ai, created.name!)
      assert.deepStrictEqual(seen, ["JOB_STATE_PENDING", "JOB_STATE_RUNNING", "JOB_STATE_SUCCEEDED"])
      const responses = job.dest!.inlinedResponses!
      assert.strictEqual(responses.length, 40)
      const keys = responses.map((r) => r.metadata!.key!)
      assert.deepStrictEqual([...keys].sort(), texts.map((_, i) => `k${i}`).sort())
      assert.isTrue(keys.some((k, i) => k !== `k${i}`), "results come back out of input order")
      for (const r of responses) {
        const i = Number(r.metadata!.key!.slice(1))
        const structured = i % 2 === 0
        const want = Engine.chat({
          model: "gemini-2.5-flash",
          messages: [{ role: "user", content: texts[i]! }],
          maxTokens: structured ? undefined : 200,
          jsonSchema: structured ? LABEL_SCHEMA : undefined
        })
        // inline responses are plain objects (no `text` getter)
        const text = r.response!.candidates![0]!.content!.parts![0]!.text!
        assert.strictEqual(text, want.text)
        assert.strictEqual(r.response!.usageMetadata!.candidatesTokenCount, want.usage.outputTokens)
        if (structured) assert.strictEqual(JSON.parse(text).category, "billing")
      }
      // what the SDK does not show: the API's own state names and int64 strings
      const op = yield* raw(emulator.url, created.name!)
      assert.strictEqual(op.metadata.state, "BATCH_STATE_SUCCEEDED")
      assert.strictEqual(op.done, true)
      assert.deepStrictEqual(op.metadata.batchStats, { requestCount: "40", successfulRequestCount: "40" })
      assert.strictEqual(op.metadata["@type"], "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatch")
      // the list leaves inline responses out
      const listed = yield* raw(emulator.url, "batches")
      assert.strictEqual(listed.operations.length, 1)
      assert.isUndefined(listed.operations[0].metadata.output)
      console.log(`gemini emulator inline: states ${seen.join(" → ")}, 40 keyed responses, first keys ${keys.slice(0, 5).join(",")}`)
    }).pipe(Effect.scoped))

  it.live("file batch: resumable upload in 8 MiB chunks, batch over the file, responses file downloaded by key; files get, list, delete", () =>
    Effect.gen(function*() {
      const dir = tmpDir()
      const emulator = yield* GeminiEmulator.serve({ linesPerSecond: 200_000 })
      const ai = sdk(emulator.url)
      // ~9.5 MB: two chunks (upload, then upload + finalize)
      const n = 4_000
      const pad = "x".repeat(2_300)
      const input = path.join(dir, "in.jsonl")
      writeJsonl(input, Array.from({ length: n }, (_, i) => ({ key: `f${i}`, request: { contents: [{ parts: [{ text: `row ${i} ${pad}` }], role: "user" }] } })))
      const size = fs.statSync(input).size
      assert.isAbove(size, 8 * 1024 * 1024)
      const file = yield* promise(() => ai.files.upload({ file: input, config: { mimeType: "jsonl", displayName: "in" } }))
      assert.match(file.name!, /^files\//)
      assert.strictEqual(file.sizeBytes, String(size))
      assert.strictEqual(file.state, "ACTIVE")
      const got = yield* promise(() => ai.files.get({ name: file.name! }))
      assert.strictEqual(got.displayName, "in")
      const created = yield* promise(() => ai.batches.create({ model: "gemini-2.5-flash", src: file.name!, config: { displayName: "file-1" } }))
      const { job } = yield* untilDone(ai, created.name!)
      assert.strictEqual(job.state, "JOB_STATE_SUCCEEDED")
      const out = job.dest!.fileName!
      assert.strictEqual(out, `files/batch-${created.name!.slice("batches/".length)}`)
      const downloaded = path.join(dir, "out.jsonl")
      yield* promise(() => ai.files.download({ file: out, downloadPath: downloaded }))
      const lines = fs.readFileSync(downloaded, "utf8").split("\n").filter((l) => l.length > 0).map((l) => JSON.parse(l))
      assert.strictEqual(lines.length, n)
      assert.strictEqual(new Set(lines.map((l) => l.key)).size, n)
      assert.isTrue(lines.some((l, i) => l.key !== `f${i}`), "shuffled")
      const line = lines.find((l) => l.key === "f7")!
      assert.strictEqual(
        line.response.candidates[0].content.parts[0].text,
        Engine.chat({ model: "gemini-2.5-flash", messages: [{ role: "user", content: `row 7 ${pad}` }] }).text
      )
      const op = yield* raw(emulator.url, created.name!)
      assert.deepStrictEqual(op.metadata.inputConfig, { fileName: file.name })
      assert.deepStrictEqual(op.metadata.output, { responsesFile: out })
      const listed = yield* promise(() => ai.files.list({ config: { pageSize: 10 } }))
      assert.deepStrictEqual(listed.page.map((f) => f.name).sort(), [file.name!, out].sort())
      yield* promise(() => ai.files.delete({ name: file.name! }))
      const gone = yield* failure(() => ai.files.get({ name: file.name! }))
      assert.strictEqual(gone.status, 403)
      const stats = yield* emulator.stats
      assert.strictEqual(stats.filesUploaded, 1)
      assert.strictEqual(stats.linesProcessed, n)
      console.log(`gemini emulator file: ${(size / 1024 / 1024).toFixed(1)} MiB uploaded in 2 chunks, ${lines.length} keyed lines downloaded`)
    }).pipe(Effect.scoped))

  it.live("embedding batch over a file (asyncBatchEmbedContent): hashed n-gram vectors keyed, outputDimensionality kept", () =>
    Effect.gen(function*() {
      const dir = tmpDir()
      const emulator = yield* GeminiEmulator.serve({})
      const ai = sdk(emulator.url)
      const input = path.join(dir, "emb.jsonl")
      const texts = ["refund my invoice", "the app crashes", "hello"]
      writeJsonl(input, texts.map((t, i) => ({
        key: `e${i}`,
        request: { model: "models/gemini-embedding-001", content: { parts: [{ text: t }] }, outputDimensionality: 16 }
      })))
      const file = yield* promise(() => ai.files.upload({ file: input, config: { mimeType: "jsonl" } }))
      const created = yield* promise(() =>
        ai.batches.createEmbeddings({ model: "gemini-embedding-001", src: { fileName: file.name! }, config: { displayName: "emb" } })
      )
      const { job } = yield* untilDone(ai, created.name!)
      assert.strictEqual(job.state, "JOB_STATE_SUCCEEDED")
      const downloaded = path.join(dir, "out.jsonl")
      yield* promise(() => ai.files.download({ file: job.dest!.fileName!, downloadPath: downloaded }))
      const lines = fs.readFileSync(downloaded, "utf8").split("\n").filter((l) => l.length > 0).map((l) => JSON.parse(l))
      assert.strictEqual(lines.length, 3)
      for (const line of lines) {
        const i = Number(line.key.slice(1))
        assert.deepStrictEqual(line.response.embedding.values, Engine.embed({ model: "gemini-embedding-001", input: texts[i]!, dimensions: 16 }).vector)
      }
      const op = yield* raw(emulator.url, created.name!)
      assert.strictEqual(op.metadata["@type"], "type.googleapis.com/google.ai.generativelanguage.v1main.EmbedContentBatch")
      // inline embedding requests (the SDK sends no metadata with them): the responses carry none either
      const inline = yield* promise(() =>
        ai.batches.createEmbeddings({
          model: "gemini-embedding-001",
          src: { inlinedRequests: { contents: texts, config: { outputDimensionality: 16 } } },
          config: { displayName: "emb-inline" }
        })
      )
      const inlineDone = yield* untilDone(ai, inline.name!)
      const embeddings = inlineDone.job.dest!.inlinedEmbedContentResponses!
      assert.strictEqual(embeddings.length, 3)
      assert.isTrue(embeddings.every((e) => e.metadata === undefined))
      const vectors = embeddings.map((e) => JSON.stringify(e.response!.embedding!.values))
      assert.deepStrictEqual(
        [...vectors].sort(),
        texts.map((t) => JSON.stringify(Engine.embed({ model: "gemini-embedding-001", input: t, dimensions: 16 }).vector)).sort()
      )
    }).pipe(Effect.scoped))

  it.live("cancel: the batch ends CANCELLED (error.code 1) with the responses of the requests done before it", () =>
    Effect.gen(function*() {
      const emulator = yield* GeminiEmulator.serve({ linesPerSecond: 100, pendingMs: 0 })
      const ai = sdk(emulator.url)
      const src = Array.from({ length: 200 }, (_, i) => chatRequest(`request ${i}`, `c${i}`))
      const created = yield* promise(() => ai.batches.create({ model: "gemini-2.5-flash", src, config: { displayName: "to-cancel" } }))
      yield* Effect.sleep("300 millis")
      const running = yield* raw(emulator.url, created.name!)
      assert.strictEqual(running.metadata.state, "BATCH_STATE_RUNNING")
      assert.isAbove(Number(running.metadata.batchStats.successfulRequestCount), 0)
      yield* promise(() => ai.batches.cancel({ name: created.name! }))
      const { job } = yield* untilDone(ai, created.name!)
      assert.strictEqual(job.state, "JOB_STATE_CANCELLED")
      const op = yield* raw(emulator.url, created.name!)
      assert.strictEqual(op.metadata.state, "BATCH_STATE_CANCELLED")
      assert.deepStrictEqual(op.error, { code: 1, message: "CANCELLED" })
      const done = job.dest?.inlinedResponses ?? []
      assert.isAbove(done.length, 10)
      assert.isBelow(done.length, 200)
      assert.strictEqual(Number(op.metadata.batchStats.pendingRequestCount), 200 - done.length)
      // a finished batch cannot be cancelled again
      const again = yield* failure(() => ai.batches.cancel({ name: created.name! }))
      assert.instanceOf(again, ApiError)
      assert.strictEqual(again.status, 400)
      console.log(`gemini emulator cancel: ${done.length}/200 answered before the cancel, state ${op.metadata.state}, error ${JSON.stringify(op.error)}`)
    }).pipe(Effect.scoped))

  it.live("expiry: a batch not done within the window ends EXPIRED with the responses done by then", () =>
    Effect.gen(function*() {
      const emulator = yield* GeminiEmulator.serve({ linesPerSecond: 200, pendingMs: 0, completionWindowMs: 250 })
      const ai = sdk(emulator.url)
      const src = Array.from({ length: 200 }, (_, i) => chatRequest(`request ${i}`, `x${i}`))
      const created = yield* promise(() => ai.batches.create({ model: "gemini-2.5-flash", src, config: { displayName: "slow" } }))
      const { job } = yield* untilDone(ai, created.name!)
      assert.strictEqual(job.state, "JOB_STATE_EXPIRED")
      const n = job.dest?.inlinedResponses?.length ?? 0
      assert.approximately(n, 50, 3)
      const op = yield* raw(emulator.url, created.name!)
      assert.strictEqual(op.metadata.state, "BATCH_STATE_EXPIRED")
      console.log(`gemini emulator expiry: ${n}/200 responses before the 250 ms window closed`)
    }).pipe(Effect.scoped))

  it.live("per-line failures are google.rpc.Status errors with gRPC codes; every line failed still ends SUCCEEDED", () =>
    Effect.gen(function*() {
      const emulator = yield* GeminiEmulator.serve({
        lineFailures: [{ code: "RESOURCE_EXHAUSTED", rate: 0.2 }, { code: "INVALID_ARGUMENT", rate: 0.1 }]
      })
      const ai = sdk(emulator.url)
      const src = Array.from({ length: 300 }, (_, i) => chatRequest(`request ${i}`, `l${i}`))
      const created = yield* promise(() => ai.batches.create({ model: "gemini-2.5-flash", src, config: { displayName: "faulty" } }))
      const { job } = yield* untilDone(ai, created.name!)
      const responses = job.dest!.inlinedResponses!
      const errors = responses.filter((r) => r.error !== undefined)
      const codes = new Map<number, number>()
      for (const r of errors) codes.set((r.error as any).code, (codes.get((r.error as any).code) ?? 0) + 1)
      assert.deepStrictEqual([...codes.keys()].sort(), [3, 8])
      assert.approximately(codes.get(8)!, 60, 25)
      assert.approximately(codes.get(3)!, 30, 18)
      const op = yield* raw(emulator.url, created.name!)
      assert.strictEqual(op.metadata.batchStats.failedRequestCount, String(errors.length))
      assert.strictEqual(op.metadata.batchStats.successfulRequestCount, String(300 - errors.length))

      const allFail = yield* GeminiEmulator.serve({ lineFailures: [{ code: "INTERNAL", rate: 1 }] })
      const ai2 = sdk(allFail.url)
      const c2 = yield* promise(() => ai2.batches.create({ model: "gemini-2.5-flash", src: src.slice(0, 20), config: { displayName: "all-fail" } }))
      const done = yield* untilDone(ai2, c2.name!)
      assert.strictEqual(done.job.state, "JOB_STATE_SUCCEEDED")
      assert.isTrue(done.job.dest!.inlinedResponses!.every((r) => (r.error as any)?.code === 13 && r.response === undefined))
      console.log(`gemini emulator line failures: ${errors.length}/300 failed (${[...codes].map(([c, k]) => `code ${c}: ${k}`).join(", ")}); 20/20 failed still SUCCEEDED`)
    }).pipe(Effect.scoped))

  it.live("whole-batch failure (failBatches) and an unreadable input file end FAILED with the error", () =>
    Effect.gen(function*() {
      const dir = tmpDir()
      const emulator = yield* GeminiEmulator.serve({ failBatches: { times: 1, code: "RESOURCE_EXHAUSTED", message: "Enqueued token limit reached" } })
      const ai = sdk(emulator.url)
      const first = yield* promise(() => ai.batches.create({ model: "gemini-2.5-flash", src: [chatRequest("a", "a")], config: { displayName: "f1" } }))
      const failed = yield* untilDone(ai, first.name!)
      assert.strictEqual(failed.job.state, "JOB_STATE_FAILED")
      assert.deepStrictEqual((yield* raw(emulator.url, first.name!)).error, { code: 8, message: "Enqueued token limit reached" })
      const bad = path.join(dir, "bad.jsonl")
      fs.writeFileSync(bad, `{"key":"ok","request":{"contents":[{"parts":[{"text":"hi"}]}]}}\nnot json\n`)
      const file = yield* promise(() => ai.files.upload({ file: bad, config: { mimeType: "jsonl" } }))
      const second = yield* promise(() => ai.batches.create({ model: "gemini-2.5-flash", src: file.name!, config: { displayName: "f2" } }))
      assert.strictEqual((yield* untilDone(ai, second.name!)).job.state, "JOB_STATE_FAILED")
      const op = yield* raw(emulator.url, second.name!)
      assert.strictEqual(op.error.code, 3)
      assert.match(op.error.message, /line 2/)
    }).pipe(Effect.scoped))

  it.live("endpoint faults: 429 with a RetryInfo retryDelay, a refused create creates nothing, a create that answers 500 or late still exists", () =>
    Effect.gen(function*() {
      const emulator = yield* GeminiEmulator.serve({
        endpointFaults: [
          { endpoint: "batches.get", status: 429, times: 1, retryAfter: 2 },
          { endpoint: "batches.create", status: 503, times: 1 }
        ],
        createSucceedsThenFails: 1,
        createLatency: { ms: 150 }
      })
      const ai = sdk(emulator.url)
      const refused = yield* failure(() => ai.batches.create({ model: "m", src: [chatRequest("a", "a")], config: { displayName: "r" } }))
      assert.strictEqual(refused.status, 503)
      assert.strictEqual((yield* raw(emulator.url, "batches")).operations.length, 0)
      const started = Date.now()
      const lost = yield* failure(() => ai.batches.create({ model: "m", src: [chatRequest("a", "a")], config: { displayName: "lost" } }))
      assert.isAtLeast(Date.now() - started, 140)
      assert.strictEqual(lost.status, 500)
      const listed = yield* promise(() => ai.batches.list({ config: { pageSize: 10 } }))
      assert.deepStrictEqual(listed.page.map((b: BatchJob) => b.displayName), ["lost"])
      const limited = yield* failure(() => ai.batches.get({ name: listed.page[0]!.name! }))
      const error = limited
      assert.strictEqual(error.status, 429)
      const body = JSON.parse(error.message)
      assert.strictEqual(body.error.status, "RESOURCE_EXHAUSTED")
      assert.deepStrictEqual(body.error.details, [{ "@type": "type.googleapis.com/google.rpc.RetryInfo", retryDelay: "2s" }])
      assert.strictEqual((yield* promise(() => ai.batches.get({ name: listed.page[0]!.name! }))).displayName, "lost")
      // propagation delay: a batch answers 404 for a while after its create (the list already shows it)
      const delayed = yield* GeminiEmulator.serve({ notFoundAfterCreateMs: 200 })
      const ai2 = sdk(delayed.url)
      const fresh = yield* promise(() => ai2.batches.create({ model: "m", src: [chatRequest("a", "a")], config: { displayName: "fresh" } }))
      assert.strictEqual((yield* failure(() => ai2.batches.get({ name: fresh.name! }))).status, 404)
      yield* Effect.sleep("250 millis")
      assert.strictEqual((yield* promise(() => ai2.batches.get({ name: fresh.name! }))).displayName, "fresh")
    }).pipe(Effect.scoped))

  it.live("limits: an inline create over maxInlineBytes and a file over maxFileBytes are refused with 400", () =>
    Effect.gen(function*() {
      const dir = tmpDir()
      const emulator = yield* GeminiEmulator.serve({ maxInlineBytes: 10_000, maxFileBytes: 5_000 })
      const ai = sdk(emulator.url)
      const src = Array.from({ length: 100 }, (_, i) => chatRequest(`request number ${i} with some words`, `k${i}`))
      const tooBig = yield* failure(() => ai.batches.create({ model: "m", src, config: { displayName: "big" } }))
      assert.strictEqual(tooBig.status, 400)
      assert.match(tooBig.message, /Request payload size exceeds the limit: 10000 bytes/)
      const file = path.join(dir, "big.jsonl")
      fs.writeFileSync(file, "x".repeat(6_000))
      const refused = yield* failure(() => ai.files.upload({ file, config: { mimeType: "jsonl" } }))
      assert.strictEqual(refused.status, 400)
      assert.match(refused.message, /too large/)
      assert.strictEqual((yield* emulator.stats).batchesCreated, 0)
    }).pipe(Effect.scoped))

  it.live("an unknown field in an inline request refuses the whole create, naming where", () =>
    Effect.gen(function*() {
      const emulator = yield* GeminiEmulator.serve({})
      const body = {
        batch: {
          displayName: "x",
          inputConfig: { requests: { requests: [{ request: { contents: [{ parts: [{ text: "a" }] }] } }, { request: { contents: [], bogus: 1 } }] } }
        }
      }
      const answer = yield* promise(() =>
        fetch(`${emulator.url}/v1beta/models/gemini-2.5-flash:batchGenerateContent`, {
          method: "POST",
          headers: { "x-goog-api-key": "test", "content-type": "application/json" },
          body: JSON.stringify(body)
        })
      )
      assert.strictEqual(answer.status, 400)
      const error = (yield* promise(() => answer.json())) as any
      assert.strictEqual(error.error.status, "INVALID_ARGUMENT")
      assert.strictEqual(error.error.message, `Invalid JSON payload received. Unknown name "bogus" at 'batch.input_config.requests.requests[1].request': Cannot find field.`)
      assert.strictEqual((yield* emulator.stats).batchesCreated, 0)
    }).pipe(Effect.scoped))

  it.live("state on disk: a batch created before a restart runs on and its results are read after it", () =>
    Effect.gen(function*() {
      const dir = tmpDir()
      const first = yield* Scope.make()
      const before = yield* GeminiEmulator.serve({ dir, linesPerSecond: 400, pendingMs: 0 }).pipe(Scope.provide(first))
      const ai = sdk(before.url)
      const src = Array.from({ length: 100 }, (_, i) => chatRequest(`request ${i}`, `r${i}`))
      const created = yield* promise(() => ai.batches.create({ model: "gemini-2.5-flash", src, config: { displayName: "durable" } }))
      yield* Scope.close(first, Exit.void)
      const after = yield* GeminiEmulator.serve({ dir })
      const ai2 = sdk(after.url)
      const { job } = yield* untilDone(ai2, created.name!)
      assert.strictEqual(job.state, "JOB_STATE_SUCCEEDED")
      assert.strictEqual(job.dest!.inlinedResponses!.length, 100)
      assert.strictEqual((yield* after.stats).batchesCreated, 1)
    }).pipe(Effect.scoped))

  it.live("batches list pages newest first; delete hides a batch", () =>
    Effect.gen(function*() {
      const emulator = yield* GeminiEmulator.serve({})
      const ai = sdk(emulator.url)
      for (let i = 0; i < 5; i++) {
        yield* promise(() => ai.batches.create({ model: "m", src: [chatRequest("a", "a")], config: { displayName: `b${i}` } }))
      }
      const pager = yield* promise(() => ai.batches.list({ config: { pageSize: 2 } }))
      const names: Array<string> = []
      for (const job of (yield* promise(async () => {
        const all: Array<BatchJob> = []
        for await (const j of pager) all.push(j)
        return all
      }))) names.push(job.displayName!)
      assert.deepStrictEqual(names, ["b4", "b3", "b2", "b1", "b0"])
      const page = yield* raw(emulator.url, "batches?pageSize=2")
      assert.strictEqual(page.operations.length, 2)
      assert.isString(page.nextPageToken)
      yield* promise(() => ai.batches.delete({ name: page.operations[0].name }))
      assert.strictEqual((yield* raw(emulator.url, "batches")).operations.length, 4)
    }).pipe(Effect.scoped))

  it.live("synchronous generateContent (structured) and embedContent; a 429 fault on generateContent; no key is 403", () =>
    Effect.gen(function*() {
      const emulator = yield* GeminiEmulator.serve({ endpointFaults: [{ endpoint: "models.generateContent", status: 429, times: 1, retryAfter: 0.05, retryAfterHeader: true }] })
      const ai = sdk(emulator.url)
      const limited = yield* failure(() => ai.models.generateContent({ model: "gemini-2.5-flash", contents: "x" }))
      assert.strictEqual(limited.status, 429)
      const answer = yield* promise(() =>
        ai.models.generateContent({
          model: "gemini-2.5-flash",
          contents: "The app crashes with a bug when I log in",
          config: { systemInstruction: "Label it.", responseMimeType: "application/json", responseJsonSchema: LABEL_SCHEMA }
        })
      )
      const want = Engine.chat({
        model: "gemini-2.5-flash",
        messages: [{ role: "system", content: "Label it." }, { role: "user", content: "The app crashes with a bug when I log in" }],
        jsonSchema: LABEL_SCHEMA
      })
      assert.strictEqual(answer.text, want.text)
      assert.strictEqual(JSON.parse(answer.text!).category, "bug")
      const embedded = yield* promise(() => ai.models.embedContent({ model: "gemini-embedding-001", contents: "hello there", config: { outputDimensionality: 32 } }))
      assert.deepStrictEqual(embedded.embeddings![0]!.values, Engine.embed({ model: "gemini-embedding-001", input: "hello there", dimensions: 32 }).vector)
      const anonymous = yield* promise(() => fetch(`${emulator.url}/v1beta/batches`))
      assert.strictEqual(anonymous.status, 403)
      assert.strictEqual(((yield* promise(() => anonymous.json())) as any).error.status, "PERMISSION_DENIED")
    }).pipe(Effect.scoped))
})
