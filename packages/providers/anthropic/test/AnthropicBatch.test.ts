/**
 * The Anthropic Message Batches adapter against the emulator, through the
 * official SDK: encoding, submit/find (also after a simulated crash),
 * every status, every kind of result line, cancel, errors, sync.
 */
import Anthropic from "@anthropic-ai/sdk"
import type { MessageBatch } from "@anthropic-ai/sdk/resources/messages/batches"
import type { Message } from "@anthropic-ai/sdk/resources/messages/messages"
import { assert, describe, it } from "@effect/vitest"
import * as Fingerprint from "@offpeak/core/Fingerprint"
import * as Provider from "@offpeak/core/Provider"
import * as Request from "@offpeak/core/Request"
import { ConfigProvider, Context, Effect, Layer, Option, Redacted, Result, Schema, Stream } from "effect"
import { AnthropicStructuredOutput } from "effect/ai"
import * as fs from "node:fs"
import * as http from "node:http"
import * as os from "node:os"
import * as path from "node:path"
import * as AnthropicBatch from "../AnthropicBatch.ts"
import * as Emulator from "../emulator/Emulator.ts"
import { plugin } from "../index.ts"
import * as Journal from "../internal/submitJournal.ts"

/** one request through the adapter's synchronous API, encoded as its batch line would be */
const syncOf = (provider: Provider.Service, request: Request.Request, customId: string) =>
  provider.sync(Result.getOrThrow(provider.encode(request, customId)).line)

const MODEL = "claude-sonnet-4-6"

const Label = Schema.Struct({
  category: Schema.Literals(["billing", "bug", "other"]),
  note: Schema.optionalKey(Schema.String)
}).annotate({ title: "Label" })

const chat = (prompt: string, maxTokens = 300) =>
  Request.chat({ model: MODEL, prompt, maxTokens, output: { name: "label", schema: Label } })

const adapter = (url: string, options: Partial<AnthropicBatch.Options> = {}) =>
  AnthropicBatch.make({
    apiKey: Redacted.make("test"),
    baseURL: url,
    pollInterval: { initial: "10 millis", max: "50 millis" },
    maxRetries: 0,
    ...options
  })

const tmpDir = () => fs.mkdtempSync(path.join(os.tmpdir(), "offpeak-anthropic-"))

/** writes a batch file of requests (as the pipeline does) and returns the submission */
const lines = (requests: ReadonlyArray<Request.Request>, provider: Provider.Service, batchId = "run-b00001", dir = tmpDir()) => {
  const encoded = requests.map((r) => Result.getOrThrow(provider.encode(r, Fingerprint.of(r))))
  const file = path.join(dir, `${batchId}.jsonl`)
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

const sdk = (url: string) => new Anthropic({ apiKey: "test", baseURL: url, maxRetries: 0 })

const batchObject = (
  over: Omit<Partial<MessageBatch>, "request_counts"> & { request_counts?: Partial<MessageBatch["request_counts"]> }
): MessageBatch => ({
  id: "msgbatch_1",
  type: "message_batch",
  archived_at: null,
  cancel_initiated_at: null,
  created_at: "2026-11-01T00:00:00Z",
  ended_at: null,
  expires_at: "2026-11-02T00:00:00Z",
  processing_status: "in_progress",
  results_url: null,
  ...over,
  request_counts: { processing: 0, succeeded: 0, errored: 0, canceled: 0, expired: 0, ...over.request_counts }
})

const message = (over: Partial<Message>): Message => ({
  id: "msg_1",
  type: "message",
  role: "assistant",
  model: MODEL,
  content: [],
  stop_reason: "end_turn",
  stop_sequence: null,
  stop_details: null,
  container: null,
  diagnostics: null,
  usage: { input_tokens: 10, output_tokens: 5, cache_creation_input_tokens: 0, cache_read_input_tokens: 0 } as Message["usage"],
  ...over
})

describe("AnthropicBatch encoding", () => {
  it("translates system, turns, max_tokens, stop sequences; drops seed (and sampling under 2026-10-21)", () => {
    const request = Request.chat({
      model: MODEL,
      system: "Be terse.",
      messages: [{ role: "user", content: "Hi" }, { role: "assistant", content: "Hello!" }],
      prompt: "Classify this.",
      maxTokens: 77,
      temperature: 0.2,
      topP: 0.9,
      stop: ["END", "STOP"],
      seed: 42
    })
    const line = AnthropicBatch.requestLine(request, "abc")
    assert.deepStrictEqual(line, {
      custom_id: "abc",
      params: {
        model: MODEL,
        max_tokens: 77,
        system: "Be terse.",
        messages: [
          { role: "user", content: "Hi" },
          { role: "assistant", content: "Hello!" },
          { role: "user", content: "Classify this." }
        ],
        stop_sequences: ["END", "STOP"]
      }
    })
    // API versions before 2026-10-21 take temperature and top_p
    const legacy = AnthropicBatch.requestLine(request, "abc", { sampling: true })
    assert.strictEqual(legacy.params.temperature, 0.2)
    assert.strictEqual(legacy.params.top_p, 0.9)
    assert.notProperty(legacy.params, "seed")
    // Anthropic requires max_tokens: a default fills it in
    const plain = AnthropicBatch.requestLine(Request.chat({ model: MODEL, prompt: "p" }), "x")
    assert.strictEqual(plain.params.max_tokens, AnthropicBatch.DEFAULT_MAX_TOKENS)
    assert.strictEqual(plain.params.max_tokens, 1024)
    assert.strictEqual(AnthropicBatch.requestLine(Request.chat({ model: MODEL, prompt: "p" }), "x", { defaultMaxTokens: 50 }).params.max_tokens, 50)
    assert.notProperty(plain.params, "system")
    assert.notProperty(plain.params, "stop_sequences")
    // several system messages are text blocks, in order
    const two = AnthropicBatch.requestLine(
      Request.chat({ model: MODEL, messages: [{ role: "system", content: "A" }, { role: "system", content: "B" }, { role: "user", content: "u" }] }),
      "y"
    )
    assert.deepStrictEqual(two.params.system, [{ type: "text", text: "A" }, { type: "text", text: "B" }])
  })

  it("structured output is one forced tool whose input_schema is the schema's Anthropic JSON schema", () => {
    const line = AnthropicBatch.requestLine(chat("I was charged twice"), "id1")
    const { jsonSchema } = AnthropicStructuredOutput.toCodecAnthropic(Label)
    assert.deepStrictEqual(line.params.tools, [{ name: "label", description: "Answer with the label object.", input_schema: jsonSchema as any }])
    assert.deepStrictEqual(line.params.tool_choice, { type: "tool", name: "label" })
    assert.strictEqual((jsonSchema as any).type, "object")
    assert.strictEqual(AnthropicBatch.toolName("my label!"), "my_label_")
    // a schema whose root is not an object is wrapped as { value }, unwrapped on decode
    const Tags = Schema.Array(Schema.String)
    const wrapped = AnthropicBatch.requestLine(Request.chat({ model: MODEL, prompt: "p", output: { name: "tags", schema: Tags } }), "w")
    const schema = (wrapped.params.tools![0] as { input_schema: any }).input_schema
    assert.strictEqual(schema.type, "object")
    assert.deepStrictEqual(schema.required, ["value"])
    assert.strictEqual(schema.properties.value.type, "array")
    assert.deepStrictEqual(Result.getOrThrow(AnthropicBatch.decodeOutput({ name: "tags", schema: Tags }, `{"value":["a","b"]}`)), ["a", "b"])
  })

  it("marks the cached prefix: cache_control on the last block of the first N messages (system counts)", () => {
    const messages: ReadonlyArray<Request.Message> = [
      { role: "system", content: "Long shared instructions." },
      { role: "user", content: "Shared document." },
      { role: "user", content: "The question." }
    ]
    const ephemeral = { type: "ephemeral" } as const
    const one = AnthropicBatch.requestLine(Request.chat({ model: MODEL, messages, cachePrefix: 1 }), "a").params
    assert.deepStrictEqual(one.system, [{ type: "text", text: "Long shared instructions.", cache_control: ephemeral }])
    assert.deepStrictEqual(one.messages, [{ role: "user", content: "Shared document." }, { role: "user", content: "The question." }])
    const two = AnthropicBatch.requestLine(Request.chat({ model: MODEL, messages, cachePrefix: 2 }), "a").params
    assert.strictEqual(two.system, "Long shared instructions.")
    assert.deepStrictEqual(two.messages[0], { role: "user", content: [{ type: "text", text: "Shared document.", cache_control: ephemeral }] })
    assert.deepStrictEqual(two.messages[1], { role: "user", content: "The question." })
    const all = AnthropicBatch.requestLine(Request.chat({ model: MODEL, messages, cachePrefix: 9 }), "a").params
    assert.deepStrictEqual(all.messages[1], { role: "user", content: [{ type: "text", text: "The question.", cache_control: ephemeral }] })
    const none = AnthropicBatch.requestLine(Request.chat({ model: MODEL, messages }), "a").params
    assert.notInclude(JSON.stringify(none), "cache_control")
    // the prefix does not change the fingerprint
    assert.strictEqual(Fingerprint.of(Request.chat({ model: MODEL, messages, cachePrefix: 2 })), Fingerprint.of(Request.chat({ model: MODEL, messages })))
  })

  it("fingerprints are valid custom ids; encode refuses embeddings, bad custom ids and system-only requests; group is the model", () => {
    const requests = [
      chat("a"),
      Request.chat({ model: MODEL, prompt: "b", temperature: 1 }),
      Request.chat({ model: "claude-haiku-4-5", system: "s", prompt: "ü ✓ 🙂" }),
      Request.embedding({ model: "x", input: "y" })
    ]
    for (const r of requests) {
      const id = Fingerprint.of(r)
      assert.strictEqual(id.length, 64)
      assert.match(id, AnthropicBatch.CUSTOM_ID)
    }
    const encoded = Result.getOrThrow(AnthropicBatch.encode(requests[2]!, Fingerprint.of(requests[2]!)))
    assert.strictEqual(encoded.group, "claude-haiku-4-5")
    assert.strictEqual(encoded.bytes, Buffer.byteLength(encoded.line) + 1)
    assert.strictEqual(JSON.parse(encoded.line).custom_id, Fingerprint.of(requests[2]!))
    const embedding = AnthropicBatch.encode(requests[3]!, Fingerprint.of(requests[3]!))
    assert.isTrue(Result.isFailure(embedding))
    assert.match(Result.isFailure(embedding) ? embedding.failure : "", /no embeddings API/)
    const badId = AnthropicBatch.encode(requests[0]!, "not a valid id!")
    assert.match(Result.isFailure(badId) ? badId.failure : "", /\^\[a-zA-Z0-9_-\]\{1,64\}\$/)
    assert.isTrue(Result.isFailure(AnthropicBatch.encode(requests[0]!, "x".repeat(65))))
    const systemOnly = AnthropicBatch.encode({ _tag: "Chat", model: MODEL, messages: [{ role: "system", content: "s" }], params: {} }, "s1")
    assert.match(Result.isFailure(systemOnly) ? systemOnly.failure : "", /at least one user or assistant message/)
  })

  it("maps every processing status to the neutral state; counts from request_counts", () => {
    const running = AnthropicBatch.toStatus(batchObject({ request_counts: { processing: 7 } }))
    assert.deepStrictEqual(running, { state: "running", providerState: "in_progress", counts: { total: 7, completed: 0, failed: 0 }, issues: [] })
    assert.strictEqual(AnthropicBatch.toStatus(batchObject({ processing_status: "canceling", cancel_initiated_at: "x" })).state, "cancelling")
    const ended = (counts: Partial<MessageBatch["request_counts"]>, over: Omit<Partial<MessageBatch>, "request_counts"> = {}) =>
      AnthropicBatch.toStatus(batchObject({ processing_status: "ended", ended_at: "t", results_url: "u", request_counts: counts, ...over }))
    const completed = ended({ succeeded: 5, errored: 2 })
    assert.strictEqual(completed.state, "completed")
    assert.deepStrictEqual(completed.counts, { total: 7, completed: 5, failed: 2 })
    assert.strictEqual(ended({ succeeded: 3, canceled: 4 }, { cancel_initiated_at: "t" }).state, "cancelled")
    // a cancel that came too late to stop anything: every request ran
    assert.strictEqual(ended({ succeeded: 7 }, { cancel_initiated_at: "t" }).state, "completed")
    const expired = ended({ succeeded: 3, expired: 4 })
    assert.strictEqual(expired.state, "expired")
    assert.deepStrictEqual(expired.counts, { total: 7, completed: 3, failed: 4 })
  })

  it("decodes every kind of result line", () => {
    const ok = AnthropicBatch.decodeResult({
      custom_id: "a",
      result: {
        type: "succeeded",
        message: message({
          content: [{ type: "text", text: "Hello ", citations: null }, { type: "text", text: "world", citations: null }],
          usage: { input_tokens: 4, output_tokens: 2, cache_creation_input_tokens: 1, cache_read_input_tokens: 6 } as Message["usage"]
        })
      }
    })
    assert.deepStrictEqual(ok, {
      _tag: "LineSucceeded",
      id: "a",
      response: { _tag: "ChatResponse", text: "Hello world", finishReason: "stop", usage: { inputTokens: 11, outputTokens: 2, cachedInputTokens: 6 } }
    })
    const tool = AnthropicBatch.decodeResult({
      custom_id: "b",
      result: {
        type: "succeeded",
        message: message({ content: [{ type: "tool_use", id: "t", name: "label", input: { category: "bug" }, caller: { type: "direct" } }], stop_reason: "tool_use" })
      }
    })
    assert.deepInclude((tool as any).response, { text: `{"category":"bug"}`, finishReason: "stop" })
    const finish = (stop_reason: Message["stop_reason"]) =>
      (AnthropicBatch.decodeResult({ custom_id: "c", result: { type: "succeeded", message: message({ stop_reason }) } }) as any).response.finishReason
    assert.strictEqual(finish("max_tokens"), "length")
    assert.strictEqual(finish("model_context_window_exceeded"), "length")
    assert.strictEqual(finish("refusal"), "content_filter")
    assert.strictEqual(finish("stop_sequence"), "stop")
    assert.strictEqual(finish("pause_turn"), "other")
    const errored = (type: string) =>
      AnthropicBatch.decodeResult({
        custom_id: "d",
        result: { type: "errored", error: { type: "error", error: { type, message: "nope" } as any, request_id: "req_1" } }
      })
    for (const [type, retryable, status] of [
      ["invalid_request_error", false, 400],
      ["api_error", true, 500],
      ["overloaded_error", true, 529],
      ["rate_limit_error", true, 429],
      ["timeout_error", true, 504],
      ["permission_error", false, 403]
    ] as const) {
      assert.deepInclude(errored(type), { _tag: "LineFailed", id: "d", kind: "provider_error", retryable, status, message: `${type}: nope` }, type)
    }
    assert.deepStrictEqual(AnthropicBatch.decodeResult({ custom_id: "e", result: { type: "canceled" } }), {
      _tag: "LineFailed",
      id: "e",
      kind: "cancelled",
      retryable: true,
      message: "canceled: the batch was canceled before this request was processed"
    })
    assert.deepInclude(AnthropicBatch.decodeResult({ custom_id: "f", result: { type: "expired" } }), { kind: "expired", retryable: true })
    assert.deepInclude(AnthropicBatch.decodeResult({ custom_id: "g", result: { type: "weird" } } as any), { _tag: "LineFailed", retryable: false })
    assert.isUndefined(AnthropicBatch.decodeResult({ result: { type: "expired" } } as any))
  })

  it("decodes structured output with the schema, optional keys sent as null", () => {
    const output = { name: "label", schema: Label }
    assert.deepStrictEqual(Result.getOrThrow(AnthropicBatch.decodeOutput(output, `{"category":"bug","note":null}`)), { category: "bug" })
    const bad = AnthropicBatch.decodeOutput(output, `{"category":"weather","note":null}`)
    assert.match(Result.isFailure(bad) ? bad.failure : "", /does not match label.*category/)
    const notJson = AnthropicBatch.decodeOutput(output, "not json")
    assert.match(Result.isFailure(notJson) ? notJson.failure : "", /the answer is not JSON/)
  })

  it("has the API's limits: 100,000 requests and 256 MB per batch", () => {
    assert.strictEqual(AnthropicBatch.limits.maxRequests, 100_000)
    assert.isAtMost(AnthropicBatch.limits.maxBytes + 14, AnthropicBatch.MAX_BODY_BYTES)
    assert.isAbove(AnthropicBatch.limits.maxBytes, 255_000_000)
  })
})

describe("AnthropicBatch against the emulator", () => {
  it.live("submits (streaming the file), polls to completed, streams succeeded and errored lines once each", () =>
    Effect.gen(function*() {
      const emulator = yield* Emulator.serve({ lineFailures: [{ type: "overloaded_error", rate: 0.2 }, { type: "invalid_request_error", rate: 0.1 }] })
      const provider = yield* adapter(emulator.url)
      const requests = Array.from({ length: 60 }, (_, i) => chat(`I was charged twice, ticket ${i}`))
      const submission = lines(requests, provider)
      const remote = yield* provider.submit(submission)
      assert.match(remote.id, /^msgbatch_/)
      assert.isString(remote.meta?.submittedAt)
      const status = yield* untilTerminal(provider, remote)
      assert.strictEqual(status.state, "completed")
      assert.strictEqual(status.providerState, "ended")
      assert.strictEqual(status.counts.total, 60)
      const results = yield* Stream.runCollect(provider.results(remote, status))
      assert.sameMembers(results.map((r) => r.id), requests.map(Fingerprint.of))
      const ok = results.filter((r) => r._tag === "LineSucceeded")
      const failed = results.filter((r) => r._tag === "LineFailed")
      assert.strictEqual(ok.length, status.counts.completed)
      assert.strictEqual(failed.length, status.counts.failed)
      assert.isAbove(failed.length, 0)
      for (const r of ok) {
        if (r.response._tag !== "ChatResponse") continue
        const decoded = Result.getOrThrow(provider.decodeOutput({ name: "label", schema: Label }, r.response.text))
        assert.strictEqual((decoded as typeof Label.Type).category, "billing")
        assert.isAbove(r.response.usage.inputTokens, 0)
      }
      for (const r of failed) {
        if (r._tag !== "LineFailed") continue
        assert.strictEqual(r.kind, "provider_error")
        if (r.message.startsWith("overloaded_error")) assert.deepInclude(r, { retryable: true, status: 529 })
        else assert.deepInclude(r, { retryable: false, status: 400 })
      }
    }).pipe(Effect.scoped))

  it.live("a batch of several megabytes streams through in chunks and comes back whole", () =>
    Effect.gen(function*() {
      const emulator = yield* Emulator.serve({ linesPerSecond: 50_000 })
      const provider = yield* adapter(emulator.url)
      const filler = "lorem ipsum dolor sit amet ".repeat(40)
      const requests = Array.from({ length: 3_000 }, (_, i) => Request.chat({ model: MODEL, system: filler, prompt: `ticket ${i}: ${filler}`, maxTokens: 20 }))
      const submission = lines(requests, provider)
      assert.isAbove(submission.bytes, 5 * 1024 * 1024)
      const remote = yield* provider.submit(submission)
      const status = yield* untilTerminal(provider, remote)
      assert.deepStrictEqual(status.counts, { total: 3_000, completed: 3_000, failed: 0 })
      const ids = new Set<string>()
      yield* Stream.runForEach(provider.results(remote, status), (r) => Effect.sync(() => ids.add(r.id)))
      assert.strictEqual(ids.size, 3_000)
      assert.isTrue(requests.every((r) => ids.has(Fingerprint.of(r))))
    }).pipe(Effect.scoped))

  it.live("sends what the emulator answers: truncation is length, stop sequences stop, cached prefixes are counted", () =>
    Effect.gen(function*() {
      const emulator = yield* Emulator.serve({ shuffle: false })
      const provider = yield* adapter(emulator.url)
      const shared = "A long shared instruction block. ".repeat(40)
      const requests = [
        Request.chat({ model: MODEL, prompt: "tell me about the weather in the mountains today", maxTokens: 2 }),
        Request.chat({ model: MODEL, prompt: "I was charged twice", stop: ["charged"] }),
        ...Array.from({ length: 3 }, (_, i) => Request.chat({ model: MODEL, system: shared, prompt: `question ${i}`, cachePrefix: 1 }))
      ]
      const remote = yield* provider.submit(lines(requests, provider))
      const status = yield* untilTerminal(provider, remote)
      const byId = new Map((yield* Stream.runCollect(provider.results(remote, status))).map((r) => [r.id, r]))
      const response = (r: Request.Request) => (byId.get(Fingerprint.of(r)) as any).response as Provider.ChatResponse
      assert.strictEqual(response(requests[0]!).finishReason, "length")
      assert.strictEqual(response(requests[1]!).finishReason, "stop")
      assert.notInclude(response(requests[1]!).text, "charged")
      const cached = requests.slice(2).map((r) => response(r).usage.cachedInputTokens ?? 0)
      assert.strictEqual(cached.filter((c) => c > 0).length, 2, "the first request writes the prefix, the next two read it")
    }).pipe(Effect.scoped))

  it.live("expired: finished lines come back, the rest as retryable expired lines", () =>
    Effect.gen(function*() {
      const emulator = yield* Emulator.serve({ linesPerSecond: 200, completionWindowMs: 150 })
      const provider = yield* adapter(emulator.url)
      const remote = yield* provider.submit(lines(Array.from({ length: 60 }, (_, i) => chat(`slow ${i}`)), provider))
      const status = yield* untilTerminal(provider, remote)
      assert.strictEqual(status.state, "expired")
      const results = yield* Stream.runCollect(provider.results(remote, status))
      assert.strictEqual(results.length, 60)
      const ok = results.filter((r) => r._tag === "LineSucceeded").length
      const expired = results.filter((r) => r._tag === "LineFailed" && r.kind === "expired" && r.retryable).length
      assert.strictEqual(ok, status.counts.completed)
      assert.isAbove(ok, 0)
      assert.isAbove(expired, 0)
      assert.strictEqual(ok + expired, 60)
    }).pipe(Effect.scoped))

  it.live("cancel: canceling, then cancelled with the unprocessed lines as retryable cancelled lines", () =>
    Effect.gen(function*() {
      const emulator = yield* Emulator.serve({ linesPerSecond: 20, cancellingMs: 50 })
      const provider = yield* adapter(emulator.url)
      const remote = yield* provider.submit(lines(Array.from({ length: 30 }, (_, i) => chat(`c ${i}`)), provider))
      yield* Effect.sleep("150 millis")
      yield* provider.cancel(remote)
      const cancelling = yield* provider.status(remote)
      assert.include(["cancelling", "cancelled"], cancelling.state)
      const status = yield* untilTerminal(provider, remote)
      assert.strictEqual(status.state, "cancelled")
      const results = yield* Stream.runCollect(provider.results(remote, status))
      assert.strictEqual(results.length, 30)
      const cancelled = results.filter((r) => r._tag === "LineFailed" && r.kind === "cancelled" && r.retryable).length
      assert.isAbove(cancelled, 0)
      assert.strictEqual(cancelled + status.counts.completed, 30)
    }).pipe(Effect.scoped))

  it.live("find after a crash: by the journal, by listing when only the intent was recorded, never another batch of the same size", () =>
    Effect.gen(function*() {
      const emulator = yield* Emulator.serve({ linesPerSecond: 50 })
      const provider = yield* adapter(emulator.url)
      const dir = tmpDir()
      const a = lines(Array.from({ length: 6 }, (_, i) => chat(`a ${i}`)), provider, "run-b00001", dir)
      const b = lines(Array.from({ length: 6 }, (_, i) => chat(`b ${i}`)), provider, "run-b00002", dir)
      const never = lines(Array.from({ length: 6 }, (_, i) => chat(`n ${i}`)), provider, "run-b00003", dir)
      const remoteA = yield* provider.submit(a)
      const remoteB = yield* provider.submit(b)
      // a foreign batch of the same size, created by someone else in the workspace
      const foreign = yield* Effect.promise(() =>
        sdk(emulator.url).messages.batches.create({
          requests: Array.from({ length: 6 }, (_, i) => ({ custom_id: `f${i}`, params: { model: MODEL, max_tokens: 10, messages: [{ role: "user", content: "x" }] } }))
        })
      )
      const idOf = (s: Provider.Lines) => provider.find(s).pipe(Effect.map(Option.map((r) => r.id)))
      // the pipeline crashed after create, before its ledger write: the journal has the id
      assert.deepStrictEqual(yield* idOf(a), Option.some(remoteA.id))
      assert.deepStrictEqual(yield* idOf(b), Option.some(remoteB.id))
      // never submitted: nothing to find, although batches of its size exist
      assert.deepStrictEqual(yield* idOf(never), Option.none())
      // crashed while the create was in flight (only the intent is recorded): b is claimed by its own journal;
      // a and the foreign batch could both be a's, so find waits for them to end and compares custom ids
      const forget = (s: Provider.Lines) => {
        const journal = Journal.read(s.path, s.batchId)!
        Journal.write(s.path, {
          batchId: journal.batchId,
          count: journal.count,
          attempts: journal.attempts.map((t) => ({ startedAt: t.startedAt, id: null, at: null }))
        })
      }
      forget(a)
      assert.deepStrictEqual(yield* idOf(a), Option.some(remoteA.id))
      assert.strictEqual(Journal.read(a.path, a.batchId)!.attempts[0]!.id, remoteA.id, "the adopted batch is recorded")
      // once they ended, results confirm it: with b's journal gone too, a, b and the foreign batch all
      // have 6 requests, but only a's results carry a's custom ids
      yield* untilTerminal(provider, remoteA)
      yield* untilTerminal(provider, remoteB)
      yield* untilTerminal(provider, { id: foreign.id })
      forget(a)
      forget(b)
      assert.deepStrictEqual(yield* idOf(b), Option.some(remoteB.id))
      assert.deepStrictEqual(yield* idOf(a), Option.some(remoteA.id))
      // a submit after an unresolved attempt looks first, and creates nothing new
      forget(a)
      const created = (yield* emulator.stats).batchesCreated
      assert.strictEqual((yield* provider.submit(a)).id, remoteA.id)
      assert.strictEqual((yield* emulator.stats).batchesCreated, created)
      // the journal of a batch file that is gone (collected) is kept: its claim still rules its batch out
      fs.rmSync(b.path)
      yield* provider.submit(lines([chat("kept")], provider, "run-b00004", dir))
      assert.strictEqual(Journal.read(b.path, b.batchId)!.attempts.find((t) => t.id !== null)!.id, remoteB.id)
      forget(a)
      assert.deepStrictEqual(yield* idOf(a), Option.some(remoteA.id))
      // table jobs are not Anthropic's
      const table = { _tag: "Table", batchId: "t", runId: "r", sealedAt: 0, kind: "bigquery", model: MODEL, input: "i", output: "o", keyColumns: [], rows: 1 } as const
      assert.strictEqual((yield* Effect.flip(provider.submit(table))).reason._tag, "Unsupported")
      assert.isTrue(Option.isNone(yield* provider.find(table)))
    }).pipe(Effect.scoped))

  it.live("a create refused with a 5xx is retried by looking first: one batch in the end", () =>
    Effect.gen(function*() {
      const emulator = yield* Emulator.serve({ endpointFaults: [{ endpoint: "create", status: 529, times: 1, retryAfterMs: 10 }] })
      const provider = yield* adapter(emulator.url, { maxRetries: 3 })
      const submission = lines([chat("x"), chat("y")], provider)
      const error = yield* Effect.flip(provider.submit(submission))
      assert.strictEqual(error.reason._tag, "ServerError")
      assert.strictEqual((error.reason as { status: number }).status, 529)
      // what the pipeline does next: look, then submit again
      assert.isTrue(Option.isNone(yield* provider.find(submission)))
      const remote = yield* provider.submit(submission)
      assert.strictEqual((yield* emulator.stats).batchesCreated, 1)
      assert.deepStrictEqual(Option.map(yield* provider.find(submission), (r) => r.id), Option.some(remote.id))
      assert.strictEqual(Journal.read(submission.path, submission.batchId)!.attempts.length, 2)
    }).pipe(Effect.scoped))

  it.live("errors carry a neutral reason: 413 is Rejected 413, 404 NotFound, 429 RateLimited with retry-after", () =>
    Effect.gen(function*() {
      const emulator = yield* Emulator.serve({ maxBodyBytes: 2_000, endpointFaults: [{ endpoint: "list", status: 429, times: 1, retryAfterMs: 1_500 }] })
      const provider = yield* adapter(emulator.url)
      const big = yield* provider.submit(lines([chat("x".repeat(3_000))], provider)).pipe(Effect.flip)
      assert.strictEqual(big.reason._tag, "Rejected")
      assert.strictEqual((big.reason as { status: number }).status, 413)
      assert.strictEqual((big.reason as { code?: string }).code, "request_too_large")
      assert.match(big.message, /^anthropic messages\.batches\.create: Rejected: 413/)
      const missing = yield* provider.status({ id: "msgbatch_nope" }).pipe(Effect.flip)
      assert.strictEqual(missing.reason._tag, "NotFound")
      const submission = lines([chat("y")], provider)
      Journal.begin(submission.path, submission.batchId, 1, Date.now())
      const limited = yield* provider.find(submission).pipe(Effect.flip)
      assert.strictEqual(limited.reason._tag, "RateLimited")
      assert.strictEqual((limited.reason as { retryAfterMs?: number }).retryAfterMs, 1_500)
    }).pipe(Effect.scoped))

  it.live("a 404 right after create is propagation delay: status and results retry it within the grace period", () =>
    Effect.gen(function*() {
      const emulator = yield* Emulator.serve({ notFoundAfterCreateMs: 400 })
      const provider = yield* adapter(emulator.url)
      const remote = yield* provider.submit(lines([chat("a"), chat("b")], provider))
      const status = yield* untilTerminal(provider, remote)
      assert.strictEqual(status.state, "completed")
      assert.strictEqual((yield* Stream.runCollect(provider.results(remote, status))).length, 2)
      // without the grace (an old batch, or none recorded) a 404 is NotFound at once
      const hidden = yield* Emulator.serve({ notFoundAfterCreateMs: 60_000 })
      const old = yield* adapter(hidden.url, { notFoundGrace: "0 millis" })
      const again = yield* old.submit(lines([chat("c")], old, "run-b00009"))
      assert.strictEqual((yield* Effect.flip(old.status(again))).reason._tag, "NotFound")
    }).pipe(Effect.scoped))

  it.live("results are the lines of the batch's results_url (the one the poll saw, else retrieved): across reads, CRLF and blank lines; a line that is not JSON fails the download", () =>
    Effect.gen(function*() {
      const line = (id: string) =>
        JSON.stringify({ custom_id: id, result: { type: "succeeded", message: message({ content: [{ type: "text", text: `answer ${id}`, citations: null }] }) } })
      let body: Array<string> = []
      let retrieves = 0
      // retrieve answers an ended batch whose results_url is this server's; results are sent in pieces that cut lines
      const server = yield* Effect.acquireRelease(
        Effect.promise(() =>
          new Promise<http.Server>((resolve) => {
            const s = http.createServer((req, res) => {
              const base = `http://127.0.0.1:${(s.address() as { port: number }).port}`
              if (req.url?.endsWith("/results")) {
                res.writeHead(200, { "content-type": "application/binary" })
                const text = body.join("")
                let i = 0
                const next = () => {
                  if (i >= text.length) return void res.end()
                  res.write(text.slice(i, i += 7_000), () => setImmediate(next))
                }
                return next()
              }
              retrieves++
              res.writeHead(200, { "content-type": "application/json" })
              res.end(JSON.stringify(batchObject({ processing_status: "ended", results_url: `${base}/v1/messages/batches/msgbatch_1/results` })))
            })
            s.listen(0, "127.0.0.1", () => resolve(s))
          })
        ),
        (s) => Effect.promise(() => new Promise<void>((resolve) => s.close(() => resolve())))
      )
      const provider = yield* adapter(`http://127.0.0.1:${(server.address() as { port: number }).port}`)
      const remote = { id: "msgbatch_1" } as Provider.RemoteBatch
      const status = { state: "completed" } as Provider.Status
      const ids = Array.from({ length: 300 }, (_, i) => `id${i}`)
      body = ids.map((id, i) => line(id) + (i % 3 === 0 ? "\r\n" : i % 5 === 0 ? "\n\n" : "\n"))
      const all = yield* Stream.runCollect(provider.results(remote, status))
      assert.deepStrictEqual(all.map((r) => r.id), ids)
      assert.deepStrictEqual(all[299], {
        _tag: "LineSucceeded",
        id: "id299",
        response: { _tag: "ChatResponse", text: "answer id299", finishReason: "stop", usage: { inputTokens: 10, outputTokens: 5, cachedInputTokens: 0 } }
      })
      // a line cut short (no line of a download is skipped: the results are read again, no request is sent again)
      body = [line("a") + "\n", line("b").slice(0, 40) + "\n", line("c") + "\n"]
      const failed = yield* Effect.flip(Stream.runCollect(provider.results(remote, status)))
      assert.strictEqual(failed.operation, "messages.batches.results")
      // without a poll before, each read of the results retrieved the batch for its url; after the poll that saw the
      // batch ended, the results are read from the url it saw (retrieved once, not twice), and read again retrieves anew
      assert.strictEqual(retrieves, 2)
      body = ids.map((id) => line(id) + "\n")
      const polled = yield* provider.status(remote)
      assert.strictEqual(polled.state, "completed")
      assert.strictEqual((yield* Stream.runCollect(provider.results(remote, polled))).length, 300)
      assert.strictEqual(retrieves, 3)
      assert.strictEqual((yield* Stream.runCollect(provider.results(remote, polled))).length, 300)
      assert.strictEqual(retrieves, 4)
    }).pipe(Effect.scoped))

  it.live("sync: one request through the Messages API; HTTP answers are line results, broken connections errors", () =>
    Effect.gen(function*() {
      const emulator = yield* Emulator.serve({ endpointFaults: [{ endpoint: "messages", status: 429, times: 1, retryAfterMs: 50 }] })
      // the SDK's own retry honours retry-after on the 429
      const provider = yield* adapter(emulator.url, { maxRetries: 2 })
      const ok = yield* syncOf(provider, chat("I was charged twice"), "id-1")
      assert.strictEqual(ok._tag, "LineSucceeded")
      if (ok._tag === "LineSucceeded" && ok.response._tag === "ChatResponse") {
        const decoded = Result.getOrThrow(provider.decodeOutput({ name: "label", schema: Label }, ok.response.text))
        assert.strictEqual((decoded as typeof Label.Type).category, "billing")
        assert.isAbove(ok.response.usage.inputTokens, 0)
      }
      const plain = yield* syncOf(provider, Request.chat({ model: MODEL, prompt: "hello there" }), "id-2")
      assert.deepInclude((plain as any).response, { finishReason: "stop" })
      // temperature is dropped under the default API version, so the request goes through
      const sampled = yield* syncOf(provider, Request.chat({ model: MODEL, prompt: "hi", temperature: 0.3 }), "id-3")
      assert.strictEqual(sampled._tag, "LineSucceeded")
      // and sent under an older one, which takes it
      const legacy = yield* adapter(emulator.url, { anthropicVersion: "2023-06-01" })
      assert.strictEqual((yield* syncOf(legacy, Request.chat({ model: MODEL, prompt: "hi", temperature: 0.3 }), "id-4"))._tag, "LineSucceeded")
      // a request the API refuses answers the line with a 400
      const bad = yield* syncOf(provider, { _tag: "Chat", model: MODEL, messages: [{ role: "user", content: "x" }], params: { maxTokens: 0 } }, "id-5")
      assert.deepInclude(bad, { _tag: "LineFailed", id: "id-5", kind: "provider_error", retryable: false, status: 400 })
      // an embedding never reaches it: encode refuses it first
      assert.match(Result.getFailure(provider.encode(Request.embedding({ model: "e", input: "x" }), "id-6")).pipe(Option.getOrThrow), /no embeddings API/)
      // nobody listening: a transport error
      const closed = yield* adapter("http://127.0.0.1:9")
      const down = yield* Effect.flip(syncOf(closed, chat("x"), "id-7"))
      assert.strictEqual(down.reason._tag, "Transport")
    }).pipe(Effect.scoped))

  it.live("sync: a 529 after the SDK's retries is a retryable line failure", () =>
    Effect.gen(function*() {
      const emulator = yield* Emulator.serve({ endpointFaults: [{ endpoint: "messages", status: 529, times: 5, retryAfterMs: 10 }] })
      const provider = yield* adapter(emulator.url, { maxRetries: 1 })
      const line = yield* syncOf(provider, chat("x"), "id-1")
      assert.deepInclude(line, { _tag: "LineFailed", kind: "provider_error", retryable: true, status: 529 })
    }).pipe(Effect.scoped))

  it.live("layerConfig reads ANTHROPIC_API_KEY, ANTHROPIC_BASE_URL and the poll cadence", () =>
    Effect.gen(function*() {
      const emulator = yield* Emulator.serve({})
      const env = { ANTHROPIC_API_KEY: "k", ANTHROPIC_BASE_URL: emulator.url, OFFPEAK_POLL_INITIAL: "5 millis", OFFPEAK_POLL_MAX: "20 millis" }
      const provider = yield* Provider.Provider.pipe(
        Effect.provide(AnthropicBatch.layerConfig().pipe(Layer.provide(ConfigProvider.layer(ConfigProvider.fromEnv({ env })))))
      )
      assert.strictEqual(provider.name, "anthropic")
      const remote = yield* provider.submit(lines([chat("z")], provider))
      assert.strictEqual((yield* untilTerminal(provider, remote)).state, "completed")
      const missing = yield* Effect.flip(
        Provider.Provider.pipe(
          Effect.provide(AnthropicBatch.layerConfig().pipe(Layer.provide(ConfigProvider.layer(ConfigProvider.fromEnv({ env: {} })))))
        )
      )
      assert.match(String(missing), /ANTHROPIC_API_KEY/)
    }).pipe(Effect.scoped))

  it.live("the plugin runs against the in-process emulator when ANTHROPIC_API_KEY is not set", () =>
    Effect.gen(function*() {
      assert.strictEqual(plugin.name, "anthropic")
      assert.strictEqual(plugin.apiKeyEnv, "ANTHROPIC_API_KEY")
      const saved = { key: process.env.ANTHROPIC_API_KEY, knobs: process.env.OFFPEAK_EMULATOR_KNOBS }
      delete process.env.ANTHROPIC_API_KEY
      process.env.OFFPEAK_EMULATOR_KNOBS = JSON.stringify({ linesPerSecond: 1_000 })
      yield* Effect.addFinalizer(() =>
        Effect.sync(() => {
          if (saved.key !== undefined) process.env.ANTHROPIC_API_KEY = saved.key
          if (saved.knobs !== undefined) process.env.OFFPEAK_EMULATOR_KNOBS = saved.knobs
          else delete process.env.OFFPEAK_EMULATOR_KNOBS
        })
      )
      const notices: Array<string> = []
      const dir = tmpDir()
      // the emulator lives as long as the layer: build it in the test's scope
      const context = yield* Layer.build(plugin.layer({ emulatorDir: dir, onNotice: (l) => notices.push(l) }) as Layer.Layer<Provider.Provider>)
      const provider = Context.get(context, Provider.Provider)
      assert.match(notices[0]!, /no ANTHROPIC_API_KEY: running against the local Anthropic emulator at http:\/\/127\.0\.0\.1:\d+/)
      const remote = yield* provider.submit(lines([chat("p")], provider))
      assert.strictEqual((yield* untilTerminal(provider, remote)).state, "completed")
      const served = yield* plugin.serveEmulator({ dir: tmpDir(), knobs: { seed: 3 } })
      assert.match(served.url, /^http:\/\/127\.0\.0\.1:\d+$/)
    }).pipe(Effect.scoped))
})
