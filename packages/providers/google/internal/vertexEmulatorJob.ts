/**
 * What a batch prediction job of the Vertex emulator does once created: it
 * waits out its pending time (and a running slot), checks its input and
 * output, then reads its rows a chunk at a time, answers each with the local
 * engine and writes the chunk's answers — through the official
 * `@google-cloud/bigquery` and `@google-cloud/storage` clients pointed at the
 * BigQuery and Cloud Storage emulators — and records how far it got.
 *
 * - BigQuery in: `tabledata.list` pages from `startIndex` (the table is read
 *   in its stored order); the `request` column (Gemini) or `content` column
 *   (text embedding) is the request; other scalar columns pass through.
 * - BigQuery out: the output table is created when the job starts (a dataset
 *   URI gets a `predictions_<time>` table; a table URI must not exist yet),
 *   then each chunk is appended by a load job whose id is the job's and the
 *   chunk's: a restarted emulator that wrote a chunk but not its record finds
 *   the load (409) instead of writing the rows twice.
 * - Cloud Storage in: the JSONL object, streamed; out: one object
 *   `predictions_<chunk>.jsonl` per chunk under
 *   `<prefix>/prediction-model-<time>/` (`outputInfo.gcsOutputDirectory`).
 * - Answers are deterministic; injected row failures and malformed answers
 *   are drawn from a hash of (seed, job id, request), so a request retried in
 *   another job draws afresh.
 *
 * @internal
 */
import { Files, Hash } from "../../local/Kit.ts"
import type { BigQuery } from "@google-cloud/bigquery"
import type { Storage } from "@google-cloud/storage"
import { Clock, Effect } from "effect"
import * as crypto from "node:crypto"
import * as fs from "node:fs"
import { StringDecoder } from "node:string_decoder"
import * as Engine from "../../local/Engine.ts"
import * as Answer from "./geminiEmulatorAnswer.ts"
import type { Final, JobRecord, Knobs, Progress, Store } from "./vertexEmulatorStore.ts"
import type { BqRef, JobJson, JobState, RpcStatus } from "./vertexWire.ts"
import { bareModel, bqUri, codeOfName, int64, parseBq, parseGs, statusText } from "./vertexWire.ts"

// ===== the job as the API shows it =====

/** RFC 3339 with microseconds, as Vertex writes times */
export const rfc3339 = (ms: number) => new Date(ms).toISOString().replace(/\.(\d{3})Z$/, ".$1000Z")

/** the state a job shows now; `queueing`: a job without a running slot is `JOB_STATE_QUEUED` */
export const stateOf = (rec: JobRecord, queueing: boolean): JobState =>
  rec.final !== null
    ? rec.final.state
    : rec.cancel_ms !== null
    ? "JOB_STATE_CANCELLING"
    : rec.started_ms !== null
    ? "JOB_STATE_RUNNING"
    : rec.dequeued_ms === null && queueing
    ? "JOB_STATE_QUEUED"
    : "JOB_STATE_PENDING"

/** the `BatchPredictionJob` JSON of a record */
export const resource = (rec: JobRecord, queueing: boolean): JobJson => {
  const p = rec.progress
  const updated = Math.max(rec.created_ms, rec.started_ms ?? 0, rec.cancel_ms ?? 0, rec.final?.ended_ms ?? 0)
  const inputConfig = rec.input.format === "bigquery"
    ? { instancesFormat: "bigquery", bigquerySource: { inputUri: rec.input.uri } }
    : { instancesFormat: "jsonl", gcsSource: { uris: [...(rec.input.uris ?? [rec.input.uri])] } }
  const outputConfig = rec.output.format === "bigquery"
    ? { predictionsFormat: "bigquery", bigqueryDestination: { outputUri: rec.output.uri } }
    : { predictionsFormat: "jsonl", gcsDestination: { outputUriPrefix: rec.output.uri } }
  return {
    name: `projects/${rec.project}/locations/${rec.location}/batchPredictionJobs/${rec.id}`,
    displayName: rec.displayName,
    model: rec.model,
    inputConfig,
    outputConfig,
    state: stateOf(rec, queueing),
    ...(rec.final?.error != null ? { error: rec.final.error } : {}),
    createTime: rfc3339(rec.created_ms),
    ...(rec.started_ms !== null ? { startTime: rfc3339(rec.started_ms) } : {}),
    ...(rec.final !== null ? { endTime: rfc3339(rec.final.ended_ms) } : {}),
    updateTime: rfc3339(updated),
    ...(Object.keys(rec.labels).length > 0 ? { labels: rec.labels } : {}),
    ...(rec.outputInfo !== null ? { outputInfo: rec.outputInfo } : {}),
    ...(rec.started_ms !== null
      ? {
        completionStats: {
          successfulCount: String(p.succeeded),
          failedCount: String(p.failed),
          incompleteCount: String(p.total === null ? -1 : Math.max(0, p.total - p.succeeded - p.failed))
        }
      }
      : {})
  }
}

// ===== answers =====

/** a job's rows fail with these (thrown inside a job: it ends `JOB_STATE_FAILED`) */
export class JobFailure extends Error {
  readonly status: RpcStatus
  constructor(status: RpcStatus) {
    super(status.message)
    this.status = status
  }
}

const invalid = (message: string) => new JobFailure({ code: 3, message })

/** the answer of one request: the output's answer fields, or its failure */
type Answered =
  | { readonly ok: true; readonly fields: Record<string, unknown> }
  | { readonly ok: false; readonly status: RpcStatus }

const FAILURE_MESSAGES: Readonly<Record<number, string>> = {
  3: "Request contains an invalid argument.",
  4: "The request deadline was exceeded.",
  8: "Quota exceeded for aiplatform.googleapis.com/generate_content_requests_per_minute_per_project_per_base_model. Please try again later.",
  13: "Internal error encountered.",
  14: "The service is currently unavailable."
}

/** the injected failure of a request, if it draws one */
const injectedFailure = (knobs: Knobs, jobId: string, requestText: string): RpcStatus | null => {
  let draw = Hash.unit(`${jobId}\u0000${requestText}`, knobs.seed)
  for (const f of knobs.rowFailures) {
    if (draw < f.rate) {
      const code = codeOfName(f.code) ?? 13
      return { code, message: FAILURE_MESSAGES[code] ?? `The request failed (${f.code}).` }
    }
    draw -= f.rate
  }
  return null
}

/** replaces a chat answer's text with one that does not decode: cut at the token limit, prose, or JSON of another shape */
const malform = (response: Record<string, any>, draw: number): Record<string, any> => {
  const candidate = response.candidates?.[0]
  const text: string = candidate?.content?.parts?.[0]?.text ?? ""
  const variant = Math.floor(draw * 3)
  const [newText, finishReason] = variant === 0
    ? [text.slice(0, Math.max(1, Math.floor(text.length / 2))), "MAX_TOKENS"]
    : variant === 1
    ? ["I am not able to classify this item.", "STOP"]
    : ["{\"unexpected\":true}", "STOP"]
  return {
    ...response,
    candidates: [{ ...candidate, content: { role: "model", parts: [{ text: newText }] }, finishReason }]
  }
}

/** answers one request of a job of `rec.kind`; `request` as parsed from the row or line */
const answer = (rec: JobRecord, request: unknown, requestText: string): Answered => {
  const injected = injectedFailure(rec.knobs, rec.id, requestText)
  if (injected !== null) return { ok: false, status: injected }
  const model = `models/${bareModel(rec.model)}`
  if (rec.kind === "generate") {
    const body = typeof request === "object" && request !== null ? { ...(request as Record<string, unknown>) } : request
    // the model is the job's: a request may name it, but nothing else
    if (typeof body === "object" && body !== null) delete (body as Record<string, unknown>).model
    const a = Answer.generate(body, model, crypto.createHash("sha256").update(`${rec.id}\u0000${requestText}`).digest("base64url").slice(0, 20))
    if ("code" in a) return { ok: false, status: a }
    const draw = Hash.unit(`malformed\u0000${rec.id}\u0000${requestText}`, rec.knobs.seed)
    const response = draw < rec.knobs.malformedAnswers ? malform(a.body, draw / rec.knobs.malformedAnswers) : a.body
    return { ok: true, fields: { response } }
  }
  if (rec.kind === "embed-text") {
    const instance = (typeof request === "object" && request !== null ? request : {}) as Record<string, unknown>
    const content = instance.content
    if (typeof content !== "string" || content.length === 0) return { ok: false, status: { code: 3, message: "The instance has no `content` text." } }
    const out = Engine.embed({ model: bareModel(rec.model), input: content, dimensions: rec.parameters?.outputDimensionality ?? Answer.defaultDimensions(bareModel(rec.model)) })
    return {
      ok: true,
      fields: { predictions: [{ embeddings: { statistics: { token_count: out.usage.inputTokens, truncated: false }, values: out.vector } }] }
    }
  }
  // a Gemini embedding line: {"key", "request": {content, embed_content_config}}
  const r = (typeof request === "object" && request !== null ? request : {}) as { content?: unknown; embed_content_config?: { output_dimensionality?: unknown } }
  const dims = r.embed_content_config?.output_dimensionality
  const a = Answer.embed({ content: r.content, ...(typeof dims === "number" ? { outputDimensionality: dims } : {}) }, model)
  if ("code" in a) return { ok: false, status: a }
  return { ok: true, fields: { response: { ...a.body, usageMetadata: { promptTokenCount: a.inputTokens } } } }
}

// ===== BigQuery rows =====

/** a BigQuery schema field */
interface Field {
  readonly name: string
  readonly type: string
  readonly mode?: string | undefined
  readonly fields?: ReadonlyArray<Field> | undefined
}

/** column types Vertex copies to the output table (not ARRAY, STRUCT, RANGE, DATETIME, GEOGRAPHY) */
const PASSES = new Set(["STRING", "BYTES", "INTEGER", "INT64", "FLOAT", "FLOAT64", "NUMERIC", "BIGNUMERIC", "BOOLEAN", "BOOL", "TIMESTAMP", "DATE", "TIME", "JSON"])

/** int64 microseconds since the epoch → RFC 3339 with microseconds */
const isoOfMicros = (text: string): string => {
  const micros = BigInt(text)
  const ms = micros / 1000n - (micros % 1000n < 0n ? 1n : 0n)
  const rest = ((micros % 1000n) + 1000n) % 1000n
  return new Date(Number(ms)).toISOString().replace("Z", `${String(rest).padStart(3, "0")}Z`)
}

/** a cell of a raw `{f: [{v}]}` row as a value a JSON load takes */
const loadValue = (field: Field, v: unknown): unknown => {
  if (v === null || v === undefined) return null
  switch (field.type) {
    case "TIMESTAMP":
      return typeof v === "string" && /^-?\d+$/.test(v) ? isoOfMicros(v) : v
    case "JSON":
      try {
        return typeof v === "string" ? JSON.parse(v) : v
      } catch {
        return v
      }
    default:
      return v
  }
}

// ===== the context of a worker =====

/** what a job runs against */
export interface Context {
  readonly store: Store
  readonly bigquery: ((project: string) => BigQuery) | undefined
  readonly storage: Storage | undefined
  /** running slots (`maxRunningJobs`): the jobs holding one; undefined: no limit */
  readonly slots: { readonly max: number; readonly running: Set<string> } | undefined
  /** counts rows answered (for the emulator's stats) */
  readonly countRows: (n: number) => void
}

const update = (ctx: Context, id: string, f: (rec: JobRecord) => JobRecord): JobRecord => {
  const next = f(ctx.store.jobs.get(id)!)
  ctx.store.put(next)
  return next
}

const end = (ctx: Context, id: string, state: Final["state"], error: RpcStatus | null) =>
  Effect.map(Clock.currentTimeMillis, (now) => update(ctx, id, (rec) => ({ ...rec, final: { state, ended_ms: now, error } })))

const promise = <A>(f: () => Promise<A>) =>
  Effect.tryPromise({ try: f, catch: (e) => e instanceof JobFailure ? e : new JobFailure({ code: 13, message: `Internal error: ${e instanceof Error ? e.message : String(e)}` }) })

const statusOf = (e: unknown): number | undefined => {
  const code = (e as { code?: unknown } | null)?.code
  return typeof code === "number" ? code : undefined
}

const timeTag = (ms: number) => new Date(ms).toISOString().replace(/[-:]/g, "_").replace(".", "_").replace("Z", "")

// ===== input and output, per format =====

/** a job's reader and writer, made when it starts (again after a restart) */
interface Io {
  /** rows in the input */
  readonly total: number
  /** the next `n` rows after `from` (the first call's `from` is where the job stands) */
  readonly read: (from: number, n: number) => Promise<ReadonlyArray<{ readonly passthrough: Record<string, unknown>; readonly request: unknown; readonly text: string }>>
  /** writes chunk `chunk`'s output rows (once, whatever happened before) */
  readonly write: (chunk: number, rows: ReadonlyArray<Record<string, unknown>>) => Promise<void>
  readonly outputInfo: NonNullable<JobRecord["outputInfo"]>
  readonly close: () => void
}

/** waits for a BigQuery job to be DONE; fails on its error */
const waitJob = async (bq: BigQuery, jobId: string, location: string | undefined) => {
  const job = bq.job(jobId, location === undefined ? {} : { location })
  let wait = 20
  while (true) {
    const [meta] = await job.getMetadata()
    const status = (meta as { status?: { state?: string; errorResult?: { message?: string }; errors?: ReadonlyArray<{ message?: string }> } }).status
    if (status?.state === "DONE") {
      if (status.errorResult !== undefined) {
        const detail = status.errors?.find((e) => e.message !== status.errorResult?.message)?.message
        throw new JobFailure({ code: 13, message: `Writing the output failed: ${status.errorResult.message ?? "load job failed"}${detail !== undefined ? ` (${detail})` : ""}` })
      }
      return
    }
    await new Promise((r) => setTimeout(r, wait))
    wait = Math.min(500, wait * 2)
  }
}

const bigqueryIo = async (ctx: Context, rec: JobRecord, now: number): Promise<Io> => {
  if (ctx.bigquery === undefined) throw new JobFailure({ code: 9, message: "The emulator has no BigQuery: serve it with `bigqueryUrl`." })
  const inRef = parseBq(rec.input.uri)
  if (typeof inRef === "string" || inRef.tableId === undefined) throw invalid(`Invalid BigQuery input: ${typeof inRef === "string" ? inRef : "a table is needed"}`)
  const bq = ctx.bigquery(inRef.projectId)
  const input = bq.dataset(inRef.datasetId, { projectId: inRef.projectId }).table(inRef.tableId)
  const [meta] = await input.getMetadata().catch((e) => {
    if (statusOf(e) === 404) throw new JobFailure({ code: 5, message: `BigQuery table ${rec.input.uri.slice(5)} was not found.` })
    throw e
  })
  const fields = ((meta as { schema?: { fields?: ReadonlyArray<Field> } }).schema?.fields ?? []) as ReadonlyArray<Field>
  const total = int64((meta as { numRows?: unknown }).numRows)
  const column = rec.kind === "generate" ? "request" : "content"
  const at = fields.findIndex((f) => f.name.toLowerCase() === column)
  if (at < 0) throw invalid(`The BigQuery input table has no \`${column}\` column: a ${rec.kind === "generate" ? "Gemini" : "text embedding"} batch prediction reads its requests there.`)
  const passing = fields.map((f, i) => ({ f, i })).filter(({ f, i }) => (rec.kind === "embed-text" || i !== at) && f.mode !== "REPEATED" && PASSES.has(f.type))

  // the output table: created when the job starts (its name is then in `outputInfo`)
  let outRef: BqRef
  if (rec.outputInfo !== null) {
    const d = parseBq(rec.outputInfo.bigqueryOutputDataset ?? "")
    if (typeof d === "string") throw invalid(d)
    outRef = { ...d, tableId: rec.outputInfo.bigqueryOutputTable! }
  } else {
    const parsed = rec.output.uri.startsWith("bq://") && !rec.output.uri.slice(5).includes(".")
      ? { projectId: rec.output.uri.slice(5), datasetId: `prediction_${bareModel(rec.model).replace(/[^A-Za-z0-9_]/g, "_")}_${timeTag(now)}` }
      : parseBq(rec.output.uri)
    if (typeof parsed === "string") throw invalid(`Invalid BigQuery output: ${parsed}`)
    const out = ctx.bigquery(parsed.projectId)
    const dataset = out.dataset(parsed.datasetId, { projectId: parsed.projectId })
    if (parsed.tableId === undefined && !rec.output.uri.slice(5).includes(".")) await dataset.create().catch((e) => statusOf(e) === 409 ? undefined : Promise.reject(e))
    const [exists] = await dataset.exists()
    if (!exists) throw new JobFailure({ code: 5, message: `BigQuery dataset ${parsed.projectId}.${parsed.datasetId} was not found.` })
    outRef = { ...parsed, tableId: parsed.tableId ?? `predictions_${timeTag(now)}` }
    const schema: Array<Field> = passing.map(({ f }) => ({ name: f.name, type: f.type, mode: "NULLABLE" }))
    if (rec.kind === "generate") schema.push({ name: "request", type: "JSON", mode: "NULLABLE" }, { name: "response", type: "JSON", mode: "NULLABLE" })
    // the emulator's loads take no JSON array into a JSON column: predictions are JSON text in a STRING column
    else schema.push({ name: "predictions", type: "STRING", mode: "NULLABLE" })
    schema.push({ name: "status", type: "STRING", mode: "NULLABLE" }, { name: "processed_time", type: "TIMESTAMP", mode: "NULLABLE" })
    await dataset.table(outRef.tableId!).create({ schema: { fields: schema } } as never).catch((e) => {
      if (statusOf(e) === 409) throw invalid(`The output table ${outRef.projectId}.${outRef.datasetId}.${outRef.tableId} already exists: give a dataset, or a table that does not exist yet.`)
      throw e
    })
  }
  const outBq = ctx.bigquery(outRef.projectId)
  const outTable = outBq.dataset(outRef.datasetId, { projectId: outRef.projectId }).table(outRef.tableId!)
  const location = (meta as { location?: string }).location

  return {
    total,
    outputInfo: { bigqueryOutputDataset: bqUri({ projectId: outRef.projectId, datasetId: outRef.datasetId }), bigqueryOutputTable: outRef.tableId! },
    read: async (from, n) => {
      const out: Array<{ passthrough: Record<string, unknown>; request: unknown; text: string }> = []
      while (out.length < n && from + out.length < total) {
        const [rows] = await input.getRows({ startIndex: String(from + out.length), maxResults: n - out.length, autoPaginate: false, skipParsing: true } as never) as unknown as [ReadonlyArray<{ f: ReadonlyArray<{ v: unknown }> }>]
        if (rows.length === 0) break
        for (const row of rows) {
          const passthrough: Record<string, unknown> = {}
          for (const { f, i } of passing) passthrough[f.name] = loadValue(f, row.f[i]?.v)
          const cell = row.f[at]?.v
          const text = typeof cell === "string" ? cell : cell === null || cell === undefined ? "" : JSON.stringify(cell)
          let request: unknown
          if (rec.kind === "generate") {
            try {
              request = JSON.parse(text)
            } catch {
              request = undefined
            }
          } else request = { content: cell }
          out.push({ passthrough, request, text })
        }
      }
      return out
    },
    write: async (chunk, rows) => {
      if (rows.length === 0) return
      const jobId = `vertex_${rec.id}_chunk_${chunk}`
      const file = ctx.store.tempPath(`${jobId}.json`)
      fs.writeFileSync(file, rows.map((r) => JSON.stringify(r)).join("\n") + "\n")
      try {
        await outTable.createLoadJob(file, {
          jobId,
          ...(location === undefined ? {} : { location }),
          sourceFormat: "NEWLINE_DELIMITED_JSON",
          writeDisposition: "WRITE_APPEND",
          createDisposition: "CREATE_NEVER"
        } as never).catch((e) => statusOf(e) === 409 ? undefined : Promise.reject(e))
        await waitJob(outBq, jobId, location)
      } finally {
        fs.rmSync(file, { force: true })
      }
    },
    close: () => {}
  }
}

const gcsIo = async (ctx: Context, rec: JobRecord, now: number): Promise<Io> => {
  const storage = ctx.storage
  if (storage === undefined) throw new JobFailure({ code: 9, message: "The emulator has no Cloud Storage: serve it with `storageUrl`." })
  const src = parseGs(rec.input.uri)
  if (typeof src === "string" || src.name === "") throw invalid(`Invalid Cloud Storage input: ${typeof src === "string" ? src : "an object is needed"}`)
  const file = storage.bucket(src.bucket).file(src.name)
  const [exists] = await file.exists()
  if (!exists) throw new JobFailure({ code: 5, message: `Cloud Storage object ${rec.input.uri} was not found.` })
  // rows: the non-blank lines (a stream iterated directly passes a broken download on as an error)
  const lines = async function*() {
    let carry = ""
    const decoder = new StringDecoder("utf8")
    for await (const chunk of file.createReadStream() as AsyncIterable<Buffer>) {
      const text = carry + decoder.write(chunk)
      const parts = text.split("\n")
      carry = parts.pop()!
      for (const part of parts) yield part.endsWith("\r") ? part.slice(0, -1) : part
    }
    carry += decoder.end()
    if (carry.length > 0) yield carry
  }
  let total = 0
  for await (const line of lines()) if (line.trim().length > 0) total++

  let dir: string
  if (rec.outputInfo?.gcsOutputDirectory !== undefined) dir = rec.outputInfo.gcsOutputDirectory
  else {
    const dest = parseGs(rec.output.uri)
    if (typeof dest === "string") throw invalid(`Invalid Cloud Storage output: ${dest}`)
    dir = `gs://${dest.bucket}/${dest.name.replace(/\/+$/, "")}${dest.name === "" ? "" : "/"}prediction-model-${rfc3339(now)}`
  }
  const out = parseGs(dir) as { bucket: string; name: string }
  const [bucketExists] = await storage.bucket(out.bucket).exists()
  if (!bucketExists) throw new JobFailure({ code: 5, message: `Cloud Storage bucket ${out.bucket} was not found.` })

  const reader = lines()[Symbol.asyncIterator]()
  let position = 0
  return {
    total,
    outputInfo: { gcsOutputDirectory: dir },
    read: async (from, n) => {
      const rows: Array<{ passthrough: Record<string, unknown>; request: unknown; text: string }> = []
      while (rows.length < n) {
        const next = await reader.next()
        if (next.done === true) break
        const text = next.value
        if (text.trim().length === 0) continue
        if (position++ < from) continue
        let parsed: unknown
        try {
          parsed = JSON.parse(text)
        } catch {
          parsed = undefined
        }
        const line = (typeof parsed === "object" && parsed !== null ? parsed : {}) as Record<string, unknown>
        if (rec.kind === "embed-text") rows.push({ passthrough: { instance: line }, request: line, text })
        else {
          const { request, ...rest } = line
          rows.push({ passthrough: { ...rest, request }, request: parsed === undefined ? undefined : request, text })
        }
      }
      return rows
    },
    write: async (chunk, rows) => {
      if (rows.length === 0) return
      const body = rows.map((r) => JSON.stringify(r)).join("\n") + "\n"
      await storage.bucket(out.bucket).file(`${out.name}/predictions_${String(chunk).padStart(5, "0")}.jsonl`).save(body, {
        resumable: false,
        contentType: "application/jsonl"
      })
    },
    close: () => {
      void reader.return?.()
    }
  }
}

// ===== the worker =====

/** shuffles in place, seeded */
const shuffle = <A>(items: Array<A>, seed: string) => {
  const next = Hash.prng(crypto.createHash("sha256").update(seed).digest().readUInt32BE(0))
  for (let i = items.length - 1; i > 0; i--) {
    const j = Math.floor(next() * (i + 1))
    ;[items[i], items[j]] = [items[j]!, items[i]!]
  }
}

/** answers a chunk's rows, yielding to the event loop every few hundred */
const answerChunk = (rec: JobRecord, rows: Awaited<ReturnType<Io["read"]>>, now: number) =>
  Effect.gen(function*() {
    const out: Array<Record<string, unknown>> = []
    let succeeded = 0
    let failed = 0
    const processed = rfc3339(now)
    for (let i = 0; i < rows.length; i++) {
      const row = rows[i]!
      const a: Answered = row.request === undefined
        ? { ok: false, status: { code: 3, message: "The request is not valid JSON." } }
        : answer(rec, row.request, row.text)
      if (a.ok) succeeded++
      else failed++
      if (rec.output.format === "bigquery") {
        out.push({
          ...row.passthrough,
          ...(rec.kind === "generate" ? { request: row.request ?? null, response: a.ok ? a.fields.response : null } : { predictions: a.ok ? JSON.stringify(a.fields.predictions) : null }),
          status: a.ok ? "" : statusText(a.status),
          processed_time: processed
        })
      } else if (rec.kind === "embed-text") {
        out.push({ ...row.passthrough, ...(a.ok ? a.fields : {}), status: a.ok ? "" : statusText(a.status) })
      } else {
        out.push({ status: a.ok ? "" : statusText(a.status), processed_time: processed, ...row.passthrough, ...(a.ok ? a.fields : {}) })
      }
      if (i % 500 === 499) yield* Files.yieldToEventLoop
    }
    if (rec.knobs.shuffle) shuffle(out, `${rec.id}\u0000${rows.length}\u0000${rows[0]?.text ?? ""}`)
    return { out, succeeded, failed }
  })

/**
 * Runs job `id` to its end from wherever its record stands. Interrupted (the
 * server closing), it stops between steps; the next `run` carries on.
 */
export const run = (ctx: Context, id: string): Effect.Effect<void> =>
  Effect.gen(function*() {
    let rec = ctx.store.jobs.get(id)
    if (rec === undefined || rec.final !== null || rec.deleted_ms !== null) return
    const knobs = rec.knobs

    const cancelled = Effect.gen(function*() {
      const r = ctx.store.jobs.get(id)!
      const now = yield* Clock.currentTimeMillis
      const wait = r.cancel_ms! + knobs.cancellingMs - now
      if (wait > 0) yield* Effect.sleep(wait)
      yield* end(ctx, id, "JOB_STATE_CANCELLED", { code: 1, message: "CANCELED" })
    })
    /** sleeps up to `ms`, waking early for a cancel; true when cancelled */
    const pause = (ms: number) =>
      Effect.gen(function*() {
        let left = ms
        while (left > 0) {
          if (ctx.store.jobs.get(id)!.cancel_ms !== null) return true
          const step = Math.min(left, 25)
          yield* Effect.sleep(step)
          left -= step
        }
        return ctx.store.jobs.get(id)!.cancel_ms !== null
      })

    // a running slot (`JOB_STATE_QUEUED` until one is free), then the pending time
    const slots = ctx.slots
    if (slots !== undefined && !slots.running.has(id)) {
      while (slots.running.size >= slots.max) {
        if (ctx.store.jobs.get(id)!.cancel_ms !== null) return yield* cancelled
        yield* Effect.sleep(25)
      }
      slots.running.add(id)
    }
    const body = Effect.gen(function*() {
      rec = ctx.store.jobs.get(id)!
      if (rec.cancel_ms !== null) return yield* cancelled
      if (rec.dequeued_ms === null) {
        const now = yield* Clock.currentTimeMillis
        rec = update(ctx, id, (r) => ({ ...r, dequeued_ms: now }))
      }
      if (rec.started_ms === null && (yield* pause(rec.dequeued_ms! + knobs.pendingMs - (yield* Clock.currentTimeMillis)))) return yield* cancelled
      if (rec.injected !== null) {
        const now = yield* Clock.currentTimeMillis
        if (rec.started_ms === null) update(ctx, id, (r) => ({ ...r, started_ms: now }))
        return yield* end(ctx, id, "JOB_STATE_FAILED", rec.injected)
      }
      const startNow = yield* Clock.currentTimeMillis
      if (rec.started_ms === null) rec = update(ctx, id, (r) => ({ ...r, started_ms: startNow }))
      const started = rec.started_ms!

      const io = yield* Effect.acquireRelease(
        promise(() => rec!.input.format === "bigquery" ? bigqueryIo(ctx, rec!, startNow) : gcsIo(ctx, rec!, startNow)),
        (io) => Effect.sync(() => io.close())
      )
      if (rec.outputInfo === null || rec.progress.total === null) {
        rec = update(ctx, id, (r) => ({ ...r, outputInfo: io.outputInfo, progress: { ...r.progress, total: io.total } }))
      }
      while (true) {
        rec = ctx.store.jobs.get(id)!
        if (rec.cancel_ms !== null) return yield* cancelled
        const now = yield* Clock.currentTimeMillis
        const p: Progress = rec.progress
        if (now >= rec.created_ms + knobs.completionWindowMs) {
          return yield* end(ctx, id, "JOB_STATE_EXPIRED", { code: 4, message: "The batch prediction job expired: it did not finish within its completion window." })
        }
        if (p.rows >= io.total) return yield* end(ctx, id, "JOB_STATE_SUCCEEDED", null)
        // slow progression: rows are answered at `rowsPerSecond` from the job's start
        const dueAt = started + Math.floor((p.rows * 1000) / knobs.rowsPerSecond)
        if (dueAt > now && (yield* pause(dueAt - now))) return yield* cancelled
        const n = Math.min(knobs.chunkRows, io.total - p.rows, Math.max(1, Math.ceil(knobs.rowsPerSecond)))
        const rows = yield* promise(() => io.read(p.rows, n))
        if (rows.length === 0) return yield* end(ctx, id, "JOB_STATE_SUCCEEDED", null)
        const answered = yield* answerChunk(rec, rows, yield* Clock.currentTimeMillis)
        yield* promise(() => io.write(p.chunks, answered.out))
        ctx.countRows(rows.length)
        update(ctx, id, (r) => ({
          ...r,
          progress: {
            ...r.progress,
            rows: p.rows + rows.length,
            chunks: p.chunks + 1,
            succeeded: p.succeeded + answered.succeeded,
            failed: p.failed + answered.failed
          }
        }))
      }
    }).pipe(Effect.scoped)
    yield* body.pipe(
      Effect.catch((e: JobFailure) => end(ctx, id, "JOB_STATE_FAILED", e.status).pipe(Effect.asVoid)),
      Effect.ensuring(Effect.sync(() => slots?.running.delete(id)))
    )
  }).pipe(Effect.asVoid)
