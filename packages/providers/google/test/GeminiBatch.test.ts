/**
 * The Gemini batch adapter against the emulator, through the official
 * `@google/genai`: encoding (and that the SDK sends a batch line byte for
 * byte), inline and file submission, results joined on the key, every
 * status, per-line error kinds, "succeeded" with every line failed, cancel,
 * expiry, find after a create that answered 500, embeddings, errors, the
 * synchronous adapter under 429s, and the CLI plugin.
 */
import { GoogleGenAI } from "@google/genai"
import { assert, describe, it } from "@effect/vitest"
import * as AdaptiveLimit from "@offpeak/core/AdaptiveLimit"
import * as Fingerprint from "@offpeak/core/Fingerprint"
import * as Provider from "@offpeak/core/Provider"
import * as ProviderError from "@offpeak/core/ProviderError"
import * as Request from "@offpeak/core/Request"
import { ConfigProvider, Effect, Layer, Option, Redacted, Result, Schema, Stream } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { Engine } from "../../local/index.ts"
import { Files } from "../../local/Kit.ts"
import { plugin } from "../gemini.ts"
import * as GeminiBatch from "../GeminiBatch.ts"
import * as GeminiEmulator from "../GeminiEmulator.ts"
import * as Answer from "../internal/geminiEmulatorAnswer.ts"
import * as Wire from "../internal/geminiWire.ts"

const MODEL = "gemini-2.5-flash"

const Label = Schema.Struct({
  category: Schema.Literals(["billing", "bug", "other"]),
  urgent: Schema.Boolean,
  note: Schema.optionalKey(Schema.String)
}).annotate({ title: "Label" })

const chat = (prompt: string, maxTokens = 300) =>
  Request.chat({ model: MODEL, system: "Label the ticket.", prompt, maxTokens, output: { name: "label", schema: Label } })

const adapter = (url: string, options: Partial<GeminiBatch.Options> = {}) =>
  GeminiBatch.make({
    apiKey: Redacted.make("test"),
    baseURL: url,
    pollInterval: { initial: "10 millis", max: "50 millis" },
    ...options
  })

const tmpDir = () => fs.mkdtempSync(path.join(os.tmpdir(), "offpeak-gemini-"))

/** writes a batch file of requests (as the pipeline does) and returns the submission */
const lines = (requests: ReadonlyArray<Request.Request>, provider: Provider.Service, batchId = "run-b00001") => {
  const encoded = requests.map((r) => Result.getOrThrow(provider.encode(r, Fingerprint.of(r))))
  const file = path.join(tmpDir(), `${batchId}.jsonl`)
  fs.writeFileSync(file, encoded.map((e) => e.line).join("\n") + "\n")
  return {
    _tag: "Lines",
    batchId,
    runId: "run",
    sealedAt: Date.now(),
    group: encoded[0]!.group,
    path: file,
    count: encoded.length,
    bytes: encoded.reduce((s, e) => s + e.bytes, 0)
  } satisfies Provider.Lines
}

const untilTerminal = (provider: Provider.Service, remote: Provider.RemoteBatch) =>
  provider.status(remote).pipe(Effect.repeat({ schedule: provider.pollSchedule, until: (s) => Provider.isTerminal(s.state) }))

const collect = (provider: Provider.Service, remote: Provider.RemoteBatch, status: Provider.Status) =>
  Stream.runCollect(provider.results(remote, status)).pipe(Effect.map((c) => Array.from(c)))

const tickets = (n: number) =>
  Array.from({ length: n }, (_, i) => chat(`ticket ${i}: ${["I was charged twice, refund the billing", "the app crashes, a bug", "hello"][i % 3]}`))

/** what the emulator answers for a request, computed from the exact batch line the adapter sends */
const expected = (request: Request.Chat) => {
  const line = GeminiBatch.batchLine(request, "x")
  const answer = Answer.generate(line.request, (line.request as Wire.GenerateContentRequest).model, "r")
  if ("code" in answer) throw new Error(answer.message)
  return ((answer.body.candidates as Array<any>)[0].content.parts[0].text) as string
}

describe("GeminiBatch encoding", () => {
  it("a chat request becomes one inlined GenerateContentRequest: systemInstruction, user/model turns, generationConfig", () => {
    const request = Request.chat({
      model: MODEL,
      system: "Be terse.",
      messages: [{ role: "user", content: "Hi" }, { role: "assistant", content: "Hello!" }],
      prompt: "Classify this.",
      maxTokens: 77,
      temperature: 0.2,
      topP: 0.9,
      stop: ["END"],
      seed: 42
    })
    assert.deepStrictEqual(GeminiBatch.batchLine(request, "abc"), {
      request: {
        model: "models/gemini-2.5-flash",
        contents: [
          { parts: [{ text: "Hi" }], role: "user" },
          { parts: [{ text: "Hello!" }], role: "model" },
          { parts: [{ text: "Classify this." }], role: "user" }
        ],
        systemInstruction: { parts: [{ text: "Be terse." }] },
        generationConfig: { temperature: 0.2, topP: 0.9, maxOutputTokens: 77, stopSequences: ["END"], seed: 42 }
      },
      metadata: { key: "abc" }
    })
    const encoded = Result.getOrThrow(GeminiBatch.encode(request, "abc"))
    assert.strictEqual(encoded.group, "generate gemini-2.5-flash")
    assert.strictEqual(encoded.bytes, Buffer.byteLength(encoded.line) + 1)
    // only system messages: refused at encode time
    const refused = GeminiBatch.encode(Request.chat({ model: MODEL, messages: [{ role: "system", content: "s" }] }), "x")
    assert.isTrue(Result.isFailure(refused))
  })

  it("structured output: responseMimeType application/json and responseJsonSchema (const → enum, no allOf or pattern); decodeOutput uses the codec", () => {
    const line = GeminiBatch.batchLine(chat("I was charged twice"), "id")
    const config = (line.request as Wire.GenerateContentRequest).generationConfig
    assert.strictEqual(config.responseMimeType, "application/json")
    const schema = config.responseJsonSchema as any
    assert.strictEqual(schema.type, "object")
    assert.deepStrictEqual(schema.properties.category.enum, ["billing", "bug", "other"])
    const Tagged = Schema.Struct({ kind: Schema.Literal("x"), code: Schema.String.check(Schema.isPattern(/^[a-z]+$/)) })
    const tagged = GeminiBatch.responseJsonSchema(Tagged) as any
    assert.deepStrictEqual(tagged.properties.kind.enum, ["x"])
    assert.notInclude(JSON.stringify(tagged), "\"const\"")
    assert.notInclude(JSON.stringify(tagged), "\"pattern\"")
    // the codec still checks what the schema sent leaves out
    assert.isTrue(Result.isFailure(GeminiBatch.decodeOutput({ name: "t", schema: Tagged }, `{"kind":"x","code":"ABC"}`)))
    assert.deepStrictEqual(Result.getOrThrow(GeminiBatch.decodeOutput({ name: "t", schema: Tagged }, `{"kind":"x","code":"abc"}`)), { kind: "x", code: "abc" })
    assert.deepStrictEqual(
      Result.getOrThrow(GeminiBatch.decodeOutput({ name: "label", schema: Label }, `{"category":"bug","urgent":true,"note":null}`)),
      { category: "bug", urgent: true }
    )
    assert.match(Result.getFailure(GeminiBatch.decodeOutput({ name: "label", schema: Label }, "not json")).pipe(Option.getOrThrow), /not JSON/)
  })

  it("an embedding request: model, content and outputDimensionality; group embed <model>; the file line of a batch line", () => {
    const request = Request.embedding({ model: "gemini-embedding-001", input: "hello", dimensions: 256 })
    const line = GeminiBatch.batchLine(request, "k1")
    assert.deepStrictEqual(line.request, { model: "models/gemini-embedding-001", content: { parts: [{ text: "hello" }] }, outputDimensionality: 256 })
    assert.strictEqual(Result.getOrThrow(GeminiBatch.encode(request, "k1")).group, "embed gemini-embedding-001")
    const text = JSON.stringify(line)
    const file = Wire.toFileLine(text)
    assert.deepStrictEqual(JSON.parse(file), { key: "k1", request: line.request })
    assert.strictEqual(Buffer.byteLength(text) - Buffer.byteLength(file), Wire.FILE_LINE_SAVING)
    assert.strictEqual(Wire.FILE_LINE_SAVING, 13)
    // a line in another shape is parsed and rebuilt
    assert.deepStrictEqual(JSON.parse(Wire.toFileLine(`{"metadata":{"key":"z"},"request":{"a":1}}`)), { key: "z", request: { a: 1 } })
  })

  it("an inline create body (Files.joinedLines, Anthropic's create body too) is streamed from the batch file: every line once, in order, across 1 MB reads", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "offpeak-inline-"))
    try {
      // lines from 2 bytes to 700 KB (several straddle the 1 MB reads), blank lines, and no newline at the end
      const lines: Array<unknown> = []
      let text = ""
      for (let i = 0; i < 400; i++) {
        const value = { i, text: "é€😀x".repeat(i % 37 === 0 ? 50_000 : i) }
        lines.push(value)
        text += JSON.stringify(value) + (i % 50 === 0 ? "\n\n" : "\n")
      }
      const file = path.join(dir, "b.jsonl")
      fs.writeFileSync(file, text.slice(0, -1))
      const chunks: Array<Uint8Array> = []
      for await (const chunk of Files.joinedLines(file, `{"requests":[`, "]}")) chunks.push(chunk)
      const body = Buffer.concat(chunks).toString("utf8")
      assert.deepStrictEqual(JSON.parse(body), { requests: lines })
      assert.isAbove(fs.statSync(file).size, 3 << 20)
      console.log(`inline body: ${lines.length} lines, ${fs.statSync(file).size} bytes of file in ${chunks.length} chunks`)
      // an empty file is an empty list
      fs.writeFileSync(file, "")
      const empty: Array<Uint8Array> = []
      for await (const chunk of Files.joinedLines(file, "[", "]")) empty.push(chunk)
      assert.strictEqual(Buffer.concat(empty).toString(), "[]")
    } finally {
      fs.rmSync(dir, { recursive: true, force: true })
    }
  })

  it("the SDK sends an inlined request back as exactly its batch line, so an inline body is the batch's bytes plus a constant", () =>
    Effect.runPromise(Effect.gen(function*() {
      const requests = [...tickets(3), Request.chat({ model: MODEL, prompt: "plain", temperature: 0 })]
      const encoded = requests.map((r, i) => Result.getOrThrow(GeminiBatch.encode(r, `id${i}`)).line)
      let sent = ""
      const ai = new GoogleGenAI({
        apiKey: "k",
        vertexai: false,
        httpOptions: {
          baseUrl: "http://127.0.0.1:9",
          fetch: async (_input, init) => {
            sent = String(init?.body)
            return new Response(JSON.stringify({ name: "batches/x", metadata: { state: "BATCH_STATE_PENDING" } }), {
              headers: { "content-type": "application/json" }
            })
          }
        }
      })
      yield* Effect.promise(() =>
        ai.batches.create({ model: MODEL, src: encoded.map((l) => GeminiBatch.inlinedRequest(JSON.parse(l))), config: { displayName: "offpeak run-b00001" } })
      )
      const body = JSON.parse(sent)
      assert.deepStrictEqual(body.batch.inputConfig.requests.requests.map((r: unknown) => JSON.stringify(r)), encoded)
      const lineBytes = encoded.reduce((s, l) => s + Buffer.byteLength(l) + 1, 0)
      console.log(`gemini inline body: ${Buffer.byteLength(sent)} bytes for ${lineBytes} bytes of batch lines (+${Buffer.byteLength(sent) - lineBytes})`)
      assert.isBelow(Buffer.byteLength(sent) - lineBytes, 256)
    })))
})

describe("GeminiBatch against the emulator", () => {
  it.live("inline batch: submit, poll to completed, results joined on the key in another order, answers equal the engine's", () =>
    Effect.gen(function*() {
      const emulator = yield* GeminiEmulator.serve({ linesPerSecond: 2_000 })
      const provider = yield* adapter(emulator.url)
      const requests = tickets(30)
      const submission = lines(requests, provider)
      const remote = yield* provider.submit(submission)
      assert.match(remote.id, /^batches\//)
      const status = yield* untilTerminal(provider, remote)
      assert.strictEqual(status.state, "completed")
      assert.strictEqual(status.providerState, "BATCH_STATE_SUCCEEDED")
      assert.deepStrictEqual(status.counts, { total: 30, completed: 30, failed: 0 })
      const results = yield* collect(provider, remote, status)
      assert.strictEqual(results.length, 30)
      const byId = new Map(requests.map((r) => [Fingerprint.of(r), r as Request.Chat]))
      assert.isTrue(results.some((r, i) => r.id !== Fingerprint.of(requests[i]!)), "results come back in another order")
      for (const r of results) {
        assert.strictEqual(r._tag, "LineSucceeded")
        if (r._tag !== "LineSucceeded" || r.response._tag !== "ChatResponse") continue
        const request = byId.get(r.id)!
        assert.strictEqual(r.response.text, expected(request))
        assert.strictEqual(r.response.finishReason, "stop")
        assert.isAbove(r.response.usage.inputTokens, 0)
        const decoded = Result.getOrThrow(provider.decodeOutput(request.output!, r.response.text)) as { category: string }
        if (request.messages[1]!.content.includes("billing")) assert.strictEqual(decoded.category, "billing")
      }
      const stats = yield* emulator.stats
      assert.deepStrictEqual([stats.inlineBatches, stats.filesUploaded], [1, 0])
    }).pipe(Effect.scoped))

  it.live("a batch over the inline limit goes as a file (Files API upload); results from the responses file; the input file is deleted after", () =>
    Effect.gen(function*() {
      const emulator = yield* GeminiEmulator.serve({ linesPerSecond: 50_000 })
      const provider = yield* adapter(emulator.url, { inlineMaxBytes: 2_000 })
      const requests = tickets(200)
      const submission = lines(requests, provider, "run-b00002")
      assert.isAbove(submission.bytes, 2_000)
      const remote = yield* provider.submit(submission)
      assert.match(remote.meta!.inputFile!, /^files\//)
      const status = yield* untilTerminal(provider, remote)
      const results = yield* collect(provider, remote, status)
      assert.strictEqual(results.length, 200)
      assert.strictEqual(new Set(results.map((r) => r.id)).size, 200)
      const byId = new Map(requests.map((r) => [Fingerprint.of(r), r as Request.Chat]))
      for (const r of results) {
        if (r._tag === "LineSucceeded" && r.response._tag === "ChatResponse") assert.strictEqual(r.response.text, expected(byId.get(r.id)!))
        else assert.fail(`line ${r.id} failed`)
      }
      const stats = yield* emulator.stats
      assert.deepStrictEqual([stats.inlineBatches, stats.filesUploaded], [0, 1])
      // the uploaded input is gone, the responses file stays (a resumed run may read it again)
      const files = (yield* Effect.promise(async () =>
        (await (await fetch(`${emulator.url}/v1beta/files`, { headers: { "x-goog-api-key": "k" } })).json()) as any
      )).files.map((f: any) => f.name)
      assert.deepStrictEqual(files, [`files/batch-${remote.id.slice("batches/".length)}`])
      // reading the results again works (a resume after a crash mid-download)
      assert.strictEqual((yield* collect(provider, remote, status)).length, 200)
    }).pipe(Effect.scoped))

  it.live("embeddings go through the batch embedding endpoint as a file; vectors are the engine's float32 values", () =>
    Effect.gen(function*() {
      const emulator = yield* GeminiEmulator.serve({})
      const provider = yield* adapter(emulator.url)
      const texts = ["refund my invoice", "the app crashes", "hello", "dark mode please"]
      const requests = texts.map((input) => Request.embedding({ model: "gemini-embedding-001", input, dimensions: 64 }))
      const remote = yield* provider.submit(lines(requests, provider))
      const status = yield* untilTerminal(provider, remote)
      assert.strictEqual(status.state, "completed")
      const results = yield* collect(provider, remote, status)
      assert.strictEqual(results.length, 4)
      for (const r of results) {
        if (r._tag !== "LineSucceeded" || r.response._tag !== "EmbeddingResponse") return assert.fail("not an embedding")
        const input = (requests.find((q) => Fingerprint.of(q) === r.id) as Request.Embedding).input
        assert.deepStrictEqual(Array.from(r.response.vector), Engine.embed({ model: "gemini-embedding-001", input, dimensions: 64 }).vector)
        assert.strictEqual(r.response.usage.inputTokens, Engine.countTokens(input))
      }
      assert.strictEqual((yield* emulator.stats).filesUploaded, 1)
    }).pipe(Effect.scoped))

  it.live("per-line errors: RESOURCE_EXHAUSTED and INTERNAL retryable, INVALID_ARGUMENT final; succeeded with every line failed → every line failed", () =>
    Effect.gen(function*() {
      const emulator = yield* GeminiEmulator.serve({
        lineFailures: [{ code: "RESOURCE_EXHAUSTED", rate: 0.2 }, { code: "INTERNAL", rate: 0.1 }, { code: "INVALID_ARGUMENT", rate: 0.1 }]
      })
      const provider = yield* adapter(emulator.url)
      const remote = yield* provider.submit(lines(tickets(200), provider))
      const status = yield* untilTerminal(provider, remote)
      assert.strictEqual(status.state, "completed")
      const results = yield* collect(provider, remote, status)
      const failed = results.filter((r) => r._tag === "LineFailed")
      assert.strictEqual(status.counts.failed, failed.length)
      const byCode = new Map<string, { retryable: boolean; n: number; status: number | undefined }>()
      for (const f of failed) {
        if (f._tag !== "LineFailed") continue
        const code = f.message.split(" ")[0]!
        byCode.set(code, { retryable: f.retryable, status: f.status, n: (byCode.get(code)?.n ?? 0) + 1 })
        assert.strictEqual(f.kind, "provider_error")
      }
      assert.deepStrictEqual(byCode.get("RESOURCE_EXHAUSTED")?.retryable, true)
      assert.deepStrictEqual(byCode.get("RESOURCE_EXHAUSTED")?.status, 429)
      assert.deepStrictEqual(byCode.get("INTERNAL")?.retryable, true)
      assert.deepStrictEqual(byCode.get("INVALID_ARGUMENT")?.retryable, false)
      assert.deepStrictEqual(byCode.get("INVALID_ARGUMENT")?.status, 400)

      const allFail = yield* GeminiEmulator.serve({ lineFailures: [{ code: "INVALID_ARGUMENT", rate: 1 }] })
      const p2 = yield* adapter(allFail.url)
      const r2 = yield* p2.submit(lines(tickets(10), p2))
      const s2 = yield* untilTerminal(p2, r2)
      assert.strictEqual(s2.providerState, "BATCH_STATE_SUCCEEDED")
      assert.deepStrictEqual(s2.counts, { total: 10, completed: 0, failed: 10 })
      const all = yield* collect(p2, r2, s2)
      assert.strictEqual(all.length, 10)
      assert.isTrue(all.every((r) => r._tag === "LineFailed" && !r.retryable))
      console.log(`gemini line errors: ${failed.length}/200 failed: ${[...byCode].map(([c, v]) => `${c} ${v.n} (${v.retryable ? "retryable" : "final"})`).join(", ")}; all-failed SUCCEEDED batch → 10/10 LineFailed`)
    }).pipe(Effect.scoped))

  it.live("a whole-batch failure is failed with the error as its issue; cancel ends cancelled with partial results; expiry expired with partial results", () =>
    Effect.gen(function*() {
      const failing = yield* GeminiEmulator.serve({ failBatches: { code: "RESOURCE_EXHAUSTED", message: "Enqueued token limit reached for gemini-2.5-flash" } })
      const p1 = yield* adapter(failing.url)
      const r1 = yield* p1.submit(lines(tickets(5), p1))
      const s1 = yield* untilTerminal(p1, r1)
      assert.strictEqual(s1.state, "failed")
      assert.deepStrictEqual(s1.issues, [{ code: "RESOURCE_EXHAUSTED", message: "Enqueued token limit reached for gemini-2.5-flash" }])

      const slow = yield* GeminiEmulator.serve({ linesPerSecond: 100, pendingMs: 0 })
      const p2 = yield* adapter(slow.url)
      const r2 = yield* p2.submit(lines(tickets(100), p2))
      yield* Effect.sleep("250 millis")
      yield* p2.cancel(r2)
      const s2 = yield* untilTerminal(p2, r2)
      assert.strictEqual(s2.state, "cancelled")
      const partial = yield* collect(p2, r2, s2)
      assert.isAbove(partial.length, 5)
      assert.isBelow(partial.length, 100)

      const expiring = yield* GeminiEmulator.serve({ linesPerSecond: 200, pendingMs: 0, completionWindowMs: 200 })
      const p3 = yield* adapter(expiring.url)
      const r3 = yield* p3.submit(lines(tickets(100), p3))
      const s3 = yield* untilTerminal(p3, r3)
      assert.strictEqual(s3.state, "expired")
      const done = yield* collect(p3, r3, s3)
      assert.approximately(done.length, 40, 3)
      console.log(`gemini cancel: ${partial.length}/100 results before the cancel; expiry: ${done.length}/100 before the 200 ms window`)
    }).pipe(Effect.scoped))

  it.live("find: a create answered 500 (late) exists; find adopts it by display name across list pages; nothing is created twice", () =>
    Effect.gen(function*() {
      const emulator = yield* GeminiEmulator.serve({ createSucceedsThenFails: 1, createLatency: { ms: 100, times: 1 } })
      const provider = yield* adapter(emulator.url)
      const requests = tickets(4)
      const submission = lines(requests, provider, "run-b00042")
      assert.isTrue(Option.isNone(yield* provider.find(submission)))
      const started = Date.now()
      const error = yield* provider.submit(submission).pipe(Effect.flip)
      assert.isAtLeast(Date.now() - started, 90)
      assert.strictEqual(error.reason._tag, "ServerError")
      assert.isTrue(ProviderError.isTransient(error))
      // 120 later batches push it to the second page of the list (100 a page, newest first)
      for (let i = 0; i < 120; i++) {
        yield* provider.submit(lines([Request.chat({ model: MODEL, prompt: `other ${i}` })], provider, `other-b${String(i).padStart(5, "0")}`))
      }
      const found = yield* provider.find(submission)
      assert.isTrue(Option.isSome(found))
      const remote = Option.getOrThrow(found)
      const status = yield* untilTerminal(provider, remote)
      const results = yield* collect(provider, remote, status)
      assert.deepStrictEqual(results.map((r) => r.id).sort(), requests.map((r) => Fingerprint.of(r)).sort())
      assert.strictEqual((yield* emulator.stats).batchesCreated, 121)
      // another batch id is not mistaken for it
      assert.isTrue(Option.isNone(yield* provider.find(lines(requests, provider, "run-b00043"))))
      assert.strictEqual(GeminiBatch.displayNameOf("run-b00042"), "offpeak run-b00042")
      assert.match(GeminiBatch.displayNameOf("x".repeat(200)), /^offpeak #[0-9a-f]{40}$/)
    }).pipe(Effect.scoped))

  it.live("errors: a 429 with a RetryInfo retryDelay is RateLimited with its pause, a 404 NotFound, a transport failure Transport", () =>
    Effect.gen(function*() {
      const emulator = yield* GeminiEmulator.serve({ endpointFaults: [{ endpoint: "batches.get", status: 429, times: 1, retryAfter: 3 }] })
      const provider = yield* adapter(emulator.url)
      const remote = yield* provider.submit(lines(tickets(2), provider))
      const limited = yield* provider.status(remote).pipe(Effect.flip)
      assert.strictEqual(limited.reason._tag, "RateLimited")
      assert.strictEqual((limited.reason as { retryAfterMs?: number }).retryAfterMs, 3_000)
      assert.match(limited.message, /RESOURCE_EXHAUSTED/)
      const missing = yield* provider.status({ id: "batches/nope" }).pipe(Effect.flip)
      assert.strictEqual(missing.reason._tag, "NotFound")
      const down = yield* adapter("http://127.0.0.1:9")
      const transport = yield* down.status({ id: "batches/x" }).pipe(Effect.flip)
      assert.strictEqual(transport.reason._tag, "Transport")
    }).pipe(Effect.scoped))

  it.live("sync: generateContent and embedContent answers as batch lines would be; a 400 is a final line failure", () =>
    Effect.gen(function*() {
      const emulator = yield* GeminiEmulator.serve({})
      const provider = yield* adapter(emulator.url)
      const request = chat("The app crashes with a bug")
      const id = Fingerprint.of(request)
      const answer = yield* provider.sync(Result.getOrThrow(provider.encode(request, id)).line)
      assert.strictEqual(answer._tag, "LineSucceeded")
      if (answer._tag === "LineSucceeded" && answer.response._tag === "ChatResponse") {
        assert.strictEqual(answer.id, id)
        assert.strictEqual(answer.response.text, expected(request as Request.Chat))
        assert.strictEqual((Result.getOrThrow(provider.decodeOutput(request.output!, answer.response.text)) as any).category, "bug")
      }
      const embedding = Request.embedding({ model: "gemini-embedding-001", input: "hello there", dimensions: 8 })
      const vector = yield* provider.sync(Result.getOrThrow(provider.encode(embedding, "e1")).line)
      if (vector._tag !== "LineSucceeded" || vector.response._tag !== "EmbeddingResponse") return assert.fail("no embedding")
      assert.deepStrictEqual(Array.from(vector.response.vector), Engine.embed({ model: "gemini-embedding-001", input: "hello there", dimensions: 8 }).vector)
      // maxOutputTokens 0 is refused by the API: a final failure of the line, with its status
      const bad = JSON.stringify({ request: { ...GeminiBatch.batchLine(request, "b").request, generationConfig: { maxOutputTokens: 0 } }, metadata: { key: "b" } })
      const refused = yield* provider.sync(bad)
      assert.strictEqual(refused._tag, "LineFailed")
      if (refused._tag === "LineFailed") {
        assert.strictEqual(refused.id, "b")
        assert.strictEqual(refused.status, 400)
        assert.isFalse(refused.retryable)
        assert.match(refused.message, /^INVALID_ARGUMENT \(3\): .*max_output_tokens/)
      }
    }).pipe(Effect.scoped))

  it.live("sync under 429s: the adaptive limit halves, waits out the RetryInfo retryDelay, retries; past maxRetries the line fails retryable", () =>
    Effect.gen(function*() {
      const emulator = yield* GeminiEmulator.serve({ endpointFaults: [{ endpoint: "models.generateContent", status: 429, times: 3, retryAfter: 0.2 }] })
      const limit = AdaptiveLimit.make({ max: 8 })
      const provider = yield* adapter(emulator.url, { syncLimit: limit })
      const requests = tickets(12)
      const started = Date.now()
      const answers = yield* Effect.forEach(requests, (r) => provider.sync(Result.getOrThrow(provider.encode(r, Fingerprint.of(r))).line), { concurrency: 12 })
      const elapsed = Date.now() - started
      assert.isTrue(answers.every((a) => a._tag === "LineSucceeded"))
      // 8 → 4 on the burst of 429s (one halving a second), then +1 after 4 answers in a row, +1 after 5: not back to 8
      assert.isBelow(limit.current(), 8, "halved for the burst of 429s")
      assert.isAtLeast(limit.current(), 4, "halved once, not per 429")
      assert.isAtLeast(elapsed, 190, "the retryDelay was waited out")

      const always = yield* GeminiEmulator.serve({ endpointFaults: [{ endpoint: "models.generateContent", status: 429, retryAfter: 0.01 }] })
      const p2 = yield* adapter(always.url, { maxRetries: 1 })
      const failed = yield* p2.sync(Result.getOrThrow(p2.encode(requests[0]!, "z")).line)
      assert.strictEqual(failed._tag, "LineFailed")
      if (failed._tag === "LineFailed") {
        assert.isTrue(failed.retryable)
        assert.strictEqual(failed.status, 429)
        assert.match(failed.message, /^RESOURCE_EXHAUSTED/)
      }
      console.log(`gemini sync under 429s: 12 answers in ${elapsed} ms, limit 8 → ${limit.current()}`)
    }).pipe(Effect.scoped))

  it.live("the CLI plugin runs the emulator in-process without a key; layerConfig reads GEMINI_API_KEY or GOOGLE_API_KEY", () =>
    Effect.gen(function*() {
      assert.strictEqual(plugin.name, "gemini")
      assert.strictEqual(plugin.apiKeyEnv, "GEMINI_API_KEY")
      const saved = { gemini: process.env.GEMINI_API_KEY, google: process.env.GOOGLE_API_KEY }
      delete process.env.GEMINI_API_KEY
      delete process.env.GOOGLE_API_KEY
      const notices: Array<string> = []
      const dir = tmpDir()
      const provider = yield* Effect.gen(function*() {
        return yield* Provider.Provider
      }).pipe(Effect.provide(plugin.layer({ emulatorDir: dir, onNotice: (l) => notices.push(l) }) as Layer.Layer<Provider.Provider>))
      if (saved.gemini !== undefined) process.env.GEMINI_API_KEY = saved.gemini
      if (saved.google !== undefined) process.env.GOOGLE_API_KEY = saved.google
      assert.strictEqual(provider.name, "gemini")
      assert.match(notices[0]!, /no GEMINI_API_KEY: running against the local Gemini emulator at http:\/\/127\.0\.0\.1:\d+/)
      assert.isTrue(fs.existsSync(path.join(dir, "batches")))
      for (const env of [{ GEMINI_API_KEY: "g" }, { GOOGLE_API_KEY: "o" }]) {
        const config = yield* GeminiBatch.layerConfig().pipe(
          Layer.build,
          Effect.provideService(ConfigProvider.ConfigProvider, ConfigProvider.fromEnv({ env })),
          Effect.as("built")
        )
        assert.strictEqual(config, "built")
      }
      const missing = yield* GeminiBatch.layerConfig().pipe(
        Layer.build,
        Effect.provideService(ConfigProvider.ConfigProvider, ConfigProvider.fromEnv({ env: {} })),
        Effect.flip
      )
      assert.strictEqual(missing._tag, "ConfigError")
    }).pipe(Effect.scoped))
})
