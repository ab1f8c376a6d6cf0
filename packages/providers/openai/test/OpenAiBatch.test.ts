/**
 * The OpenAI Batch adapter against the emulator, through the official SDK:
 * encoding, submit/find, every status, every kind of result line, cancel.
 */
import * as Fingerprint from "@offpeak/core/Fingerprint"
import * as Provider from "@offpeak/core/Provider"
import * as Request from "@offpeak/core/Request"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Option, Redacted, Result, Schema, Stream } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import type { Batch } from "openai/resources/batches"
import * as Emulator from "../emulator/Emulator.ts"
import * as OpenAiBatch from "../OpenAiBatch.ts"

/** one request through the adapter's synchronous API, encoded as its batch line would be */
const syncOf = (provider: Provider.Service, request: Request.Request, customId: string) =>
  provider.sync(Result.getOrThrow(provider.encode(request, customId)).line)

const Label = Schema.Struct({
  category: Schema.Literals(["billing", "bug", "other"]),
  note: Schema.optionalKey(Schema.String)
}).annotate({ title: "Label" })

const chat = (prompt: string, maxTokens = 300) =>
  Request.chat({ model: "gpt-4o-mini", prompt, maxTokens, output: { name: "label", schema: Label } })

const adapter = (url: string) =>
  OpenAiBatch.make({ apiKey: Redacted.make("test"), baseURL: url, pollInterval: { initial: "10 millis", max: "50 millis" } })

/** writes a batch file of requests and returns the submission */
const lines = (requests: ReadonlyArray<Request.Request>, provider: Provider.Service, batchId = "run-b00001") => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "offpeak-openai-"))
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
  provider.status(remote).pipe(
    Effect.repeat({ schedule: provider.pollSchedule, until: (s) => Provider.isTerminal(s.state) })
  )

describe("OpenAiBatch", () => {
  it("encodes chat and embedding lines the way the SDK types them", () => {
    const line = OpenAiBatch.requestLine(
      Request.chat({ model: "m", system: "s", prompt: "p", maxTokens: 5, temperature: 0, stop: ["x"], seed: 1, output: { name: "my label!", schema: Label } }),
      "id1"
    )
    assert.strictEqual(line.url, "/v1/chat/completions")
    if (line.url !== "/v1/chat/completions") return
    assert.deepStrictEqual(line.body.messages, [{ role: "system", content: "s" }, { role: "user", content: "p" }])
    assert.strictEqual(line.body.max_completion_tokens, 5)
    assert.deepStrictEqual(line.body.stop, ["x"])
    const format = line.body.response_format as { type: string; json_schema: { name: string; strict: boolean; schema: any } }
    assert.strictEqual(format.type, "json_schema")
    assert.strictEqual(format.json_schema.name, "my_label_")
    assert.isTrue(format.json_schema.strict)
    // strict mode: every key required, optional ones nullable, no extra keys
    assert.deepStrictEqual(format.json_schema.schema.required, ["category", "note"])
    assert.isFalse(format.json_schema.schema.additionalProperties)
    const embedding = OpenAiBatch.requestLine(Request.embedding({ model: "text-embedding-3-small", input: "hi", dimensions: 8 }), "id2")
    assert.deepStrictEqual(embedding, {
      custom_id: "id2",
      method: "POST",
      url: "/v1/embeddings",
      body: { model: "text-embedding-3-small", input: "hi", encoding_format: "base64", dimensions: 8 }
    })
  })

  it("maps every OpenAI status to the neutral state", () => {
    const base = { id: "b", object: "batch", endpoint: "/v1/chat/completions", input_file_id: "f", completion_window: "24h", created_at: 1 }
    const cases: Array<[Batch["status"], Provider.State]> = [
      ["validating", "validating"],
      ["in_progress", "running"],
      ["finalizing", "finalizing"],
      ["completed", "completed"],
      ["failed", "failed"],
      ["expired", "expired"],
      ["cancelling", "cancelling"],
      ["cancelled", "cancelled"]
    ]
    for (const [status, state] of cases) {
      assert.strictEqual(OpenAiBatch.toStatus({ ...base, status } as Batch).state, state)
    }
    // the live API sends nulls where the spec says objects
    const status = OpenAiBatch.toStatus({ ...base, status: "failed", request_counts: null, errors: { object: "list", data: [{ code: "x", message: "m", line: 3, param: null }] } } as unknown as Batch)
    assert.deepStrictEqual(status.counts, { total: 0, completed: 0, failed: 0 })
    assert.deepStrictEqual(status.issues, [{ code: "x", message: "m", line: 3 }])
  })

  it("decodes every kind of result line", () => {
    const ok = OpenAiBatch.decodeResultLine(JSON.stringify({
      id: "r",
      custom_id: "a",
      response: {
        status_code: 200,
        body: {
          choices: [{ index: 0, message: { role: "assistant", content: "{}" }, finish_reason: "length" }],
          usage: { prompt_tokens: 3, completion_tokens: 2, prompt_tokens_details: { cached_tokens: 1 } }
        }
      },
      error: null
    }))
    assert.deepStrictEqual(ok, {
      _tag: "LineSucceeded",
      id: "a",
      response: { _tag: "ChatResponse", text: "{}", finishReason: "length", usage: { inputTokens: 3, outputTokens: 2, cachedInputTokens: 1 } }
    })
    const http = (status: number) =>
      OpenAiBatch.decodeResultLine(JSON.stringify({
        custom_id: "b",
        response: { status_code: status, body: { error: { message: "nope", code: "c" } } },
        error: null
      }))
    for (const [status, retryable] of [[400, false], [401, false], [408, true], [429, true], [500, true], [503, true]] as const) {
      const line = http(status)
      assert.strictEqual(line?._tag, "LineFailed")
      if (line?._tag !== "LineFailed") continue
      assert.strictEqual(line.retryable, retryable, `HTTP ${status}`)
      assert.strictEqual(line.message, `HTTP ${status} c: nope`)
    }
    const expired = OpenAiBatch.decodeResultLine(JSON.stringify({ custom_id: "c", response: null, error: { code: "batch_expired", message: "late" } }))
    assert.deepInclude(expired, { _tag: "LineFailed", kind: "expired", retryable: true })
    const cancelled = OpenAiBatch.decodeResultLine(JSON.stringify({ custom_id: "d", response: null, error: { code: "batch_cancelled", message: "stop" } }))
    assert.deepInclude(cancelled, { _tag: "LineFailed", kind: "cancelled", retryable: true })
    const refusal = OpenAiBatch.decodeResultLine(JSON.stringify({
      custom_id: "e",
      response: { status_code: 200, body: { choices: [{ message: { content: null, refusal: "no" }, finish_reason: "stop" }] } },
      error: null
    }))
    assert.deepInclude((refusal as any).response, { finishReason: "content_filter", text: "no" })
    assert.isUndefined(OpenAiBatch.decodeResultLine("{not json"))
    assert.isUndefined(OpenAiBatch.decodeResultLine(JSON.stringify({ response: null })))
  })

  it("decodes structured output with the schema, optional keys sent as null", () => {
    const output = { name: "label", schema: Label }
    const provider = Effect.runSync(adapter("http://127.0.0.1:9/v1"))
    assert.deepStrictEqual(Result.getOrThrow(provider.decodeOutput(output, `{"category":"bug","note":null}`)), { category: "bug" })
    const bad = provider.decodeOutput(output, `{"category":"weather","note":null}`)
    assert.isTrue(Result.isFailure(bad))
    assert.match(Result.isFailure(bad) ? bad.failure : "", /does not match label.*category/)
    const notJson = provider.decodeOutput(output, "not json")
    assert.match(Result.isFailure(notJson) ? notJson.failure : "", /the answer is not JSON/)
  })

  it.live("submits, finds its own batch by tag, polls to completed and streams every line once", () =>
    Effect.gen(function*() {
      const emulator = yield* Emulator.serve({ validationMs: 5, finalizingMs: 5 })
      const provider = yield* adapter(emulator.url)
      const requests = Array.from({ length: 40 }, (_, i) => chat(`I was charged twice, ticket ${i}`))
      const submission = lines(requests, provider)
      const remote = yield* provider.submit(submission)
      assert.match(remote.id, /^batch_/)
      assert.isString(remote.meta?.inputFileId)
      const found = yield* provider.find(submission)
      assert.deepStrictEqual(Option.map(found, (b) => b.id), Option.some(remote.id))
      assert.isTrue(Option.isNone(yield* provider.find({ ...submission, batchId: "run-b99999" })))
      const status = yield* untilTerminal(provider, remote)
      assert.strictEqual(status.state, "completed")
      assert.deepStrictEqual(status.counts, { total: 40, completed: 40, failed: 0 })
      const results = yield* Stream.runCollect(provider.results(remote, status))
      assert.sameMembers(results.map((r) => r.id), requests.map(Fingerprint.of))
      for (const r of results) {
        assert.strictEqual(r._tag, "LineSucceeded")
        if (r._tag === "LineSucceeded" && r.response._tag === "ChatResponse") {
          const decoded = Result.getOrThrow(provider.decodeOutput({ name: "label", schema: Label }, r.response.text))
          assert.strictEqual((decoded as typeof Label.Type).category, "billing")
        }
      }
    }))

  it.live("results read the files the poll that saw the batch ended named; a download read again retrieves the batch anew", () =>
    Effect.gen(function*() {
      const emulator = yield* Emulator.serve({ validationMs: 0, finalizingMs: 0 })
      // the SDK takes the global fetch when the client is made: every retrieve (GET /batches/{id}) is counted
      let retrieves = 0
      const fetch = globalThis.fetch
      globalThis.fetch = (input, init) => {
        const url = input instanceof globalThis.Request ? input.url : String(input)
        if ((init?.method ?? "GET") === "GET" && /\/batches\/batch_[^/]+$/.test(new URL(url).pathname)) retrieves++
        return fetch(input, init)
      }
      const provider = yield* adapter(emulator.url).pipe(Effect.ensuring(Effect.sync(() => (globalThis.fetch = fetch))))
      const requests = Array.from({ length: 5 }, (_, i) => chat(`ticket ${i}`))
      const remote = yield* provider.submit(lines(requests, provider))
      const status = yield* untilTerminal(provider, remote)
      const polls = retrieves
      assert.isAbove(polls, 0)
      const first = yield* Stream.runCollect(provider.results(remote, status))
      assert.sameMembers(first.map((r) => r.id), requests.map(Fingerprint.of))
      assert.strictEqual(retrieves, polls, "the download took the files the last poll saw")
      const again = yield* Stream.runCollect(provider.results(remote, status))
      assert.strictEqual(again.length, 5)
      assert.strictEqual(retrieves, polls + 1, "a download read again retrieves the batch")
    }))

  it.live("a batch failing validation reports the line; error lines and no output file are handled", () =>
    Effect.gen(function*() {
      const emulator = yield* Emulator.serve({ validationMs: 5, lineFailures: [{ status: 400, rate: 1 }] })
      const provider = yield* adapter(emulator.url)
      // two models in one file: the emulator fails validation at the first line of the second model
      const mixed = lines([chat("a"), Request.chat({ model: "gpt-4o", prompt: "b" })], provider)
      const failed = yield* untilTerminal(provider, yield* provider.submit(mixed))
      assert.strictEqual(failed.state, "failed")
      assert.deepStrictEqual(failed.issues.map((i) => [i.code, i.line]), [["model_mismatch", 2]])
      // every line answered with HTTP 400: completed, output_file_id null, all lines in the error file
      const all = lines([chat("x"), chat("y")], provider, "run-b00002")
      const remote = yield* provider.submit(all)
      const status = yield* untilTerminal(provider, remote)
      assert.strictEqual(status.state, "completed")
      const results = yield* Stream.runCollect(provider.results(remote, status))
      assert.strictEqual(results.length, 2)
      for (const r of results) assert.deepInclude(r, { _tag: "LineFailed", kind: "provider_error", retryable: false, status: 400 })
    }))

  it.live("expired: finished lines come back, the rest as retryable expired lines", () =>
    Effect.gen(function*() {
      const emulator = yield* Emulator.serve({ validationMs: 0, linesPerSecond: 100, completionWindowMs: 150 })
      const provider = yield* adapter(emulator.url)
      const submission = lines(Array.from({ length: 60 }, (_, i) => chat(`slow ${i}`)), provider)
      const remote = yield* provider.submit(submission)
      const status = yield* untilTerminal(provider, remote)
      assert.strictEqual(status.state, "expired")
      const results = yield* Stream.runCollect(provider.results(remote, status))
      assert.strictEqual(results.length, 60)
      const ok = results.filter((r) => r._tag === "LineSucceeded").length
      const expired = results.filter((r) => r._tag === "LineFailed" && r.kind === "expired" && r.retryable).length
      assert.isAbove(ok, 0)
      assert.isAbove(expired, 0)
      assert.strictEqual(ok + expired, 60)
    }))

  it.live("cancel: the batch ends cancelled and unfinished lines come back as cancelled", () =>
    Effect.gen(function*() {
      const emulator = yield* Emulator.serve({ validationMs: 0, linesPerSecond: 50 })
      const provider = yield* adapter(emulator.url)
      const remote = yield* provider.submit(lines(Array.from({ length: 30 }, (_, i) => chat(`c ${i}`)), provider))
      yield* Effect.sleep("100 millis")
      yield* provider.cancel(remote)
      const status = yield* untilTerminal(provider, remote)
      assert.strictEqual(status.state, "cancelled")
      const results = yield* Stream.runCollect(provider.results(remote, status))
      assert.strictEqual(results.length, 30)
      assert.isAbove(results.filter((r) => r._tag === "LineFailed" && r.kind === "cancelled").length, 0)
    }))

  it.live("errors carry a neutral reason: 404 is NotFound, a refused upload is Rejected with its status", () =>
    Effect.gen(function*() {
      const emulator = yield* Emulator.serve({ maxFileBytes: 100 })
      const provider = yield* adapter(emulator.url)
      const missing = yield* provider.status({ id: "batch_nope" }).pipe(Effect.flip)
      assert.strictEqual(missing.reason._tag, "NotFound")
      const big = yield* provider.submit(lines([chat("x".repeat(500))], provider)).pipe(Effect.flip)
      assert.strictEqual(big.reason._tag, "Rejected")
      assert.strictEqual((big.reason as { status: number }).status, 400)
      assert.match(big.message, /openai files\.create: Rejected: .*too large/i)
    }))

  it.live("sync: one request through the synchronous API, line errors as LineFailed", () =>
    Effect.gen(function*() {
      const emulator = yield* Emulator.serve({})
      const provider = yield* adapter(emulator.url)
      const ok = yield* syncOf(provider, chat("I was charged twice"), "id-1")
      assert.strictEqual(ok._tag, "LineSucceeded")
      if (ok._tag === "LineSucceeded" && ok.response._tag === "ChatResponse") {
        assert.strictEqual(JSON.parse(ok.response.text).category, "billing")
        assert.isAbove(ok.response.usage.inputTokens, 0)
      }
      const embedding = yield* syncOf(provider, Request.embedding({ model: "text-embedding-3-small", input: "hello", dimensions: 16 }), "id-2")
      assert.strictEqual(embedding._tag, "LineSucceeded")
      if (embedding._tag === "LineSucceeded" && embedding.response._tag === "EmbeddingResponse") {
        assert.strictEqual(embedding.response.vector.length, 16)
      }
      // a body the API refuses (no messages) answers the line with HTTP 400, not an error of the call
      const bad = yield* syncOf(provider, { _tag: "Chat", model: "gpt-4o-mini", messages: [], params: {} }, "id-3")
      assert.deepInclude(bad, { _tag: "LineFailed", id: "id-3", retryable: false, status: 400 })
    }))
})
