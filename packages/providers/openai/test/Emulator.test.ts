/**
 * The OpenAI Batch emulator, driven only through the official `openai` SDK.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Schema } from "effect"
import { OpenAiStructuredOutput } from "effect/ai"
import { spawn } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import OpenAI, { toFile } from "openai"
import type { Batch } from "openai/resources/batches"
import * as Engine from "../../local/Engine.ts"
import * as Emulator from "../emulator/Emulator.ts"

// ===== helpers =====

const tmp = (prefix: string) => fs.mkdtempSync(path.join(os.tmpdir(), `offpeak-emulator-test-${prefix}-`))

type ServeOptions = Parameters<typeof Emulator.serve>[0]

/** runs `f` against a fresh emulator, closed afterwards */
const withEmulator = <A>(options: ServeOptions, f: (client: OpenAI, emulator: Emulator.Handle) => Promise<A>): Promise<A> =>
  Effect.runPromise(
    Effect.scoped(
      Effect.flatMap(Emulator.serve(options), (emulator) =>
        Effect.tryPromise({
          try: () => f(new OpenAI({ apiKey: "test", baseURL: emulator.url, maxRetries: 0 }), emulator),
          catch: (e) => e
        }))
    )
  )

const TERMINAL = new Set(["completed", "failed", "expired", "cancelled"])

const poll = async (client: OpenAI, id: string, until: (b: Batch) => boolean = (b) => TERMINAL.has(b.status), timeoutMs = 15_000) => {
  const start = Date.now()
  const seen: Array<string> = []
  while (true) {
    const batch = await client.batches.retrieve(id)
    if (seen.at(-1) !== batch.status) seen.push(batch.status)
    if (until(batch)) return { batch, seen }
    if (Date.now() - start > timeoutMs) throw new Error(`batch ${id} still ${batch.status} after ${timeoutMs} ms`)
    await new Promise((r) => setTimeout(r, 15))
  }
}

const lines = (text: string): Array<any> => text.split("\n").filter((l) => l.length > 0).map((l) => JSON.parse(l))

const content = async (client: OpenAI, id: string | null | undefined) =>
  id === null || id === undefined ? [] : lines(await (await client.files.content(id)).text())

const jsonl = (rows: ReadonlyArray<unknown>) => rows.map((r) => JSON.stringify(r)).join("\n") + "\n"

const upload = async (client: OpenAI, rows: ReadonlyArray<unknown> | string, name = "batch.jsonl") =>
  client.files.create({ file: await toFile(Buffer.from(typeof rows === "string" ? rows : jsonl(rows)), name), purpose: "batch" })

const submit = async (client: OpenAI, rows: ReadonlyArray<unknown> | string, endpoint: "/v1/chat/completions" | "/v1/embeddings" = "/v1/chat/completions") => {
  const file = await upload(client, rows)
  return client.batches.create({ input_file_id: file.id, endpoint, completion_window: "24h" })
}

const TOPICS = [
  "I was charged twice for my subscription, please refund the duplicate billing charge",
  "The app crashes on export, this is a bug",
  "I cannot log in to my account after resetting my password",
  "Feature request: a dark mode would be great",
  "My package has not arrived, shipping tracking is stuck"
]

const Label = Schema.Struct({
  category: Schema.Literals(["billing", "bug", "account", "feature_request", "shipping", "other"]),
  urgent: Schema.Boolean,
  confidence: Schema.Finite.check(Schema.isBetween({ minimum: 0, maximum: 1 })),
  summary: Schema.String,
  note: Schema.optional(Schema.String)
})
const structured = OpenAiStructuredOutput.toCodecOpenAI(Label)

const chatLine = (i: number, extra: Record<string, unknown> = {}) => ({
  custom_id: `req-${i}`,
  method: "POST",
  url: "/v1/chat/completions",
  body: {
    model: "gpt-4o-mini",
    messages: [
      { role: "system", content: "Label the ticket." },
      { role: "user", content: `#${i}: ${TOPICS[i % TOPICS.length]}` }
    ],
    max_completion_tokens: 300,
    response_format: { type: "json_schema", json_schema: { name: "label", strict: true, schema: structured.jsonSchema } },
    ...extra
  }
})

/** what the engine answers for a chat body, independently of the emulator */
const expectedChat = (body: any) =>
  Engine.chat({
    model: body.model,
    messages: body.messages.map((m: any) => ({
      role: m.role,
      content: typeof m.content === "string" ? m.content : m.content.map((p: any) => p.text).join("\n")
    })),
    maxTokens: body.max_completion_tokens ?? body.max_tokens,
    jsonSchema: body.response_format?.json_schema?.schema
  })

// ===== tests =====

describe("Emulator (official openai SDK)", () => {
  it("uploads with toFile and a chunked fs.ReadStream, runs a batch to completed, answers each line from its own body, in shuffled order", async () => {
    const dir = tmp("lifecycle")
    const input = path.join(dir, "in.jsonl")
    const rows = Array.from({ length: 200 }, (_, i) => chatLine(i))
    // some lines with content parts and max_tokens instead of max_completion_tokens
    rows[3] = chatLine(3, {
      messages: [{ role: "user", content: [{ type: "text", text: "part one" }, { type: "text", text: "I was charged twice" }] }]
    })
    rows[4] = chatLine(4, { max_completion_tokens: undefined, max_tokens: 250 })
    fs.writeFileSync(input, jsonl(rows))
    await withEmulator({ linesPerSecond: 2_000, validationMs: 30, finalizingMs: 30 }, async (client, emulator) => {
      assert.match(emulator.url, /^http:\/\/127\.0\.0\.1:\d+\/v1$/)
      const streamed = await client.files.create({ file: fs.createReadStream(input), purpose: "batch" })
      const buffered = await client.files.create({ file: await toFile(fs.readFileSync(input), "copy.jsonl"), purpose: "batch" })
      const typed = await client.files.create({
        file: await toFile(fs.readFileSync(input), "typed.jsonl", { type: "application/jsonl" }),
        purpose: "batch"
      })
      for (const f of [streamed, buffered, typed]) {
        assert.strictEqual(f.object, "file")
        assert.match(f.id, /^file-[0-9a-f]+$/)
        assert.strictEqual(f.bytes, fs.statSync(input).size)
        assert.strictEqual(f.purpose, "batch")
        assert.strictEqual(f.status, "processed")
        assert.isNumber(f.created_at)
        assert.isNumber(f.expires_at)
      }
      assert.strictEqual(streamed.filename, "in.jsonl")
      assert.strictEqual(buffered.filename, "copy.jsonl")
      assert.strictEqual(await (await client.files.content(streamed.id)).text(), fs.readFileSync(input, "utf8"))

      const created = await client.batches.create({
        input_file_id: streamed.id,
        endpoint: "/v1/chat/completions",
        completion_window: "24h",
        metadata: { job: "demo" }
      })
      assert.match(created.id, /^batch_[0-9a-f]+$/)
      assert.strictEqual(created.object, "batch")
      assert.strictEqual(created.status, "validating")
      assert.deepStrictEqual(created.request_counts, { total: 0, completed: 0, failed: 0 })
      assert.strictEqual(created.expires_at, created.created_at + 86_400)
      assert.isNull(created.errors)
      assert.isNull(created.output_file_id)
      assert.isNull(created.error_file_id)
      for (const key of ["in_progress_at", "finalizing_at", "completed_at", "failed_at", "expired_at", "cancelling_at", "cancelled_at"] as const) {
        assert.isNull(created[key], key)
      }
      assert.deepStrictEqual(created.metadata, { job: "demo" })

      const { batch, seen } = await poll(client, created.id)
      // the states polled, in order (a busy machine may poll past the 100 ms in_progress), and each one's time
      const order = ["validating", "in_progress", "finalizing", "completed"]
      assert.deepStrictEqual(seen, order.filter((s) => seen.includes(s)), `seen ${seen.join(" → ")}`)
      assert.strictEqual(seen[0], "validating")
      assert.strictEqual(batch.status, "completed")
      assert.isNumber(batch.in_progress_at)
      assert.isNumber(batch.finalizing_at)
      assert.isNumber(batch.completed_at)
      assert.isAtMost(batch.created_at, batch.in_progress_at!)
      assert.isAtMost(batch.in_progress_at!, batch.finalizing_at!)
      assert.isAtMost(batch.finalizing_at!, batch.completed_at!)
      assert.strictEqual(batch.model, "gpt-4o-mini")
      assert.deepStrictEqual(batch.request_counts, { total: 200, completed: 200, failed: 0 })
      assert.isNull(batch.error_file_id)
      for (const key of ["in_progress_at", "finalizing_at", "completed_at"] as const) assert.isNumber(batch[key], key)

      const output = await content(client, batch.output_file_id)
      const outputFile = await client.files.retrieve(batch.output_file_id!)
      assert.strictEqual(outputFile.purpose, "batch_output")
      assert.strictEqual(output.length, 200)
      assert.strictEqual(new Set(output.map((l) => l.custom_id)).size, 200)
      assert.notDeepEqual(output.map((l) => l.custom_id), rows.map((r) => r.custom_id), "output order is shuffled")
      const byId = new Map(rows.map((r) => [r.custom_id, r]))
      let inputTokens = 0
      let outputTokens = 0
      for (const line of output) {
        assert.match(line.id, /^batch_req_[0-9a-f]+$/)
        assert.isNull(line.error)
        assert.strictEqual(line.response.status_code, 200)
        assert.match(line.response.request_id, /^req_/)
        const body = line.response.body
        const expected = expectedChat(byId.get(line.custom_id)!.body)
        assert.strictEqual(body.object, "chat.completion")
        assert.strictEqual(body.model, "gpt-4o-mini")
        assert.deepStrictEqual(body.choices[0].message, { role: "assistant", content: expected.text, refusal: null, annotations: [] })
        assert.strictEqual(body.choices[0].finish_reason, expected.finishReason)
        assert.strictEqual(body.usage.prompt_tokens, expected.usage.inputTokens)
        assert.strictEqual(body.usage.completion_tokens, expected.usage.outputTokens)
        assert.strictEqual(body.usage.total_tokens, expected.usage.inputTokens + expected.usage.outputTokens)
        Schema.decodeUnknownSync(structured.codec)(JSON.parse(body.choices[0].message.content))
        inputTokens += expected.usage.inputTokens
        outputTokens += expected.usage.outputTokens
      }
      assert.strictEqual(batch.usage?.input_tokens, inputTokens)
      assert.strictEqual(batch.usage?.output_tokens, outputTokens)
      assert.strictEqual(batch.usage?.total_tokens, inputTokens + outputTokens)
      // the billing tickets are labelled billing
      const first = JSON.parse(output.find((l) => l.custom_id === "req-0").response.body.choices[0].message.content)
      assert.strictEqual(first.category, "billing")
    })
  })

  it("answers embeddings batches with the engine's vectors (dimensions honoured, string and array inputs)", async () => {
    const rows = Array.from({ length: 20 }, (_, i) => ({
      custom_id: `e${i}`,
      method: "POST",
      url: "/v1/embeddings",
      body: {
        model: "text-embedding-3-small",
        input: i % 2 === 0 ? `text number ${i}` : [`first ${i}`, `second ${i}`],
        encoding_format: "float",
        ...(i % 3 === 0 ? { dimensions: 64 } : {})
      }
    }))
    await withEmulator({ linesPerSecond: 5_000, validationMs: 5, finalizingMs: 5 }, async (client) => {
      const created = await submit(client, rows, "/v1/embeddings")
      const { batch } = await poll(client, created.id)
      assert.strictEqual(batch.status, "completed")
      assert.strictEqual(batch.model, "text-embedding-3-small")
      const output = await content(client, batch.output_file_id)
      assert.sameMembers(output.map((l) => l.custom_id), rows.map((r) => r.custom_id))
      for (const line of output) {
        const row = rows.find((r) => r.custom_id === line.custom_id)!
        const inputs = typeof row.body.input === "string" ? [row.body.input] : row.body.input
        const body = line.response.body
        assert.strictEqual(body.object, "list")
        assert.strictEqual(body.data.length, inputs.length)
        let tokens = 0
        inputs.forEach((input: string, index: number) => {
          const expected = Engine.embed({ model: row.body.model, input, dimensions: (row.body as any).dimensions })
          assert.deepStrictEqual(body.data[index], { object: "embedding", index, embedding: expected.vector })
          tokens += expected.usage.inputTokens
        })
        assert.deepStrictEqual(body.usage, { prompt_tokens: tokens, total_tokens: tokens })
      }
    })
  })

  it("fails validation with the right code and 1-based line for each kind of bad input", async () => {
    const good = (i: number) => chatLine(i)
    const cases: Array<{ readonly name: string; readonly rows: string; readonly code: string; readonly line: number | null; readonly knobs?: ServeOptions }> = [
      { name: "invalid_json_line", rows: [JSON.stringify(good(0)), "{not json", JSON.stringify(good(2))].join("\n"), code: "invalid_json_line", line: 2 },
      { name: "url_mismatch", rows: jsonl([good(0), good(1), { ...good(2), url: "/v1/embeddings" }]), code: "url_mismatch", line: 3 },
      {
        name: "model_mismatch",
        rows: jsonl([good(0), { ...good(1), body: { ...good(1).body, model: "gpt-4o" } }]),
        code: "model_mismatch",
        line: 2
      },
      { name: "duplicate_custom_id", rows: jsonl([good(0), good(1), good(0)]), code: "duplicate_custom_id", line: 3 },
      { name: "too_many_tasks", rows: jsonl([good(0), good(1), good(2), good(3)]), code: "too_many_tasks", line: null },
      { name: "empty_file", rows: "\n\n", code: "empty_file", line: null },
      {
        name: "missing_required_parameter (custom_id)",
        rows: jsonl([good(0), { method: "POST", url: "/v1/chat/completions", body: good(1).body }]),
        code: "missing_required_parameter",
        line: 2
      },
      {
        name: "missing_required_parameter (body.model)",
        rows: jsonl([{ ...good(0), body: { messages: [] } }]),
        code: "missing_required_parameter",
        line: 1
      }
    ]
    await withEmulator({ validationMs: 5, maxLinesPerBatch: 3 }, async (client) => {
      const batches = await Promise.all(cases.map((c) => submit(client, c.rows)))
      for (const [i, c] of cases.entries()) {
        const { batch } = await poll(client, batches[i]!.id)
        assert.strictEqual(batch.status, "failed", c.name)
        assert.isNumber(batch.failed_at)
        assert.isNull(batch.output_file_id)
        assert.strictEqual(batch.errors?.object, "list")
        const errors = batch.errors?.data ?? []
        const match = errors.find((e) => e.code === c.code)
        assert.isDefined(match, `${c.name}: ${JSON.stringify(errors)}`)
        assert.strictEqual(match!.line, c.line, c.name)
        assert.isString(match!.message)
      }
      // every bad line is listed
      const many = await submit(client, [JSON.stringify(good(0)), "x", "y"].join("\n"))
      const { batch } = await poll(client, many.id)
      assert.deepStrictEqual(batch.errors?.data?.map((e) => [e.code, e.line]), [["invalid_json_line", 2], ["invalid_json_line", 3]])
    })
  })

  it("injects per-line HTTP failures into the error file (error: null, response.status_code, body.error), fresh draws on retry", async () => {
    const rows = Array.from({ length: 400 }, (_, i) => chatLine(i))
    await withEmulator(
      { linesPerSecond: 20_000, validationMs: 5, finalizingMs: 5, lineFailures: [{ status: 500, rate: 0.1 }, { status: 400, rate: 0.05 }] },
      async (client) => {
        const created = await submit(client, rows)
        const { batch } = await poll(client, created.id)
        assert.strictEqual(batch.status, "completed")
        const output = await content(client, batch.output_file_id)
        const errors = await content(client, batch.error_file_id)
        assert.strictEqual((await client.files.retrieve(batch.error_file_id!)).purpose, "batch_output")
        assert.strictEqual(output.length + errors.length, 400)
        assert.strictEqual(new Set([...output, ...errors].map((l) => l.custom_id)).size, 400)
        assert.deepStrictEqual(batch.request_counts, { total: 400, completed: output.length, failed: errors.length })
        const statuses = errors.map((l) => l.response.status_code)
        const n500 = statuses.filter((s) => s === 500).length
        const n400 = statuses.filter((s) => s === 400).length
        assert.strictEqual(n500 + n400, errors.length)
        assert.isTrue(n500 > 20 && n500 < 65, `500s: ${n500}`)
        assert.isTrue(n400 > 5 && n400 < 40, `400s: ${n400}`)
        for (const line of errors) {
          assert.isNull(line.error)
          assert.match(line.response.request_id, /^req_/)
          const e = line.response.body.error
          assert.hasAllKeys(e, ["message", "type", "param", "code"])
          assert.strictEqual(e.type, line.response.status_code === 500 ? "server_error" : "invalid_request_error")
        }
        // the failed lines, retried in a new batch, draw afresh
        const failedIds = new Set(errors.map((l) => l.custom_id))
        const retry = await submit(client, rows.filter((r) => failedIds.has(r.custom_id)))
        const { batch: again } = await poll(client, retry.id)
        assert.isAbove(again.request_counts!.completed, errors.length / 2)
        // the same lines in the same batch always fail the same way (deterministic)
        assert.deepStrictEqual(await content(client, batch.error_file_id), errors)
      }
    )
  })

  it("expires a slow batch with partial output and batch_expired lines in the error file", async () => {
    const rows = Array.from({ length: 300 }, (_, i) => chatLine(i))
    await withEmulator({ linesPerSecond: 400, validationMs: 10, completionWindowMs: 300 }, async (client) => {
      const created = await submit(client, rows)
      const { batch, seen } = await poll(client, created.id)
      assert.strictEqual(batch.status, "expired")
      assert.include(seen, "in_progress")
      assert.isNumber(batch.expired_at)
      assert.isNull(batch.completed_at)
      const output = await content(client, batch.output_file_id)
      const errors = await content(client, batch.error_file_id)
      // 290 ms of processing at 400 lines/s
      assert.strictEqual(output.length, Math.floor((290 * 400) / 1000))
      assert.strictEqual(output.length + errors.length, 300)
      assert.deepStrictEqual(batch.request_counts, { total: 300, completed: output.length, failed: errors.length })
      const processed = new Set(output.map((l) => l.custom_id))
      for (let i = 0; i < 300; i++) assert.strictEqual(processed.has(`req-${i}`), i < output.length, "requests are processed in input order")
      for (const line of errors) {
        assert.isNull(line.response)
        assert.deepStrictEqual(line.error, {
          code: "batch_expired",
          message: "This request could not be executed before the completion window expired."
        })
      }
    })
  })

  it("cancels: cancelling → cancelled, partial output and batch_cancelled lines; cancelling an ended batch is a BadRequestError", async () => {
    const rows = Array.from({ length: 200 }, (_, i) => chatLine(i))
    // validation takes 400 ms, so the early cancel below lands while the batch validates even on a busy machine
    await withEmulator({ linesPerSecond: 500, validationMs: 400, cancellingMs: 50 }, async (client) => {
      const created = await submit(client, rows)
      await poll(client, created.id, (b) => (b.request_counts?.completed ?? 0) >= 20)
      const cancelling = await client.batches.cancel(created.id)
      assert.strictEqual(cancelling.status, "cancelling")
      assert.isNumber(cancelling.cancelling_at)
      assert.strictEqual((await client.batches.cancel(created.id)).status, "cancelling", "a second cancel is harmless")
      const { batch } = await poll(client, created.id)
      assert.strictEqual(batch.status, "cancelled")
      assert.isNumber(batch.cancelled_at)
      const output = await content(client, batch.output_file_id)
      const errors = await content(client, batch.error_file_id)
      assert.isAtLeast(output.length, 20)
      assert.isBelow(output.length, 200)
      assert.strictEqual(output.length + errors.length, 200)
      assert.deepStrictEqual(batch.request_counts, { total: 200, completed: output.length, failed: errors.length })
      for (const line of errors) {
        assert.isNull(line.response)
        assert.strictEqual(line.error.code, "batch_cancelled")
      }
      const error = await client.batches.cancel(created.id).catch((e) => e)
      assert.instanceOf(error, OpenAI.BadRequestError)
      assert.match(error.message, /Cannot cancel a batch with status 'cancelled'/)
      // cancelled while validating: no output at all
      const early = await submit(client, rows.slice(0, 5))
      assert.strictEqual((await client.batches.cancel(early.id)).status, "cancelling")
      const { batch: cancelledEarly } = await poll(client, early.id)
      assert.strictEqual(cancelledEarly.status, "cancelled")
      assert.isNull(cancelledEarly.output_file_id)
    })
  })

  it("lists batches newest first with limit/after (and SDK auto-pagination); lists, retrieves and deletes files", async () => {
    await withEmulator({ validationMs: 5 }, async (client) => {
      const ids: Array<string> = []
      for (let i = 0; i < 7; i++) ids.push((await submit(client, [chatLine(i)])).id)
      const newestFirst = [...ids].reverse()
      const page1 = await client.batches.list({ limit: 3 })
      assert.deepStrictEqual(page1.data.map((b) => b.id), newestFirst.slice(0, 3))
      assert.isTrue(page1.has_more)
      const page2 = await client.batches.list({ limit: 3, after: page1.data[2]!.id })
      assert.deepStrictEqual(page2.data.map((b) => b.id), newestFirst.slice(3, 6))
      const page3 = await client.batches.list({ limit: 3, after: page2.data[2]!.id })
      assert.deepStrictEqual(page3.data.map((b) => b.id), newestFirst.slice(6))
      assert.isFalse(page3.has_more)
      const all: Array<string> = []
      for await (const b of client.batches.list({ limit: 2 })) all.push(b.id)
      assert.deepStrictEqual(all, newestFirst)
      assert.strictEqual((await client.batches.list()).data.length, 7)
      const tooMany = await client.batches.list({ limit: 101 }).catch((e) => e)
      assert.instanceOf(tooMany, OpenAI.BadRequestError)

      // output files exist once each batch has ended (states advance when a batch is read); waiting also keeps the
      // delete below from racing the (lazily started) validation of the batch whose input file it removes
      for (const id of ids) await poll(client, id)
      assert.strictEqual((await client.files.list({ purpose: "batch_output" })).data.length, 7)

      const files: Array<string> = []
      for await (const f of client.files.list({ purpose: "batch", limit: 3 })) files.push(f.id)
      assert.strictEqual(files.length, 7)
      const asc = await client.files.list({ purpose: "batch", order: "asc" })
      assert.deepStrictEqual(asc.data.map((f) => f.id), [...files].reverse())
      const deleted = await client.files.delete(files[0]!)
      assert.deepStrictEqual(deleted, { id: files[0]!, object: "file", deleted: true })
      assert.instanceOf(await client.files.retrieve(files[0]!).catch((e) => e), OpenAI.NotFoundError)
      assert.instanceOf(await client.files.content(files[0]!).catch((e) => e), OpenAI.NotFoundError)
      assert.strictEqual((await client.files.list({ purpose: "batch" })).data.length, 6)
    })
  })

  it("speaks the API's errors: 404 NotFoundError, 401 without a key, 400 for bad uploads and bad create requests", async () => {
    await withEmulator({ maxFileBytes: 1_000 }, async (client, emulator) => {
      const missing = await client.batches.retrieve("batch_nope").catch((e) => e)
      assert.instanceOf(missing, OpenAI.NotFoundError)
      assert.strictEqual(missing.status, 404)
      assert.strictEqual(missing.type, "invalid_request_error")
      assert.instanceOf(await client.batches.cancel("batch_nope").catch((e) => e), OpenAI.NotFoundError)
      assert.instanceOf(await client.files.retrieve("file-nope").catch((e) => e), OpenAI.NotFoundError)

      const anonymous = new OpenAI({ apiKey: "unused", baseURL: emulator.url, maxRetries: 0, defaultHeaders: { Authorization: null } })
      const unauthorized = await anonymous.batches.list().catch((e) => e)
      assert.instanceOf(unauthorized, OpenAI.AuthenticationError)
      const raw = await fetch(`${emulator.url}/files`)
      assert.strictEqual(raw.status, 401)
      const body = (await raw.json()) as { error: object }
      assert.hasAllKeys(body.error, ["message", "type", "param", "code"])

      const wrongFormat = await client.files.create({ file: await toFile(Buffer.from("{}\n"), "batch.csv"), purpose: "batch" }).catch((e) => e)
      assert.instanceOf(wrongFormat, OpenAI.BadRequestError)
      assert.match(wrongFormat.message, /Invalid file format for Batch API\. Must be \.jsonl/)
      const tooLarge = await client.files.create({ file: await toFile(Buffer.alloc(2_000, 65), "big.jsonl"), purpose: "batch" }).catch((e) => e)
      assert.instanceOf(tooLarge, OpenAI.BadRequestError)
      assert.match(tooLarge.message, /File is too large\./)
      const userData = await client.files.create({ file: await toFile(Buffer.from("hello"), "notes.txt"), purpose: "user_data" })
      assert.strictEqual(userData.purpose, "user_data")

      const noFile = await client.batches.create({ input_file_id: "file-nope", endpoint: "/v1/chat/completions", completion_window: "24h" })
        .catch((e) => e)
      assert.instanceOf(noFile, OpenAI.NotFoundError)
      const file = await upload(client, [chatLine(0)])
      const create = (params: Record<string, unknown>) =>
        client.batches.create({ input_file_id: file.id, endpoint: "/v1/chat/completions", completion_window: "24h", ...params } as any)
          .catch((e) => e)
      assert.instanceOf(await create({ endpoint: "/v1/images/nope" }), OpenAI.BadRequestError)
      assert.instanceOf(await create({ completion_window: "48h" }), OpenAI.BadRequestError)
      assert.instanceOf(await create({ metadata: Object.fromEntries(Array.from({ length: 17 }, (_, i) => [`k${i}`, "v"])) }), OpenAI.BadRequestError)
      assert.instanceOf(await create({ metadata: { ["k".repeat(65)]: "v" } }), OpenAI.BadRequestError)
      assert.instanceOf(await create({ metadata: { k: "v".repeat(513) } }), OpenAI.BadRequestError)
      assert.instanceOf(await create({ input_file_id: userData.id }), OpenAI.BadRequestError)
      assert.strictEqual((await create({ metadata: { k: "v".repeat(512) } })).status, "validating")
    })
  })

  it("carries on after a restart on the same dir, mid-batch, with the same output; stats survive", async () => {
    const dir = tmp("restart")
    const rows = Array.from({ length: 150 }, (_, i) => chatLine(i))
    const knobs = { dir, linesPerSecond: 500, validationMs: 10 }
    const started = await withEmulator(knobs, async (client, emulator) => {
      const created = await submit(client, rows)
      const { batch } = await poll(client, created.id, (b) => b.status === "in_progress" && (b.request_counts?.completed ?? 0) > 0)
      assert.isBelow(batch.request_counts!.completed, 150)
      assert.deepStrictEqual(await Effect.runPromise(emulator.stats), { batchesCreated: 1, filesUploaded: 1, linesProcessed: 0 })
      return created.id
    })
    // a new emulator on the same folder (another port)
    const first = await withEmulator(knobs, async (client, emulator) => {
      const { batch } = await poll(client, started)
      assert.strictEqual(batch.status, "completed")
      assert.deepStrictEqual(batch.request_counts, { total: 150, completed: 150, failed: 0 })
      const text = await (await client.files.content(batch.output_file_id!)).text()
      const output = lines(text)
      assert.sameMembers(output.map((l) => l.custom_id), rows.map((r) => r.custom_id))
      for (const line of output) {
        const expected = expectedChat(rows.find((r) => r.custom_id === line.custom_id)!.body)
        assert.strictEqual(line.response.body.choices[0].message.content, expected.text)
      }
      assert.deepStrictEqual(await Effect.runPromise(emulator.stats), { batchesCreated: 1, filesUploaded: 1, linesProcessed: 150 })
      return text
    })
    // and once more: everything is still there, byte for byte
    await withEmulator(knobs, async (client, emulator) => {
      const batch = await client.batches.retrieve(started)
      assert.strictEqual(await (await client.files.content(batch.output_file_id!)).text(), first)
      assert.strictEqual((await client.batches.list()).data.length, 1)
      await submit(client, rows.slice(0, 3))
      assert.strictEqual((await Effect.runPromise(emulator.stats)).batchesCreated, 2)
    })
    fs.rmSync(dir, { recursive: true, force: true })
  })

  it("survives SIGKILL of the process that served it: a new serve on the same dir finishes the batch, deterministically", async () => {
    const dir = tmp("sigkill")
    const rows = Array.from({ length: 300 }, (_, i) => chatLine(i))
    const knobs = { dir, linesPerSecond: 600, validationMs: 10 }
    const script = [
      `import * as Emulator from ${JSON.stringify(path.resolve(import.meta.dirname, "../emulator/Emulator.ts"))}`,
      `import { Effect } from "effect"`,
      `Effect.runFork(Effect.scoped(Effect.flatMap(Emulator.serve(${JSON.stringify(knobs)}),`,
      `  (e) => Effect.andThen(Effect.sync(() => console.log(e.url)), Effect.never))))`
    ].join("\n")
    const child = spawn(process.execPath, ["--input-type=module", "-e", script], {
      cwd: path.resolve(import.meta.dirname, "../../../.."),
      stdio: ["ignore", "pipe", "pipe"]
    })
    let stderr = ""
    child.stderr.on("data", (d) => (stderr += d))
    const url = await new Promise<string>((resolve, reject) => {
      let out = ""
      child.stdout.on("data", (d) => {
        out += d
        const m = /http:\/\/\S+/.exec(out)
        if (m) resolve(m[0])
      })
      child.on("exit", () => reject(new Error(`emulator process exited: ${stderr}`)))
    })
    const client = new OpenAI({ apiKey: "test", baseURL: url, maxRetries: 0 })
    const created = await submit(client, rows)
    await poll(client, created.id, (b) => (b.request_counts?.completed ?? 0) > 10)
    child.kill("SIGKILL")
    await new Promise((r) => child.once("exit", r))
    // a copy of the folder, to check that the same batch gives the same bytes when processed twice
    const copy = tmp("sigkill-copy")
    fs.cpSync(dir, copy, { recursive: true })
    const outputOf = (folder: string) =>
      withEmulator({ ...knobs, dir: folder }, async (client) => {
        const { batch } = await poll(client, created.id)
        assert.strictEqual(batch.status, "completed")
        assert.deepStrictEqual(batch.request_counts, { total: 300, completed: 300, failed: 0 })
        return (await client.files.content(batch.output_file_id!)).text()
      })
    const text = await outputOf(dir)
    const output = lines(text)
    assert.sameMembers(output.map((l) => l.custom_id), rows.map((r) => r.custom_id))
    for (const line of output) {
      const expected = expectedChat(rows.find((r) => r.custom_id === line.custom_id)!.body)
      assert.strictEqual(line.response.body.choices[0].message.content, expected.text)
    }
    assert.strictEqual(await outputOf(copy), text)
  })

  it("serves the synchronous chat and embeddings endpoints with the same engine", async () => {
    await withEmulator({}, async (client) => {
      const body = chatLine(0).body as any
      const completion = await client.chat.completions.create(body)
      assert.strictEqual(completion.choices[0]!.message.content, expectedChat(body).text)
      assert.strictEqual(completion.usage?.prompt_tokens, expectedChat(body).usage.inputTokens)
      // the SDK asks for base64 by default and decodes it: float32-exact vectors
      const embedding = await client.embeddings.create({ model: "text-embedding-3-large", input: ["alpha", "beta"] })
      assert.strictEqual(embedding.data.length, 2)
      assert.deepStrictEqual(Array.from(embedding.data[1]!.embedding), Engine.embed({ model: "text-embedding-3-large", input: "beta" }).vector)
      const bad = await client.chat.completions.create({ model: "m", messages: [] }).catch((e) => e)
      assert.instanceOf(bad, OpenAI.BadRequestError)
      // an input over the embedding models' 8,191 tokens is refused, as the API does, not answered and billed
      const long = "lorem ipsum dolor sit amet ".repeat(4_000)
      const tokens = Engine.embed({ model: "text-embedding-3-small", input: long }).usage.inputTokens
      assert.isAbove(tokens, 8_191)
      const tooLong = await client.embeddings.create({ model: "text-embedding-3-small", input: ["short", long] }).catch((e) => e)
      assert.instanceOf(tooLong, OpenAI.BadRequestError)
      assert.match((tooLong as Error).message, new RegExp(`maximum context length is 8192 tokens, however you requested ${tokens} tokens`))
    })
  })
})

// ===== fault knobs =====

const stats = (emulator: Emulator.Handle) => Effect.runPromise(emulator.stats)

/** reads a download to its end or its break: the bytes received, and the error that cut it if any */
const download = async (response: Response) => {
  const chunks: Array<Uint8Array> = []
  let error: unknown = undefined
  const reader = response.body!.getReader()
  try {
    while (true) {
      const { done, value } = await reader.read()
      if (done) break
      chunks.push(value)
    }
  } catch (e) {
    error = e
  }
  return { bytes: Buffer.concat(chunks), error }
}

describe("Emulator fault knobs (official openai SDK)", () => {
  it("endpointFaults: the first call to each endpoint fails with its status in the API's error shape (RateLimitError with retry-after, InternalServerError); refused calls change nothing", async () => {
    const endpointFaults = [
      { endpoint: "files.create", status: 503, times: 1 },
      { endpoint: "files.retrieve", status: 500, times: 1 },
      { endpoint: "files.content", status: 502, times: 1 },
      { endpoint: "files.list", status: 429, times: 1, retryAfter: 7 },
      { endpoint: "files.delete", status: 500, times: 1 },
      { endpoint: "batches.create", status: 503, times: 1 },
      { endpoint: "batches.retrieve", status: 429, times: 1 },
      { endpoint: "batches.list", status: 502, times: 1 },
      { endpoint: "batches.cancel", status: 500, times: 1 }
    ] as const
    // validating for a long time, so the batch can still be cancelled at the end
    await withEmulator({ validationMs: 30_000, endpointFaults }, async (client, emulator) => {
      const fault = async (call: Promise<unknown>, status: number, retryAfter: string | null = null) => {
        const e = await call.then(() => undefined, (e) => e)
        assert.instanceOf(e, status === 429 ? OpenAI.RateLimitError : OpenAI.InternalServerError, String(e))
        assert.strictEqual(e.status, status)
        assert.hasAllKeys(e.error, ["message", "type", "param", "code"])
        assert.strictEqual(e.type, status === 429 ? "requests" : "server_error")
        assert.strictEqual(e.headers.get("retry-after"), status === 429 ? retryAfter : null)
      }
      const rows = [chatLine(0), chatLine(1)]
      await fault(upload(client, rows), 503)
      assert.strictEqual((await stats(emulator)).filesUploaded, 0, "a refused upload stores nothing")
      const file = await upload(client, rows)

      await fault(client.files.retrieve(file.id), 500)
      assert.strictEqual((await client.files.retrieve(file.id)).id, file.id)
      await fault(client.files.content(file.id), 502)
      assert.strictEqual(await (await client.files.content(file.id)).text(), jsonl(rows))
      await fault(client.files.list(), 429, "7")
      assert.deepStrictEqual((await client.files.list()).data.map((f) => f.id), [file.id])

      const create = () => client.batches.create({ input_file_id: file.id, endpoint: "/v1/chat/completions", completion_window: "24h" })
      await fault(create(), 503)
      assert.strictEqual((await stats(emulator)).batchesCreated, 0, "a refused create creates no batch")
      const batch = await create()
      await fault(client.batches.retrieve(batch.id), 429, "0")
      assert.strictEqual((await client.batches.retrieve(batch.id)).status, "validating")
      await fault(client.batches.list(), 502)
      assert.deepStrictEqual((await client.batches.list()).data.map((b) => b.id), [batch.id])
      await fault(client.batches.cancel(batch.id), 500)
      assert.strictEqual((await client.batches.retrieve(batch.id)).status, "validating", "a refused cancel cancels nothing")
      assert.strictEqual((await client.batches.cancel(batch.id)).status, "cancelling")

      await fault(client.files.delete(file.id), 500)
      assert.strictEqual((await client.files.retrieve(file.id)).id, file.id, "a refused delete deletes nothing")
      assert.isTrue((await client.files.delete(file.id)).deleted)
      assert.strictEqual((await stats(emulator)).batchesCreated, 1)
    })
  })

  it("endpointFaults: '*' with a rate fails a deterministic fraction of calls to every endpoint (same seed, same calls fail); the SDK's retries honour retry-after", async () => {
    const pattern = (seed: number) =>
      withEmulator({ seed, endpointFaults: [{ endpoint: "*", status: 500, rate: 0.3 }] }, async (client) => {
        const out: Array<string> = []
        for (let i = 0; i < 80; i++) {
          const call = i % 2 === 0 ? client.batches.list() : client.files.list()
          out.push(await call.then(
            () => "ok",
            (e) => (e instanceof OpenAI.InternalServerError && e.status === 500 ? "500" : `unexpected ${String(e)}`)
          ))
        }
        return out
      })
    const [a, b, c] = [await pattern(1), await pattern(1), await pattern(2)]
    assert.deepStrictEqual(a, b, "the same seed fails the same calls")
    assert.notDeepEqual(a, c, "another seed fails other calls")
    assert.sameMembers([...new Set(a)], ["ok", "500"])
    const failed = a.filter((s) => s === "500").length
    assert.isTrue(failed >= 10 && failed <= 40, `${failed} of 80 calls failed`)
    assert.isTrue(a.some((s, i) => s === "500" && i % 2 === 0) && a.some((s, i) => s === "500" && i % 2 === 1), "both endpoints fail")

    // a client that retries gets through two 429s (retry-after: 0) without waiting
    await withEmulator({ endpointFaults: [{ endpoint: "batches.list", status: 429, times: 2 }] }, async (_client, emulator) => {
      const statuses: Array<number> = []
      const retrying = new OpenAI({
        apiKey: "test",
        baseURL: emulator.url,
        maxRetries: 2,
        fetch: async (input, init) => {
          const response = await fetch(input, init)
          statuses.push(response.status)
          return response
        }
      })
      const started = Date.now()
      assert.deepStrictEqual((await retrying.batches.list()).data, [])
      assert.deepStrictEqual(statuses, [429, 429, 200])
      assert.isBelow(Date.now() - started, 5_000)
    })
  })

  it("createSucceedsThenFails: the first creates make the batch and still answer 500, so the batch is found by its metadata; a retrying SDK makes duplicates", async () => {
    await withEmulator({ createSucceedsThenFails: 2, validationMs: 5 }, async (client, emulator) => {
      const file = await upload(client, [chatLine(0)])
      const create = (tag: string) =>
        client.batches.create({ input_file_id: file.id, endpoint: "/v1/chat/completions", completion_window: "24h", metadata: { tag } })
      const first = await create("a").catch((e) => e)
      assert.instanceOf(first, OpenAI.InternalServerError)
      assert.strictEqual(first.status, 500)
      const listed = await client.batches.list()
      assert.deepStrictEqual(listed.data.map((b) => b.metadata), [{ tag: "a" }], "the create went through")
      assert.strictEqual((await stats(emulator)).batchesCreated, 1)
      assert.instanceOf(await create("b").catch((e) => e), OpenAI.InternalServerError)
      const third = await create("c")
      assert.strictEqual(third.status, "validating")
      assert.strictEqual((await stats(emulator)).batchesCreated, 3)
      // the batches that "failed" run like any other
      for (const b of listed.data) assert.strictEqual((await poll(client, b.id)).batch.status, "completed")
    })
    await withEmulator({ createSucceedsThenFails: 2 }, async (_client, emulator) => {
      const retrying = new OpenAI({ apiKey: "test", baseURL: emulator.url, maxRetries: 2 })
      const file = await upload(retrying, [chatLine(0)])
      const batch = await retrying.batches.create({
        input_file_id: file.id,
        endpoint: "/v1/chat/completions",
        completion_window: "24h",
        metadata: { tag: "once" }
      })
      const all = (await retrying.batches.list()).data
      assert.strictEqual((await stats(emulator)).batchesCreated, 3, "one create call, three batches")
      assert.deepStrictEqual(all.map((b) => b.metadata), [{ tag: "once" }, { tag: "once" }, { tag: "once" }])
      assert.strictEqual(all[0]!.id, batch.id)
    })
  })

  it("uploadBytesPerSecond: each upload is read at that rate, as over a link to the provider, and arrives whole", async () => {
    await withEmulator({ uploadBytesPerSecond: 400_000 }, async (client) => {
      const rows = Array.from({ length: 400 }, (_, i) => chatLine(i))
      const text = jsonl(rows)
      // ~0.5 s of bytes at 400 kB/s
      assert.isAtLeast(Buffer.byteLength(text), 180_000)
      const expectedMs = (Buffer.byteLength(text) / 400_000) * 1000
      const started = Date.now()
      const one = await upload(client, rows)
      assert.isAtLeast(Date.now() - started, expectedMs * 0.9, "one upload takes its bytes over the rate")
      assert.strictEqual(await (await client.files.content(one.id)).text(), text, "and arrives whole")
      // three at once: each is read at the rate, and each arrives whole
      const three = await Promise.all([0, 1, 2].map(async () => {
        const t0 = Date.now()
        const file = await upload(client, rows)
        return { file, ms: Date.now() - t0 }
      }))
      for (const { file, ms } of three) {
        assert.isAtLeast(ms, expectedMs * 0.9)
        assert.strictEqual(await (await client.files.content(file.id)).text(), text)
      }
    })
  })

  it("resetDownloads: the first downloads send afterBytes bytes (at most all but one) and then drop the connection", async () => {
    await withEmulator({ resetDownloads: { times: 3, afterBytes: 100 } }, async (client) => {
      const rows = Array.from({ length: 30 }, (_, i) => chatLine(i))
      const text = jsonl(rows)
      const file = await upload(client, rows)
      const tiny = await upload(client, "x".repeat(40), "tiny.jsonl")

      // the headers arrive with the whole length, then the body breaks off
      const first = await client.files.content(file.id)
      assert.strictEqual(first.status, 200)
      assert.strictEqual(first.headers.get("content-length"), String(Buffer.byteLength(text)))
      const broken = await first.text().catch((e) => e)
      assert.instanceOf(broken, TypeError)
      const second = await download(await client.files.content(file.id))
      assert.isDefined(second.error, "the second download breaks too")
      assert.strictEqual(second.bytes.length, 100)
      assert.strictEqual(second.bytes.toString("utf8"), text.slice(0, 100))
      const short = await download(await client.files.content(tiny.id))
      assert.isDefined(short.error)
      assert.strictEqual(short.bytes.toString("utf8"), "x".repeat(39), "a file shorter than afterBytes loses its last byte")

      // the next ones are whole
      const whole = await download(await client.files.content(file.id))
      assert.isUndefined(whole.error)
      assert.strictEqual(whole.bytes.toString("utf8"), text)
      assert.strictEqual(await (await client.files.content(tiny.id)).text(), "x".repeat(40))
    })
  })

  it("notFoundAfterCreateMs: retrieving a batch answers 404 for that long after its creation, then the batch is there, further along", async () => {
    await withEmulator({ notFoundAfterCreateMs: 1_500, validationMs: 5 }, async (client) => {
      const file = await upload(client, [chatLine(0), chatLine(1)])
      const started = Date.now()
      const created = await client.batches.create({ input_file_id: file.id, endpoint: "/v1/chat/completions", completion_window: "24h" })
      const missing = await client.batches.retrieve(created.id).catch((e) => e)
      assert.instanceOf(missing, OpenAI.NotFoundError)
      assert.strictEqual(missing.status, 404)
      assert.deepStrictEqual((await client.batches.list()).data.map((b) => b.id), [created.id], "the list already shows it")
      let found: Batch | undefined
      let misses = 1
      while (found === undefined) {
        await new Promise((r) => setTimeout(r, 100))
        found = await client.batches.retrieve(created.id).catch((e) => {
          assert.instanceOf(e, OpenAI.NotFoundError)
          misses++
          return undefined
        })
      }
      assert.isAtLeast(Date.now() - started, 1_500)
      assert.isAtLeast(misses, 2)
      assert.strictEqual((await poll(client, created.id)).batch.status, "completed")
    })
  })

  it("failBatches: the first `times` batches (and a seeded fraction with `rate`) go validating → failed with the given code and message, no line", async () => {
    const message =
      "Enqueued token limit reached for gpt-4o-mini in organization org-x. Limit: 2,000,000 enqueued tokens. Please try again once some in_progress batches have been completed."
    await withEmulator({ validationMs: 20, failBatches: { times: 1, code: "token_limit_exceeded", message } }, async (client) => {
      const doomed = await submit(client, [chatLine(0), chatLine(1)])
      assert.strictEqual(doomed.status, "validating")
      const { batch, seen } = await poll(client, doomed.id)
      assert.deepStrictEqual(seen, ["validating", "failed"])
      assert.deepStrictEqual(batch.errors, { object: "list", data: [{ code: "token_limit_exceeded", message, param: null, line: null }] })
      assert.isNumber(batch.failed_at)
      assert.isNull(batch.output_file_id)
      assert.isNull(batch.error_file_id)
      const next = await submit(client, [chatLine(0), chatLine(1)])
      assert.strictEqual((await poll(client, next.id)).batch.status, "completed", "only the first batch fails")
    })
    // a rate: which batches fail depends on the seed only; the default message for the code
    const outcomes = (seed: number) =>
      withEmulator({ seed, validationMs: 5, failBatches: { rate: 0.5, code: "token_limit_exceeded" } }, async (client) => {
        const ids: Array<string> = []
        for (let i = 0; i < 16; i++) ids.push((await submit(client, [chatLine(i)])).id)
        const out: Array<string> = []
        for (const id of ids) {
          const { batch } = await poll(client, id)
          if (batch.status === "failed") {
            assert.strictEqual(batch.errors?.data?.[0]?.code, "token_limit_exceeded")
            assert.match(batch.errors?.data?.[0]?.message ?? "", /^Enqueued token limit reached for gpt-4o-mini .* Limit: 2,000,000 enqueued tokens/)
          }
          out.push(batch.status)
        }
        return out
      })
    const a = await outcomes(7)
    assert.deepStrictEqual(await outcomes(7), a)
    const failed = a.filter((s) => s === "failed").length
    assert.isTrue(failed >= 3 && failed <= 13, `${failed} of 16 failed`)
    assert.sameMembers([...new Set(a)], ["failed", "completed"])
  })

  it("enqueuedTokenLimit: a batch over the limit (with the in_progress ones) fails validation with token_limit_exceeded and no line; its halves get through one after the other", async () => {
    const rows = Array.from({ length: 20 }, (_, i) => chatLine(i))
    const tokens = (rs: ReadonlyArray<ReturnType<typeof chatLine>>) =>
      rs.reduce((sum, r) => sum + r.body.messages.reduce((s, m) => s + Engine.countTokens(m.content), 0), 0)
    const limit = Math.floor(tokens(rows) * 0.75)
    const [left, right] = [rows.slice(0, 10), rows.slice(10)]
    assert.isBelow(tokens(left), limit)
    assert.isBelow(tokens(right), limit)
    // 10 lines at 5 per second: the first half stays in progress for 2 s
    await withEmulator({ enqueuedTokenLimit: limit, validationMs: 20, linesPerSecond: 5 }, async (client) => {
      const whole = await poll(client, (await submit(client, rows)).id)
      assert.strictEqual(whole.batch.status, "failed")
      assert.deepStrictEqual(whole.batch.errors?.data, [{
        code: "token_limit_exceeded",
        message:
          `Enqueued token limit reached for gpt-4o-mini in organization org-emulator. Limit: ${limit.toLocaleString("en-US")} enqueued tokens. Please try again once some in_progress batches have been completed.`,
        param: null,
        line: null
      }])
      const first = await submit(client, left)
      await poll(client, first.id, (b) => b.status === "in_progress")
      const tooSoon = await poll(client, (await submit(client, right)).id)
      assert.strictEqual(tooSoon.batch.status, "failed", "the in_progress half counts against the limit")
      assert.strictEqual(tooSoon.batch.errors?.data?.[0]?.code, "token_limit_exceeded")
      assert.strictEqual((await poll(client, first.id)).batch.status, "completed")
      const second = await poll(client, (await submit(client, right)).id, (b) => b.status !== "validating")
      assert.strictEqual(second.batch.status, "in_progress", "once the first half is done, the second fits")
    })
  })

  it("lineErrors: non-HTTP error lines (response: null, error: {code, message}) in the error file, alongside lineFailures' HTTP lines", async () => {
    const rows = Array.from({ length: 400 }, (_, i) => chatLine(i))
    await withEmulator({
      validationMs: 5,
      lineFailures: [{ status: 500, rate: 0.1 }],
      lineErrors: [{ code: "request_timeout", rate: 0.1 }, { code: "batch_expired", rate: 0.05 }]
    }, async (client) => {
      const { batch } = await poll(client, (await submit(client, rows)).id)
      assert.strictEqual(batch.status, "completed")
      const output = await content(client, batch.output_file_id)
      const errors = await content(client, batch.error_file_id)
      assert.strictEqual(output.length + errors.length, 400)
      assert.deepStrictEqual(batch.request_counts, { total: 400, completed: output.length, failed: errors.length })
      const http = errors.filter((l) => l.error === null)
      const timeouts = errors.filter((l) => l.error?.code === "request_timeout")
      const expired = errors.filter((l) => l.error?.code === "batch_expired")
      assert.strictEqual(http.length + timeouts.length + expired.length, errors.length)
      assert.isTrue(http.length > 20 && http.length < 65, `500s: ${http.length}`)
      assert.isTrue(timeouts.length > 20 && timeouts.length < 65, `request_timeout: ${timeouts.length}`)
      assert.isTrue(expired.length > 5 && expired.length < 40, `batch_expired: ${expired.length}`)
      for (const line of http) assert.strictEqual(line.response.status_code, 500)
      for (const line of [...timeouts, ...expired]) {
        assert.hasAllKeys(line, ["id", "custom_id", "response", "error"])
        assert.isNull(line.response)
        assert.hasAllKeys(line.error, ["code", "message"])
        assert.isString(line.error.message)
        assert.isAbove(line.error.message.length, 0)
      }
      assert.strictEqual(expired[0].error.message, "This request could not be executed before the completion window expired.")
    })
  })

  it("dropLines: some lines are in neither the output nor the error file, while request_counts still count them", async () => {
    const rows = Array.from({ length: 300 }, (_, i) => chatLine(i))
    await withEmulator({ validationMs: 5, dropLines: 0.1, lineFailures: [{ status: 500, rate: 0.2 }] }, async (client) => {
      const { batch } = await poll(client, (await submit(client, rows)).id)
      assert.strictEqual(batch.status, "completed")
      const output = await content(client, batch.output_file_id)
      const errors = await content(client, batch.error_file_id)
      const present = new Set([...output, ...errors].map((l) => l.custom_id))
      assert.strictEqual(present.size, output.length + errors.length, "no line twice")
      const lost = rows.map((r) => r.custom_id).filter((id) => !present.has(id))
      assert.isTrue(lost.length >= 10 && lost.length <= 55, `${lost.length} of 300 lines lost`)
      for (const id of lost) {
        assert.isUndefined(output.find((l) => l.custom_id === id))
        assert.isUndefined(errors.find((l) => l.custom_id === id))
      }
      assert.strictEqual(batch.request_counts?.total, 300)
      assert.strictEqual(batch.request_counts!.completed + batch.request_counts!.failed, 300, "the counts do not show the loss")
      assert.isAbove(batch.request_counts!.completed, output.length)
    })
  })

  it("emptyErrorFileId: a batch with no failed line reports error_file_id \"\" (null while running, a real file when lines fail)", async () => {
    await withEmulator({ validationMs: 5, linesPerSecond: 200, emptyErrorFileId: true }, async (client) => {
      const created = await submit(client, Array.from({ length: 40 }, (_, i) => chatLine(i)))
      const running = await poll(client, created.id, (b) => b.status === "in_progress")
      assert.isNull(running.batch.error_file_id)
      const { batch } = await poll(client, created.id)
      assert.strictEqual(batch.status, "completed")
      assert.strictEqual(batch.error_file_id, "")
      assert.isString(batch.output_file_id)
      assert.strictEqual((await content(client, batch.output_file_id)).length, 40)
    })
    await withEmulator({ validationMs: 5, emptyErrorFileId: true, lineFailures: [{ status: 400, rate: 0.5 }] }, async (client) => {
      const { batch } = await poll(client, (await submit(client, Array.from({ length: 40 }, (_, i) => chatLine(i)))).id)
      assert.match(batch.error_file_id ?? "", /^file-/)
    })
  })

  it("a completed batch whose every line failed has output_file_id null and only an error file", async () => {
    await withEmulator({ validationMs: 5, lineFailures: [{ status: 500, rate: 1 }] }, async (client) => {
      const { batch } = await poll(client, (await submit(client, Array.from({ length: 9 }, (_, i) => chatLine(i)))).id)
      assert.strictEqual(batch.status, "completed")
      assert.isNull(batch.output_file_id)
      assert.match(batch.error_file_id ?? "", /^file-/)
      assert.deepStrictEqual(batch.request_counts, { total: 9, completed: 0, failed: 9 })
      const errors = await content(client, batch.error_file_id)
      assert.strictEqual(errors.length, 9)
      for (const line of errors) assert.strictEqual(line.response.status_code, 500)
    })
  })

  it("slow progression: request_counts.completed grows while the batch is in_progress", async () => {
    // 60 lines at 40 per second: 1.5 s in progress, polled every 100 ms
    await withEmulator({ validationMs: 5, linesPerSecond: 40, finalizingMs: 100 }, async (client) => {
      const created = await submit(client, Array.from({ length: 60 }, (_, i) => chatLine(i)))
      const counts: Array<number> = []
      while (true) {
        const batch = await client.batches.retrieve(created.id)
        if (batch.status === "in_progress") {
          assert.strictEqual(batch.request_counts?.total, 60)
          assert.strictEqual(batch.request_counts?.failed, 0)
          counts.push(batch.request_counts!.completed)
        } else if (batch.status !== "validating") break
        await new Promise((r) => setTimeout(r, 100))
      }
      assert.isAtLeast(new Set(counts).size, 4, `counts seen: ${counts.join(", ")}`)
      for (let i = 1; i < counts.length; i++) assert.isAtLeast(counts[i]!, counts[i - 1]!, "never decreases")
      assert.isBelow(counts[0]!, counts.at(-1)!)
      assert.isBelow(counts.at(-1)!, 60 + 1)
      assert.strictEqual((await poll(client, created.id)).batch.request_counts?.completed, 60)
    })
  })
})

describe("Emulator.serve", () => {
  it.live("reports batches created, files uploaded and lines processed", () =>
    Effect.gen(function*() {
      const emulator = yield* Emulator.serve({ validationMs: 1, finalizingMs: 1 })
      assert.deepStrictEqual(yield* emulator.stats, { batchesCreated: 0, filesUploaded: 0, linesProcessed: 0 })
      const client = new OpenAI({ apiKey: "test", baseURL: emulator.url, maxRetries: 0 })
      const id = yield* Effect.promise(async () => (await submit(client, [chatLine(0), chatLine(1)])).id)
      yield* Effect.promise(() => poll(client, id))
      assert.deepStrictEqual(yield* emulator.stats, { batchesCreated: 1, filesUploaded: 1, linesProcessed: 2 })
      assert.isTrue(fs.existsSync(emulator.dir))
    }).pipe(Effect.scoped))

  it.live("removes its temp folder when the scope closes, keeps a given one", () =>
    Effect.gen(function*() {
      const temp = yield* Effect.scoped(Effect.map(Emulator.serve(), (e) => e.dir))
      assert.isFalse(fs.existsSync(temp))
      const dir = tmp("kept")
      yield* Effect.scoped(Emulator.serve({ dir }))
      assert.isTrue(fs.existsSync(path.join(dir, "batches")))
    }))

  it.live("fails with EmulatorError on knobs that cannot work (an unknown endpoint, a status that is no error)", () =>
    Effect.gen(function*() {
      const unknown = yield* Effect.flip(Emulator.serve({ endpointFaults: [{ endpoint: "batch.create" as any, status: 500 }] }))
      assert.strictEqual(unknown._tag, "EmulatorError")
      assert.match(unknown.message, /endpointFaults\[0\]\.endpoint/)
      const status = yield* Effect.flip(Emulator.serve({ endpointFaults: [{ endpoint: "*", status: 200 }] }))
      assert.match(status.message, /endpointFaults\[0\]\.status/)
    }).pipe(Effect.scoped))

  it.live("fails with EmulatorError when the port is taken", () =>
    Effect.gen(function*() {
      const first = yield* Emulator.serve()
      const port = Number(new URL(first.url).port)
      const error = yield* Effect.flip(Emulator.serve({ port }))
      assert.strictEqual(error._tag, "EmulatorError")
    }).pipe(Effect.scoped))
})
