/**
 * A batch's life, derived from its timestamps: where it should be now
 * (`derive`), the validation of its input file (`validate`) and the answers
 * written once it ends (`finish`). No timers: every read derives the state
 * from the creation time, the knobs the batch was created under and the time
 * it was cancelled, so a restarted emulator carries on where it stopped.
 *
 * Timeline of a batch of N requests at `lps` requests per second:
 * validating for `validationMs`; then in progress, request i (0-based) done at
 * `vEnd + (i + 1) / lps`; then finalizing for `finalizingMs`; then completed.
 * It expires (with the requests done so far) when the completion window ends
 * first; a cancel moves it to cancelling for `cancellingMs`, then cancelled
 * (with the requests done before the cancel).
 *
 * Injected faults live here too: a validation that passes can still be
 * refused (`admit`: a `failBatches` pick, the enqueued token limit); each
 * line draws its failure (`injectedLine`: HTTP status or non-HTTP error code)
 * and whether it is lost (`droppedLine`) from hashes of (seed, batch id,
 * custom_id).
 */
import { Files, Hash } from "../../local/Kit.ts"
import { Effect } from "effect"
import * as fs from "node:fs"
import * as Engine from "../../local/Engine.ts"
import * as Answer from "./answer.ts"
import type { BatchError, BatchObject, BatchRecord, FileRecord, Knobs, Store, Validation } from "./store.ts"
import { derivedId } from "./store.ts"

const sec = (ms: number) => Math.floor(ms / 1000)

/** yields to the event loop (not only to other fibers), so HTTP requests are served between slices of work */


/** how long a slice of synchronous work may run before yielding */
const SLICE_MS = 8

// ===== state derivation =====

const FIELD_ORDER = [
  "id",
  "object",
  "endpoint",
  "model",
  "errors",
  "input_file_id",
  "completion_window",
  "status",
  "output_file_id",
  "error_file_id",
  "created_at",
  "in_progress_at",
  "expires_at",
  "finalizing_at",
  "completed_at",
  "failed_at",
  "expired_at",
  "cancelling_at",
  "cancelled_at",
  "request_counts",
  "usage",
  "metadata"
] as const

/** the batch object with its fields in the order the real API sends them */
export const ordered = (batch: BatchObject): BatchObject => {
  const out: Record<string, unknown> = {}
  for (const key of FIELD_ORDER) if (key in batch) out[key] = batch[key]
  return out as unknown as BatchObject
}

/** how a batch ends: which requests were processed and when it reaches its terminal state */
export interface Ending {
  readonly status: "completed" | "expired" | "cancelled"
  /** requests 0 … processed-1 were answered; the rest expired or were cancelled */
  readonly processed: number
  readonly at: number
  readonly finalizingAt: number | null
  readonly cancellingAt: number | null
}

export interface Derived {
  /** what a client sees now */
  readonly view: BatchObject
  /** work that must run before the batch can move on */
  readonly need: "validate" | Ending | null
  /** a terminal object reached without any work (failed validation, cancelled while validating): persist it */
  readonly final?: BatchObject
}

const countBelow = (sorted: ReadonlyArray<number>, p: number) => {
  let lo = 0
  let hi = sorted.length
  while (lo < hi) {
    const mid = (lo + hi) >>> 1
    if (sorted[mid]! < p) lo = mid + 1
    else hi = mid
  }
  return lo
}

const baseView = (rec: BatchRecord): BatchObject => ({
  id: rec.id,
  object: "batch",
  endpoint: rec.endpoint,
  errors: null,
  input_file_id: rec.input_file_id,
  completion_window: rec.completion_window,
  status: "validating",
  output_file_id: null,
  error_file_id: null,
  created_at: sec(rec.created_ms),
  in_progress_at: null,
  expires_at: sec(rec.created_ms) + 86_400,
  finalizing_at: null,
  completed_at: null,
  failed_at: null,
  expired_at: null,
  cancelling_at: null,
  cancelled_at: null,
  request_counts: { total: 0, completed: 0, failed: 0 },
  metadata: rec.metadata
})

/** where the batch should be at `now` */
export const derive = (rec: BatchRecord, now: number): Derived => {
  if (rec.final !== null) return { view: rec.final, need: null }
  const k = rec.knobs
  const base = baseView(rec)
  const vEnd = rec.created_ms + k.validationMs
  const cancel = rec.cancel_ms
  if (cancel !== null && cancel < vEnd) {
    const end = cancel + k.cancellingMs
    const cancelling: BatchObject = { ...base, status: "cancelling", cancelling_at: sec(cancel) }
    if (now < end) return { view: cancelling, need: null }
    const final: BatchObject = { ...cancelling, status: "cancelled", cancelled_at: sec(end) }
    return { view: final, need: null, final }
  }
  if (now < vEnd) return { view: base, need: null }
  const v = rec.validation
  if (v === null) {
    // validation is running; a cancel that came meanwhile shows at once
    const view: BatchObject = cancel !== null ? { ...base, status: "cancelling", cancelling_at: sec(cancel) } : base
    return { view, need: "validate" }
  }
  if (!v.ok) {
    const final: BatchObject = {
      ...base,
      ...(v.model !== null ? { model: v.model } : {}),
      status: "failed",
      failed_at: sec(vEnd),
      errors: { object: "list", data: v.errors }
    }
    return { view: final, need: null, final }
  }
  const total = v.total
  const lps = k.linesPerSecond
  const processedAt = (t: number) => Math.max(0, Math.min(total, Math.floor(((t - vEnd) * lps) / 1000)))
  const counts = (p: number) => {
    const failed = countBelow(v.failing, p)
    return { total, completed: p - failed, failed }
  }
  const pEnd = vEnd + Math.ceil((total * 1000) / lps)
  const finEnd = pEnd + k.finalizingMs
  const deadline = Math.max(rec.created_ms + k.completionWindowMs, vEnd)
  const expires = deadline < pEnd
  const inProgress: BatchObject = { ...base, model: v.model, status: "in_progress", in_progress_at: sec(vEnd) }

  if (cancel !== null && cancel < finEnd && (!expires || cancel < deadline)) {
    const p = processedAt(cancel)
    const end = cancel + k.cancellingMs
    const cancelling: BatchObject = {
      ...inProgress,
      status: "cancelling",
      cancelling_at: sec(cancel),
      finalizing_at: cancel >= pEnd ? sec(pEnd) : null,
      request_counts: counts(p)
    }
    if (now < end) return { view: cancelling, need: null }
    return {
      view: cancelling,
      need: { status: "cancelled", processed: p, at: end, finalizingAt: cancel >= pEnd ? pEnd : null, cancellingAt: cancel }
    }
  }
  if (expires) {
    if (now < deadline) return { view: { ...inProgress, request_counts: counts(processedAt(now)) }, need: null }
    const p = processedAt(deadline)
    return {
      view: { ...inProgress, request_counts: counts(p) },
      need: { status: "expired", processed: p, at: deadline, finalizingAt: null, cancellingAt: null }
    }
  }
  if (now < pEnd) return { view: { ...inProgress, request_counts: counts(processedAt(now)) }, need: null }
  const finalizing: BatchObject = { ...inProgress, status: "finalizing", finalizing_at: sec(pEnd), request_counts: counts(total) }
  if (now < finEnd) return { view: finalizing, need: null }
  return { view: finalizing, need: { status: "completed", processed: total, at: finEnd, finalizingAt: pEnd, cancellingAt: null } }
}


const isBlank = (data: Buffer, start: number, end: number) => {
  for (let i = start; i < end; i++) {
    const c = data[i]
    if (c !== 32 && c !== 9 && c !== 13) return false
  }
  return true
}

// ===== injected failures =====

/** an injected per-line failure: an HTTP error (`lineFailures`) or a non-HTTP error (`lineErrors`) */
export type InjectedLine = { readonly status: number } | { readonly code: string }

/**
 * The injected failure of a request, or null: one uniform draw from a hash of
 * (seed, batch id, custom_id), so a retry in another batch draws afresh,
 * against the `lineFailures` rates, then the `lineErrors` rates, cumulated.
 */
export const injectedLine = (knobs: Knobs, batchId: string, customId: string): InjectedLine | null => {
  if (knobs.lineFailures.length === 0 && knobs.lineErrors.length === 0) return null
  const u = Hash.hashString(`${batchId}\u0000${customId}`, knobs.seed) / 4294967296
  let acc = 0
  for (const f of knobs.lineFailures) {
    acc += f.rate
    if (u < acc) return { status: f.status }
  }
  for (const e of knobs.lineErrors) {
    acc += e.rate
    if (u < acc) return { code: e.code }
  }
  return null
}

/** whether a request's line is left out of the output and error files (`dropLines`): an independent draw */
export const droppedLine = (knobs: Knobs, batchId: string, customId: string): boolean =>
  knobs.dropLines > 0 && Hash.unit(`${batchId}\u0000${customId}\u0000drop`, knobs.seed) < knobs.dropLines

const LINE_ERROR_MESSAGES: Record<string, string> = {
  request_timeout: "The request timed out before it could be completed.",
  batch_expired: "This request could not be executed before the completion window expired.",
  batch_cancelled: "This request was not executed because the batch was cancelled."
}

/** the message of a non-HTTP line error */
export const lineErrorMessage = (code: string): string =>
  LINE_ERROR_MESSAGES[code] ?? `The request could not be completed (${code}).`

// ===== token estimates =====

const isRecord = (u: unknown): u is Record<string, unknown> => typeof u === "object" && u !== null && !Array.isArray(u)

/** the input tokens of a request body, estimated with the engine's counter: message contents, or embedding inputs */
export const estimatedTokens = (body: Record<string, unknown>): number => {
  let tokens = 0
  if (Array.isArray(body.messages)) {
    for (const m of body.messages) if (isRecord(m)) tokens += Engine.countTokens(Answer.contentText(m.content))
  }
  const input = body.input
  if (typeof input === "string") tokens += Engine.countTokens(input)
  else if (Array.isArray(input)) {
    for (const x of input) {
      if (typeof x === "string") tokens += Engine.countTokens(x)
      else if (typeof x === "number") tokens += 1
      else if (Array.isArray(x)) tokens += x.length
    }
  }
  return tokens
}

// ===== validation =====

const MAX_ERRORS = 1000

/** validates a batch's input file, streaming it line by line */
export const validate = (store: Store, rec: BatchRecord): Effect.Effect<Validation> =>
  Effect.gen(function*() {
    const file = store.files.get(rec.input_file_id)
    if (file === undefined || !fs.existsSync(store.dataPath(file.id))) {
      return {
        ok: false,
        model: null,
        errors: [{ code: "input_file_missing", message: `The input file ${rec.input_file_id} no longer exists.`, param: "input_file_id", line: null }]
      } satisfies Validation
    }
    const errors: Array<BatchError> = []
    const add = (code: string, message: string, param: string | null, line: number | null) => {
      if (errors.length < MAX_ERRORS) errors.push({ code, message, param, line })
    }
    const ids = new Set<string>()
    const failing: Array<number> = []
    let model: string | null = null
    let count = 0
    let inputTokens = 0
    const endpoint = rec.endpoint
    yield* Files.forEachLine(store.dataPath(file.id), (data, start, end, _offset, lineNo) => {
      if (isBlank(data, start, end)) return
      const index = count++
      let line: unknown
      try {
        line = JSON.parse(data.toString("utf8", start, end))
      } catch {
        line = undefined
      }
      if (typeof line !== "object" || line === null || Array.isArray(line)) {
        return add("invalid_json_line", "This line is not parseable as valid JSON.", null, lineNo)
      }
      const l = line as Record<string, unknown>
      if (typeof l.custom_id !== "string" || l.custom_id.length === 0) {
        return add("missing_required_parameter", "Missing required parameter: 'custom_id'.", "custom_id", lineNo)
      }
      if (l.method === undefined) return add("missing_required_parameter", "Missing required parameter: 'method'.", "method", lineNo)
      if (l.method !== "POST") {
        return add("invalid_request", `Invalid value for 'method': '${String(l.method)}'. Only 'POST' is supported.`, "method", lineNo)
      }
      if (typeof l.url !== "string") return add("missing_required_parameter", "Missing required parameter: 'url'.", "url", lineNo)
      if (l.url !== endpoint) {
        return add("url_mismatch", `The provided URL '${l.url}' does not match the endpoint '${endpoint}' of the batch.`, "url", lineNo)
      }
      const body = l.body
      if (typeof body !== "object" || body === null || Array.isArray(body)) {
        return add("missing_required_parameter", "Missing required parameter: 'body'.", "body", lineNo)
      }
      const lineModel = (body as Record<string, unknown>).model
      if (typeof lineModel !== "string" || lineModel.length === 0) {
        return add("missing_required_parameter", "Missing required parameter: 'body.model'.", "body.model", lineNo)
      }
      if (model === null) model = lineModel
      else if (lineModel !== model) {
        return add(
          "model_mismatch",
          `The model '${lineModel}' does not match the model '${model}' of the other requests. A batch may use only one model.`,
          "body.model",
          lineNo
        )
      }
      if (ids.has(l.custom_id)) {
        return add("duplicate_custom_id", `The custom_id '${l.custom_id}' is used more than once in this batch.`, "custom_id", lineNo)
      }
      ids.add(l.custom_id)
      inputTokens += estimatedTokens(body as Record<string, unknown>)
      if (injectedLine(rec.knobs, rec.id, l.custom_id) !== null) failing.push(index)
    })
    if (count === 0) {
      add("empty_file", "The input file is empty. Please ensure that the batch contains at least one request.", null, null)
    } else if (count > rec.knobs.maxLinesPerBatch) {
      errors.unshift({
        code: "too_many_tasks",
        message: `The batch input file has ${count} requests, more than the maximum of ${rec.knobs.maxLinesPerBatch}.`,
        param: null,
        line: null
      })
      if (errors.length > MAX_ERRORS) errors.length = MAX_ERRORS
    }
    if (errors.length > 0) return { ok: false, model, errors } satisfies Validation
    return { ok: true, model: model!, total: count, failing, inputTokens } satisfies Validation
  })

const tokenLimitMessage = (model: string, limit: number) =>
  `Enqueued token limit reached for ${model} in organization org-emulator. Limit: ${
    limit.toLocaleString("en-US")
  } enqueued tokens. Please try again once some in_progress batches have been completed.`

/**
 * What a finished validation becomes once the service's own checks ran: the
 * whole-batch failure picked at creation (`failBatches`), then the enqueued
 * token limit — this batch's estimated input tokens plus those of the batches
 * in progress at `now` — which fails it with `token_limit_exceeded` and no line.
 * Synchronous, so two validations ending together see each other in order.
 */
export const admit = (store: Store, rec: BatchRecord, validation: Validation, now: number): Validation => {
  if (!validation.ok) return validation
  const failure = rec.injected_failure
  if (failure !== null) {
    const message = failure.message ??
      (failure.code === "token_limit_exceeded"
        ? tokenLimitMessage(validation.model, rec.knobs.enqueuedTokenLimit ?? 2_000_000)
        : `The batch failed (${failure.code}).`)
    return { ok: false, model: validation.model, errors: [{ code: failure.code, message, param: null, line: null }] }
  }
  const limit = rec.knobs.enqueuedTokenLimit
  if (limit === null) return validation
  let enqueued = validation.inputTokens ?? 0
  for (const other of store.batches.values()) {
    if (other.id === rec.id || other.final !== null || other.validation === null || !other.validation.ok) continue
    if (derive(other, now).view.status === "in_progress") enqueued += other.validation.inputTokens ?? 0
  }
  if (enqueued <= limit) return validation
  return {
    ok: false,
    model: validation.model,
    errors: [{ code: "token_limit_exceeded", message: tokenLimitMessage(validation.model, limit), param: null, line: null }]
  }
}

// ===== finishing: the output and error files =====

export interface Finished {
  readonly final: BatchObject
  readonly files: ReadonlyArray<FileRecord>
}


/**
 * Answers the processed requests of a batch and writes its output and error
 * files (shuffled, seeded by the batch id), in slices that yield to the event
 * loop. Deterministic: the same batch gives the same bytes.
 */
export const finish = (store: Store, rec: BatchRecord, ending: Ending, promptCache?: Engine.PromptCache): Effect.Effect<Finished> =>
  Effect.gen(function*() {
    const v = rec.validation
    if (v === null || !v.ok) return yield* Effect.die(new Error(`batch ${rec.id} was not validated`))
    const total = v.total
    const input = store.dataPath(rec.input_file_id)
    if (!store.files.has(rec.input_file_id) || !fs.existsSync(input)) {
      return yield* Effect.die(new Error(`the input file ${rec.input_file_id} of batch ${rec.id} no longer exists`))
    }
    // where each request line is
    const offsets = new Float64Array(total)
    const lengths = new Uint32Array(total)
    let index = 0
    yield* Files.forEachLine(input, (data, start, end, fileOffset) => {
      if (isBlank(data, start, end) || index >= total) return
      offsets[index] = fileOffset
      lengths[index] = end - start
      index++
    })
    if (index !== total) return yield* Effect.die(new Error(`the input file of batch ${rec.id} changed after validation`))
    // the prompt cache meets the requests in input order, the order a provider works through a batch
    const cachedTokens = new Uint32Array(total)
    if (promptCache !== undefined && rec.endpoint === "/v1/chat/completions") {
      let i = 0
      yield* Files.forEachLine(input, (data, start, end) => {
        if (isBlank(data, start, end) || i >= total) return
        const at = i++
        if (at >= ending.processed) return
        const line = JSON.parse(data.toString("utf8", start, end)) as { body?: unknown }
        const engineInput = Answer.chatInput(line.body)
        if (!("status" in engineInput)) cachedTokens[at] = Engine.cacheUse(engineInput, promptCache).cache.cachedInputTokens
      })
    }

    const k = rec.knobs
    const vEnd = rec.created_ms + k.validationMs
    const perm = Hash.permutation(total, k.shuffle, Hash.hashString(rec.id, k.seed))
    const outputId = derivedId("file-", `${rec.id}:output`)
    const errorId = derivedId("file-", `${rec.id}:error`)
    const outputTemp = store.tempPath(outputId)
    const errorTemp = store.tempPath(errorId)
    let completed = 0
    let failed = 0
    let outputBytes = 0
    let errorBytes = 0
    let inputTokens = 0
    let cachedInputTokens = 0
    let outputTokens = 0
    const endedCode = ending.status === "expired" ? "batch_expired" : "batch_cancelled"
    const endedMessage = ending.status === "expired"
      ? "This request could not be executed before the completion window expired."
      : "This request was not executed because the batch was cancelled."

    yield* Effect.acquireUseRelease(
      Effect.sync(() => ({ input: fs.openSync(input, "r"), output: fs.openSync(outputTemp, "w"), error: fs.openSync(errorTemp, "w") })),
      (fds) =>
        Effect.gen(function*() {
          let buffer = Buffer.allocUnsafe(64 * 1024)
          let p = 0
          while (p < total) {
            const sliceStart = performance.now()
            const out: Array<string> = []
            const err: Array<string> = []
            let n = 0
            while (p < total && (performance.now() - sliceStart < SLICE_MS || n < 8)) {
              n++
              const i = perm[p++]!
              const length = lengths[i]!
              if (buffer.length < length) buffer = Buffer.allocUnsafe(Math.max(length, buffer.length * 2))
              fs.readSync(fds.input, buffer, 0, length, offsets[i]!)
              const line = JSON.parse(buffer.toString("utf8", 0, length)) as { custom_id: string; body: unknown }
              const customId = line.custom_id
              const lineKey = `${rec.id}:${customId}`
              const id = derivedId("batch_req_", lineKey, 32)
              // a dropped line is counted as what it was, but written nowhere
              const dropped = droppedLine(k, rec.id, customId)
              if (i >= ending.processed) {
                failed++
                if (dropped) continue
                err.push(JSON.stringify({ id, custom_id: customId, response: null, error: { code: endedCode, message: endedMessage } }))
                continue
              }
              const requestId = derivedId("req_", `${lineKey}:request`, 32)
              const injected = injectedLine(k, rec.id, customId)
              if (injected !== null) {
                failed++
                if (dropped) continue
                if ("code" in injected) {
                  err.push(JSON.stringify({
                    id,
                    custom_id: customId,
                    response: null,
                    error: { code: injected.code, message: lineErrorMessage(injected.code) }
                  }))
                  continue
                }
                const model = typeof (line.body as { model?: unknown })?.model === "string" ? (line.body as { model: string }).model : ""
                err.push(JSON.stringify({
                  id,
                  custom_id: customId,
                  response: { status_code: injected.status, request_id: requestId, body: Answer.injectedError(injected.status, model) },
                  error: null
                }))
                continue
              }
              const created = sec(vEnd + ((i + 1) * 1000) / k.linesPerSecond)
              const answer = Answer.answer(rec.endpoint, line.body, derivedId("chatcmpl-", `${lineKey}:completion`, 29), created, {
                cachedInputTokens: cachedTokens[i]!
              })
              const text = JSON.stringify({
                id,
                custom_id: customId,
                response: { status_code: answer.status, request_id: requestId, body: answer.body },
                error: null
              })
              if (answer.status === 200) {
                completed++
                inputTokens += answer.inputTokens
                cachedInputTokens += answer.cachedInputTokens ?? 0
                outputTokens += answer.outputTokens
                if (!dropped) out.push(text)
              } else {
                failed++
                if (!dropped) err.push(text)
              }
            }
            if (out.length > 0) {
              const chunk = Buffer.from(out.join("\n") + "\n")
              fs.writeSync(fds.output, chunk)
              outputBytes += chunk.length
            }
            if (err.length > 0) {
              const chunk = Buffer.from(err.join("\n") + "\n")
              fs.writeSync(fds.error, chunk)
              errorBytes += chunk.length
            }
            yield* Files.yieldToEventLoop
          }
        }),
      (fds) =>
        Effect.sync(() => {
          fs.closeSync(fds.input)
          fs.closeSync(fds.output)
          fs.closeSync(fds.error)
        })
    ).pipe(Effect.onError(() =>
      Effect.sync(() => {
        fs.rmSync(outputTemp, { force: true })
        fs.rmSync(errorTemp, { force: true })
      })
    ))

    const createdAt = sec(ending.at)
    const expiresAt = createdAt + (rec.output_expires_after_seconds ?? 30 * 86_400)
    const files: Array<FileRecord> = []
    const keep = (id: string, temp: string, bytes: number, kind: string) => {
      if (bytes === 0) {
        fs.rmSync(temp, { force: true })
        return null
      }
      fs.renameSync(temp, store.dataPath(id))
      files.push({
        id,
        object: "file",
        bytes,
        created_at: createdAt,
        expires_at: expiresAt,
        filename: `${rec.id}_${kind}.jsonl`,
        purpose: "batch_output",
        status: "processed",
        status_details: null,
        seq: 0
      })
      return id
    }
    const outputFileId = keep(outputId, outputTemp, outputBytes, "output")
    const errorFileId = keep(errorId, errorTemp, errorBytes, "error") ?? (k.emptyErrorFileId ? "" : null)
    const view = derive(rec, ending.at).view
    const final: BatchObject = {
      ...view,
      status: ending.status,
      output_file_id: outputFileId,
      error_file_id: errorFileId,
      finalizing_at: ending.finalizingAt !== null ? sec(ending.finalizingAt) : null,
      cancelling_at: ending.cancellingAt !== null ? sec(ending.cancellingAt) : null,
      completed_at: ending.status === "completed" ? createdAt : null,
      expired_at: ending.status === "expired" ? createdAt : null,
      cancelled_at: ending.status === "cancelled" ? createdAt : null,
      request_counts: { total, completed, failed },
      usage: {
        input_tokens: inputTokens,
        input_tokens_details: { cached_tokens: cachedInputTokens },
        output_tokens: outputTokens,
        output_tokens_details: { reasoning_tokens: 0 },
        total_tokens: inputTokens + outputTokens
      }
    }
    return { final, files }
  })
