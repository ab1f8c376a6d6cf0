/**
 * Conformance of the OpenAI emulator with OpenAI's published protocol: every
 * response the emulator sends through whole lifecycles (every batch status,
 * list pages, files, every kind of output and error line, every error
 * response, injected faults included) is recorded at the official SDK's
 * `fetch`, and must
 *
 * - validate against the JSON Schemas extracted from OpenAI's OpenAPI spec
 *   (`fixtures/openai-batch-schemas.json`, nulls relaxed where the live API
 *   sends them, see its `$comment`s);
 * - validate against a closed copy of the same schemas (no property the spec
 *   does not declare, so a misspelt field cannot slip through);
 * - follow the line semantics of providers.md §1.4 (exactly one of `response`
 *   and `error`; 200 lines in the output file, the rest in the error file,
 *   HTTP errors as `response.body.error` with `error: null`);
 * - be accepted by the SDK: every call made here returns, or raises the
 *   `APIError` subclass of its status.
 *
 * Coverage is asserted too (all eight statuses, the nine endpoints, each line
 * kind, each error status), and a negative control feeds broken copies of real
 * responses to the same checker, which must reject them.
 */
import { assert, describe, it } from "@effect/vitest"
import { Ajv2020 } from "ajv/dist/2020.js"
import type { ValidateFunction } from "ajv/dist/2020.js"
import { Effect } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import OpenAI, { toFile } from "openai"
import type { Batch } from "openai/resources/batches"
import * as Emulator from "../emulator/Emulator.ts"

// ===== the schemas =====

const bundle = JSON.parse(fs.readFileSync(path.join(import.meta.dirname, "fixtures/openai-batch-schemas.json"), "utf8"))

/** a copy of a schema where every object schema that lists properties and says nothing of others forbids others */
const closed = (node: unknown): unknown => {
  if (Array.isArray(node)) return node.map(closed)
  if (typeof node !== "object" || node === null) return node
  const out: Record<string, unknown> = {}
  for (const [key, value] of Object.entries(node)) out[key] = closed(value)
  if ("properties" in out && !("additionalProperties" in out)) out.additionalProperties = false
  return out
}

const ajv = new Ajv2020({ strict: true, strictTypes: false, allErrors: true })
// OpenAPI annotations the spec uses, which carry no validation
ajv.addKeyword("x-stainless-const")
ajv.addKeyword("x-oaiTypeLabel")
ajv.addKeyword("example")
ajv.addFormat("unixtime", { type: "number", validate: (n: number) => Number.isInteger(n) && n >= 0 })
ajv.addSchema(bundle, "spec")
ajv.addSchema(closed(bundle) as object, "closed")

type SchemaName =
  | "Batch"
  | "OpenAIFile"
  | "ListBatchesResponse"
  | "ListFilesResponse"
  | "DeleteFileResponse"
  | "ErrorResponse"
  | "BatchRequestOutput"

const validator = (variant: "spec" | "closed", name: SchemaName): ValidateFunction => {
  const v = ajv.getSchema(`${variant}#/$defs/${name}`)
  if (v === undefined) throw new Error(`no schema ${name}`)
  return v
}

/** what is wrong with a value against a schema, in the spec and in its closed copy */
const schemaProblems = (name: SchemaName, value: unknown): Array<string> => {
  const problems: Array<string> = []
  for (const variant of ["spec", "closed"] as const) {
    const v = validator(variant, name)
    if (!v(value)) problems.push(`${name} (${variant}): ${ajv.errorsText(v.errors)}`)
  }
  return problems
}

// ===== recording the SDK's traffic =====

interface Exchange {
  readonly method: string
  readonly path: string
  readonly status: number
  readonly headers: Headers
  text?: string
}

/** a `fetch` for the SDK that keeps a copy of every response */
const recorder = () => {
  const exchanges: Array<Exchange> = []
  const reads: Array<Promise<unknown>> = []
  const recordingFetch = async (input: string | URL | Request, init?: RequestInit): Promise<Response> => {
    const response = await fetch(input, init)
    const url = new URL(input instanceof Request ? input.url : String(input))
    // the SDK probes its fetch with `data:,` URLs: not traffic
    if (url.protocol !== "http:") return response
    const exchange: Exchange = {
      method: (init?.method ?? (input instanceof Request ? input.method : "GET")).toUpperCase(),
      path: url.pathname,
      status: response.status,
      headers: response.headers
    }
    exchanges.push(exchange)
    reads.push(response.clone().text().then((text) => (exchange.text = text)))
    return response
  }
  const client = (emulator: Emulator.Handle, options: { readonly defaultHeaders?: Record<string, string | null> } = {}) =>
    new OpenAI({ apiKey: "test", baseURL: emulator.url, maxRetries: 0, fetch: recordingFetch, ...options })
  return { exchanges, client, settled: () => Promise.all(reads) }
}

// ===== the checker =====

const TERMINAL = new Set(["completed", "failed", "expired", "cancelled"])

/** what the checker saw, for the coverage assertions */
interface Seen {
  readonly operations: Set<string>
  readonly statuses: Set<string>
  readonly errorStatuses: Set<number>
  readonly lineKinds: Set<string>
  readonly listShapes: Set<string>
  /** output and error file ids named by batches, and which of the two each is */
  readonly resultFiles: Map<string, "output" | "error">
}

const newSeen = (): Seen => ({
  operations: new Set(),
  statuses: new Set(),
  errorStatuses: new Set(),
  lineKinds: new Set(),
  listShapes: new Set(),
  resultFiles: new Map()
})

const ROUTES: ReadonlyArray<readonly [string, RegExp, string, SchemaName | "content"]> = [
  ["POST", /^\/v1\/files$/, "files.create", "OpenAIFile"],
  ["GET", /^\/v1\/files$/, "files.list", "ListFilesResponse"],
  ["GET", /^\/v1\/files\/[^/]+$/, "files.retrieve", "OpenAIFile"],
  ["DELETE", /^\/v1\/files\/[^/]+$/, "files.delete", "DeleteFileResponse"],
  ["GET", /^\/v1\/files\/[^/]+\/content$/, "files.content", "content"],
  ["POST", /^\/v1\/batches$/, "batches.create", "Batch"],
  ["GET", /^\/v1\/batches$/, "batches.list", "ListBatchesResponse"],
  ["GET", /^\/v1\/batches\/[^/]+$/, "batches.retrieve", "Batch"],
  ["POST", /^\/v1\/batches\/[^/]+\/cancel$/, "batches.cancel", "Batch"]
]

const noteBatch = (seen: Seen, batch: any) => {
  seen.statuses.add(batch.status)
  if (typeof batch.output_file_id === "string" && batch.output_file_id !== "") seen.resultFiles.set(batch.output_file_id, "output")
  if (typeof batch.error_file_id === "string" && batch.error_file_id !== "") seen.resultFiles.set(batch.error_file_id, "error")
}

/** the problems of one line of an output or error file, against the schema and providers.md §1.4 */
const lineProblems = (seen: Seen, text: string, file: "output" | "error"): Array<string> => {
  let line: any
  try {
    line = JSON.parse(text)
  } catch {
    return [`a ${file} line is not JSON: ${text.slice(0, 200)}`]
  }
  const problems = schemaProblems("BatchRequestOutput", line)
  if (problems.length > 0) return problems
  if ((line.response === null) === (line.error === null)) return [`exactly one of response and error must be null: ${text.slice(0, 200)}`]
  if (line.response !== null) {
    const status = line.response.status_code
    if (file === "output" && status !== 200) problems.push(`an output line with status ${status}`)
    if (file === "error" && status < 400) problems.push(`an error line with status ${status}`)
    if (status >= 400) problems.push(...schemaProblems("ErrorResponse", line.response.body).map((p) => `line body: ${p}`))
    seen.lineKinds.add(status === 200 ? `success:${line.response.body.object}` : `http:${status}`)
  } else {
    if (file === "output") problems.push("an output line without a response")
    seen.lineKinds.add(`error:${line.error.code}`)
  }
  return problems
}

/** the problems of one recorded response; fills `seen` */
const exchangeProblems = (seen: Seen, x: Exchange): Array<string> => {
  const where = `${x.method} ${x.path} → ${x.status}`
  const route = ROUTES.find(([method, pattern]) => method === x.method && pattern.test(x.path))
  if (route === undefined && x.status < 400) return [`${where}: not an endpoint of the Files or Batch API`]
  if (route !== undefined) seen.operations.add(route[2])
  const problems: Array<string> = []
  if (x.headers.get("x-request-id") === null) problems.push(`${where}: no x-request-id header`)
  if (x.text === undefined) return [...problems, `${where}: the body was not read`]
  const json = x.status >= 400 || route![3] !== "content"
  if (json && !(x.headers.get("content-type") ?? "").startsWith("application/json")) {
    problems.push(`${where}: content-type ${x.headers.get("content-type")}`)
  }
  if (x.status >= 400) {
    seen.errorStatuses.add(x.status)
    if (x.status === 429 && x.headers.get("retry-after") === null) problems.push(`${where}: a 429 without retry-after`)
  } else if (x.status !== 200) {
    problems.push(`${where}: the API answers 200`)
  }
  if (!json) {
    const file = seen.resultFiles.get(x.path.split("/")[3]!)
    if (file === undefined) return problems // an uploaded file: the bytes as they were sent
    for (const text of x.text.split("\n")) if (text.length > 0) problems.push(...lineProblems(seen, text, file).map((p) => `${where}: ${p}`))
    return problems
  }
  let body: any
  try {
    body = JSON.parse(x.text)
  } catch {
    return [...problems, `${where}: the body is not JSON`]
  }
  if (typeof body !== "object" || body === null || Array.isArray(body)) return [...problems, `${where}: the body is not an object`]
  const name: SchemaName = x.status >= 400 ? "ErrorResponse" : (route![3] as SchemaName)
  problems.push(...schemaProblems(name, body).map((p) => `${where}: ${p}`))
  if (name === "Batch") noteBatch(seen, body)
  if (name === "ListBatchesResponse" || name === "ListFilesResponse") {
    seen.listShapes.add(`${name}:${body.data.length === 0 ? "empty" : body.has_more ? "has_more" : "last"}`)
    if (name === "ListBatchesResponse") for (const b of body.data) noteBatch(seen, b)
  }
  return problems
}

// ===== scenario helpers =====

const jsonl = (rows: ReadonlyArray<unknown>) => rows.map((r) => JSON.stringify(r)).join("\n") + "\n"

const chatLine = (i: number) => ({
  custom_id: `chat-${i}`,
  method: "POST",
  url: "/v1/chat/completions",
  body: { model: "gpt-4o-mini", messages: [{ role: "user", content: `Ticket ${i}: I was charged twice, please refund` }], max_completion_tokens: 50 }
})

const embeddingLine = (i: number) => ({
  custom_id: `emb-${i}`,
  method: "POST",
  url: "/v1/embeddings",
  body: { model: "text-embedding-3-small", input: `text ${i}`, dimensions: 8 }
})

const upload = async (client: OpenAI, content: string, name = "batch.jsonl") =>
  client.files.create({ file: await toFile(Buffer.from(content), name), purpose: "batch" })

/** the rejection of a call: an `APIError` of the expected class and status (the SDK understood the error body) */
const rejected = async (call: Promise<unknown>, errorClass: new(...args: Array<any>) => Error, status: number) => {
  const error: unknown = await call.then(() => undefined, (e) => e)
  assert.instanceOf(error, errorClass, String(error))
  assert.instanceOf(error, OpenAI.APIError)
  assert.strictEqual(error.status, status)
  assert.isString((error.error as { message?: unknown } | undefined)?.message)
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

const withEmulator = <A>(options: Emulator.Options, f: (emulator: Emulator.Handle) => Promise<A>): Promise<A> =>
  Effect.runPromise(Effect.scoped(Effect.flatMap(Emulator.serve(options), (e) => Effect.promise(() => f(e)))))

// ===== the scenarios =====

/** a whole lifecycle of every kind: completed (chat and embeddings), failed, expired, cancelled, with every line kind */
const lifecycle = (rec: ReturnType<typeof recorder>) =>
  withEmulator({
    seed: 3,
    validationMs: 150,
    linesPerSecond: 200,
    finalizingMs: 600,
    cancellingMs: 300,
    completionWindowMs: 2_000,
    lineFailures: [{ status: 500, rate: 0.1 }, { status: 400, rate: 0.1 }],
    lineErrors: [{ code: "request_timeout", rate: 0.1 }]
  }, async (emulator) => {
    const client = rec.client(emulator)
    const emptyBatches = await client.batches.list()
    assert.deepStrictEqual(emptyBatches.data, [])
    assert.deepStrictEqual((await client.files.list()).data, [])

    const chat = await upload(client, jsonl(Array.from({ length: 100 }, (_, i) => chatLine(i))))
    const embeddings = await upload(client, jsonl(Array.from({ length: 10 }, (_, i) => embeddingLine(i))))
    const slow = await upload(client, jsonl(Array.from({ length: 1_000 }, (_, i) => chatLine(i))))
    const cancelMe = await upload(client, jsonl(Array.from({ length: 300 }, (_, i) => chatLine(i))))
    const broken = await upload(client, [JSON.stringify(chatLine(0)), "{not json"].join("\n"))
    const notes = await client.files.create({ file: await toFile(Buffer.from("hello"), "notes.txt"), purpose: "user_data" })
    assert.strictEqual((await client.files.retrieve(chat.id)).id, chat.id)
    assert.strictEqual(await (await client.files.content(broken.id)).text(), [JSON.stringify(chatLine(0)), "{not json"].join("\n"))

    const create = (file: string, endpoint: "/v1/chat/completions" | "/v1/embeddings" = "/v1/chat/completions") =>
      client.batches.create({ input_file_id: file, endpoint, completion_window: "24h", metadata: { suite: "conformance" } })
    const completed = await create(chat.id)
    assert.strictEqual(completed.status, "validating")
    const embedded = await create(embeddings.id, "/v1/embeddings")
    const expired = await create(slow.id)
    const cancelled = await create(cancelMe.id)
    const failed = await create(broken.id)

    // poll them all to their ends; cancel one once it runs
    const pending = new Set([completed.id, embedded.id, expired.id, cancelled.id, failed.id])
    const final = new Map<string, Batch>()
    let cancelSent = false
    const deadline = Date.now() + 30_000
    while (pending.size > 0) {
      assert.isBelow(Date.now(), deadline, `still running: ${[...pending].join(", ")}`)
      for (const id of [...pending]) {
        const batch = await client.batches.retrieve(id)
        if (id === cancelled.id && !cancelSent && batch.status === "in_progress") {
          cancelSent = true
          assert.strictEqual((await client.batches.cancel(id)).status, "cancelling")
        }
        if (TERMINAL.has(batch.status)) {
          pending.delete(id)
          final.set(id, batch)
        }
      }
      await sleep(20)
    }
    assert.strictEqual(final.get(completed.id)!.status, "completed")
    assert.strictEqual(final.get(embedded.id)!.status, "completed")
    assert.strictEqual(final.get(expired.id)!.status, "expired")
    assert.strictEqual(final.get(cancelled.id)!.status, "cancelled")
    assert.strictEqual(final.get(failed.id)!.status, "failed")

    // every result file, its metadata and its lines
    for (const batch of final.values()) {
      for (const id of [batch.output_file_id, batch.error_file_id]) {
        if (typeof id !== "string" || id === "") continue
        assert.strictEqual((await client.files.retrieve(id)).purpose, "batch_output")
        assert.isAbove((await (await client.files.content(id)).text()).length, 0)
      }
    }

    // list pages: batches two at a time (auto-pagination), files three at a time
    const listed: Array<string> = []
    for await (const b of client.batches.list({ limit: 2 })) listed.push(b.id)
    assert.strictEqual(listed.length, 5)
    const files: Array<string> = []
    for await (const f of client.files.list({ limit: 3 })) files.push(f.id)
    assert.isAtLeast(files.length, 6)
    assert.isAtLeast((await client.files.list({ purpose: "batch_output", order: "asc" })).data.length, 4)

    // deleting a file, then every kind of refusal
    assert.deepStrictEqual(await client.files.delete(notes.id), { id: notes.id, object: "file", deleted: true })
    await rejected(client.files.retrieve(notes.id), OpenAI.NotFoundError, 404)
    await rejected(client.files.content(notes.id), OpenAI.NotFoundError, 404)
    await rejected(client.files.delete(notes.id), OpenAI.NotFoundError, 404)
    await rejected(client.batches.retrieve("batch_nope"), OpenAI.NotFoundError, 404)
    await rejected(client.batches.cancel("batch_nope"), OpenAI.NotFoundError, 404)
    await rejected(client.get("/nope"), OpenAI.NotFoundError, 404)
    await rejected(client.batches.cancel(completed.id), OpenAI.BadRequestError, 400)
    await rejected(client.batches.list({ limit: 101 }), OpenAI.BadRequestError, 400)
    await rejected(client.files.list({ order: "sideways" as "asc" }), OpenAI.BadRequestError, 400)
    await rejected(
      client.batches.create({ input_file_id: chat.id, endpoint: "/v1/chat/completions", completion_window: "48h" as "24h" }),
      OpenAI.BadRequestError,
      400
    )
    await rejected(create("file-nope"), OpenAI.NotFoundError, 404)
    await rejected(upload(client, "{}\n", "batch.csv"), OpenAI.BadRequestError, 400)
    await rejected(rec.client(emulator, { defaultHeaders: { Authorization: null } }).batches.list(), OpenAI.AuthenticationError, 401)
  })

/** injected faults: 429 and 5xx on endpoints, a create that fails after creating, a whole-batch failure, error_file_id "" */
const faults = (rec: ReturnType<typeof recorder>) =>
  withEmulator({
    validationMs: 5,
    finalizingMs: 5,
    emptyErrorFileId: true,
    createSucceedsThenFails: 1,
    failBatches: { times: 1, code: "token_limit_exceeded" },
    endpointFaults: [
      { endpoint: "files.create", status: 503, times: 1 },
      { endpoint: "files.list", status: 429, times: 1, retryAfter: 2 },
      { endpoint: "files.retrieve", status: 502, times: 1 },
      { endpoint: "files.content", status: 500, times: 1 },
      { endpoint: "files.delete", status: 503, times: 1 },
      { endpoint: "batches.create", status: 429, times: 1 },
      { endpoint: "batches.retrieve", status: 502, times: 1 },
      { endpoint: "batches.list", status: 503, times: 1 },
      { endpoint: "batches.cancel", status: 500, times: 1 }
    ]
  }, async (emulator) => {
    const client = rec.client(emulator)
    const content = jsonl(Array.from({ length: 5 }, (_, i) => chatLine(i)))
    await rejected(upload(client, content), OpenAI.InternalServerError, 503)
    const file = await upload(client, content)
    await rejected(client.files.list(), OpenAI.RateLimitError, 429)
    await rejected(client.files.retrieve(file.id), OpenAI.InternalServerError, 502)
    await rejected(client.files.content(file.id), OpenAI.InternalServerError, 500)
    const create = () => client.batches.create({ input_file_id: file.id, endpoint: "/v1/chat/completions", completion_window: "24h" })
    await rejected(create(), OpenAI.RateLimitError, 429)
    await rejected(create(), OpenAI.InternalServerError, 500) // created all the same, and doomed by failBatches
    const clean = await create()
    await rejected(client.batches.retrieve(clean.id), OpenAI.InternalServerError, 502)
    await rejected(client.batches.list(), OpenAI.InternalServerError, 503)
    await rejected(client.batches.cancel(clean.id), OpenAI.InternalServerError, 500)
    const ids = (await client.batches.list()).data.map((b) => b.id)
    assert.strictEqual(ids.length, 2)
    const statuses: Array<string> = []
    for (const id of ids) {
      let batch = await client.batches.retrieve(id)
      while (!TERMINAL.has(batch.status)) {
        await sleep(10)
        batch = await client.batches.retrieve(id)
      }
      statuses.push(batch.status)
      if (batch.status === "completed") assert.strictEqual(batch.error_file_id, "")
      if (batch.status === "failed") assert.strictEqual(batch.errors?.data?.[0]?.code, "token_limit_exceeded")
    }
    assert.sameMembers(statuses, ["completed", "failed"])
    await rejected(client.files.delete(file.id), OpenAI.InternalServerError, 503)
    assert.isTrue((await client.files.delete(file.id)).deleted)
  })

// ===== tests =====

describe("Emulator conformance with OpenAI's published Files and Batch protocol", () => {
  it("every response of whole lifecycles, faults included, validates against the spec's schemas (and their closed copies), follows the line semantics, and is accepted by the SDK", async () => {
    const rec = recorder()
    await lifecycle(rec)
    await faults(rec)
    await rec.settled()

    const seen = newSeen()
    const problems = rec.exchanges.flatMap((x) => exchangeProblems(seen, x))
    assert.deepStrictEqual(problems, [], problems.slice(0, 20).join("\n"))

    // what was covered
    assert.isAbove(rec.exchanges.length, 60)
    assert.sameMembers([...seen.statuses], ["validating", "in_progress", "finalizing", "completed", "failed", "expired", "cancelling", "cancelled"])
    assert.sameMembers([...seen.operations], ROUTES.map((r) => r[2]))
    assert.sameMembers([...seen.errorStatuses], [400, 401, 404, 429, 500, 502, 503])
    for (const kind of ["success:chat.completion", "success:list", "http:400", "http:500", "error:request_timeout", "error:batch_expired", "error:batch_cancelled"]) {
      assert.isTrue(seen.lineKinds.has(kind), `no ${kind} line among ${[...seen.lineKinds].join(", ")}`)
    }
    for (const shape of ["empty", "has_more", "last"]) {
      assert.isTrue(seen.listShapes.has(`ListBatchesResponse:${shape}`), `no ${shape} page of batches`)
      assert.isTrue(seen.listShapes.has(`ListFilesResponse:${shape}`), `no ${shape} page of files`)
    }
  })

  it("negative control: the same checker rejects broken copies of real responses", async () => {
    const rec = recorder()
    await withEmulator({ validationMs: 5, finalizingMs: 5, lineFailures: [{ status: 500, rate: 0.5 }], lineErrors: [{ code: "request_timeout", rate: 0.3 }] }, async (emulator) => {
      const client = rec.client(emulator)
      const file = await upload(client, jsonl(Array.from({ length: 20 }, (_, i) => chatLine(i))))
      const created = await client.batches.create({ input_file_id: file.id, endpoint: "/v1/chat/completions", completion_window: "24h" })
      let batch = created
      while (!TERMINAL.has(batch.status)) {
        await sleep(10)
        batch = await client.batches.retrieve(created.id)
      }
      await (await client.files.content(batch.error_file_id!)).text()
      await client.files.list()
      await rejected(client.batches.retrieve("batch_nope"), OpenAI.NotFoundError, 404)
    })
    await rec.settled()
    const seen = newSeen()
    // the real responses pass
    assert.deepStrictEqual(rec.exchanges.flatMap((x) => exchangeProblems(seen, x)), [])

    const find = (f: (x: Exchange) => boolean) => {
      const x = rec.exchanges.find(f)
      assert.isDefined(x)
      return x!
    }
    const finalBatch = find((x) => x.path.startsWith("/v1/batches/") && x.status === 200 && JSON.parse(x.text!).status === "completed")
    const errorFile = find((x) => x.path.endsWith("/content"))
    const fileList = find((x) => x.path === "/v1/files" && x.method === "GET")
    const notFound = find((x) => x.status === 404)
    const broken = (x: Exchange, edit: (body: any) => void): Exchange => {
      const body = JSON.parse(x.text!)
      edit(body)
      return { ...x, text: JSON.stringify(body) }
    }
    const brokenLine = (edit: (line: any) => void): Exchange => {
      const [first, ...rest] = errorFile.text!.split("\n")
      const line = JSON.parse(first!)
      edit(line)
      return { ...errorFile, text: [JSON.stringify(line), ...rest].join("\n") }
    }
    const httpLine = (edit: (line: any) => void) =>
      brokenLine((line) => {
        line.error = null
        line.response = { status_code: 500, request_id: "req_1", body: { error: { message: "m", type: "server_error", param: null, code: null } } }
        edit(line)
      })
    const cases: ReadonlyArray<readonly [string, Exchange, RegExp]> = [
      ["request_counts without total", broken(finalBatch, (b) => delete b.request_counts.total), /request_counts must have required property 'total'/],
      ["status 'done'", broken(finalBatch, (b) => (b.status = "done")), /status must be equal to one of the allowed values/],
      ["created_at as a string", broken(finalBatch, (b) => (b.created_at = String(b.created_at))), /created_at must be integer/],
      ["no input_file_id", broken(finalBatch, (b) => delete b.input_file_id), /required property 'input_file_id'/],
      ["object 'batches'", broken(finalBatch, (b) => (b.object = "batches")), /object must be equal to one of the allowed values/],
      ["usage without total_tokens", broken(finalBatch, (b) => delete b.usage.total_tokens), /usage must have required property 'total_tokens'/],
      ["metadata with a number", broken(finalBatch, (b) => (b.metadata = { n: 1 })), /metadata\/n must be string/],
      ["a misspelt field", broken(finalBatch, (b) => (b.request_count = b.request_counts)), /Batch \(closed\): data must NOT have additional properties/],
      ["a file with purpose 'batch-output'", broken(fileList, (l) => (l.data[0].purpose = "batch-output")), /purpose must be equal to one of the allowed values/],
      ["a file list without has_more", broken(fileList, (l) => delete l.has_more), /required property 'has_more'/],
      ["an error without param", broken(notFound, (e) => delete e.error.param), /ErrorResponse \(spec\): data\/error must have required property 'param'/],
      ["an error as a string", broken(notFound, (e) => (e.error = "not found")), /data\/error must be object/],
      ["a line without custom_id", brokenLine((l) => delete l.custom_id), /BatchRequestOutput \(spec\): data must have required property 'custom_id'/],
      ["a line with both response and error", httpLine((l) => (l.error = { code: "request_timeout", message: "m" })), /exactly one of response and error/],
      [
        "a line with neither",
        brokenLine((l) => {
          l.response = null
          l.error = null
        }),
        /exactly one of response and error/
      ],
      [
        "a line error with a numeric code",
        brokenLine((l) => {
          l.response = null
          l.error = { code: 5, message: "m" }
        }),
        /error\/code must be string/
      ],
      ["an HTTP error line whose body is not an error", httpLine((l) => (l.response.body = { oops: true })), /line body: ErrorResponse \(spec\)/],
      ["a 200 line in the error file", httpLine((l) => (l.response.status_code = 200)), /an error line with status 200/],
      ["a response without status_code", httpLine((l) => delete l.response.status_code), /response must have required property 'status_code'/]
    ]
    for (const [name, exchange, reason] of cases) {
      // result files are recognised once a batch named them: let the checker see the batches first
      const afterBatches = newSeen()
      for (const x of rec.exchanges) if (x.path.startsWith("/v1/batches/") && x.status === 200) exchangeProblems(afterBatches, x)
      const problems = exchangeProblems(afterBatches, exchange)
      assert.isTrue(problems.some((p) => reason.test(p)), `the checker did not reject ${name} for ${reason}: ${problems.join(" | ")}`)
    }
    // the closed copy is what catches the misspelt field: the spec alone would let it through
    const misspelt = JSON.parse(finalBatch.text!)
    misspelt.request_count = misspelt.request_counts
    assert.isTrue(validator("spec", "Batch")(misspelt))
    assert.isFalse(validator("closed", "Batch")(misspelt))
  })
})
