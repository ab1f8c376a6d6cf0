/**
 * A Gemini batch's life, derived from its timestamps: where it is now
 * (`derive`), the validation of an input file (`validateFile`) and the
 * results written once it ends (`finish`). No timers: every read derives the
 * state from the creation time, the knobs the batch was created under and
 * the time a cancel was asked for, so a restarted emulator carries on where
 * it stopped.
 *
 * Timeline of a batch of N requests at `lps` requests per second: pending
 * for `pendingMs` (an input file is validated then); running, request i
 * (0-based) done at `pending end + (i + 1) / lps`; then succeeded. It ends
 * `BATCH_STATE_EXPIRED` at `created + completionWindowMs` when that comes
 * first, with the results of the requests done by then; a cancel ends it
 * `BATCH_STATE_CANCELLED` after `cancellingMs`, with the results of the
 * requests done when the cancel came (the API has no cancelling state: it
 * stays running meanwhile). A batch whose input is refused, or picked by
 * `failBatches`, ends `BATCH_STATE_FAILED` when its pending time ends.
 *
 * @internal
 */
import { Files, Hash } from "../../local/Kit.ts"
import { Effect } from "effect"
import * as crypto from "node:crypto"
import * as fs from "node:fs"
import * as Answer from "./geminiEmulatorAnswer.ts"
import type { BatchRecord, Failure, Final, Knobs, Store, Validation } from "./geminiEmulatorStore.ts"
import { derivedId } from "./geminiEmulatorStore.ts"
import { type BatchState, CODE_NAMES, codeOfName, TYPES } from "./geminiWire.ts"

/** how long a slice of synchronous work may run before yielding */
const SLICE_MS = 8

const iso = (ms: number) => new Date(ms).toISOString()

// ===== state derivation =====

/** how a batch ends: how many requests (in order) were processed, and when */
export interface Ending {
  readonly state: "BATCH_STATE_SUCCEEDED" | "BATCH_STATE_EXPIRED" | "BATCH_STATE_CANCELLED"
  readonly processed: number
  readonly at: number
}

/** where a batch without a final record is at `now` */
export interface Derived {
  readonly state: "BATCH_STATE_PENDING" | "BATCH_STATE_RUNNING"
  /** requests done so far */
  readonly processed: number
  /** work that must run before the batch can move on */
  readonly need: "validate" | Ending | null
  /** a final record reached without any work (a refused input, an injected failure, a cancel while pending) */
  readonly final?: Final
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

const failedFinal = (at: number, total: number, error: Failure): Final => ({
  state: "BATCH_STATE_FAILED",
  ended_ms: at,
  total,
  succeeded: 0,
  failed: 0,
  output: null,
  error
})

/** where the batch should be at `now` */
export const derive = (rec: BatchRecord, now: number): Derived => {
  const k = rec.knobs
  const vEnd = rec.created_ms + k.pendingMs
  const cancel = rec.cancel_ms
  const v = rec.validation
  const total = v !== null && v.ok ? v.total : 0
  if (cancel !== null && cancel < vEnd) {
    const at = cancel + k.cancellingMs
    if (now < at) return { state: "BATCH_STATE_PENDING", processed: 0, need: null }
    return {
      state: "BATCH_STATE_PENDING",
      processed: 0,
      need: null,
      final: {
        state: "BATCH_STATE_CANCELLED",
        ended_ms: at,
        total,
        succeeded: 0,
        failed: 0,
        output: null,
        error: { code: 1, message: "CANCELLED" }
      }
    }
  }
  if (now < vEnd) return { state: "BATCH_STATE_PENDING", processed: 0, need: null }
  if (v === null) return { state: "BATCH_STATE_PENDING", processed: 0, need: "validate" }
  if (!v.ok) return { state: "BATCH_STATE_PENDING", processed: 0, need: null, final: failedFinal(vEnd, 0, v.error) }
  if (rec.injected !== null) {
    return { state: "BATCH_STATE_PENDING", processed: 0, need: null, final: failedFinal(vEnd, total, rec.injected) }
  }
  const lps = k.linesPerSecond
  const processedAt = (t: number) => Math.max(0, Math.min(total, Math.floor(((t - vEnd) * lps) / 1000)))
  const pEnd = vEnd + Math.ceil((total * 1000) / lps)
  const deadline = rec.created_ms + k.completionWindowMs
  if (cancel !== null && cancel < Math.min(pEnd, deadline)) {
    const at = cancel + k.cancellingMs
    const processed = processedAt(cancel)
    return {
      state: "BATCH_STATE_RUNNING",
      processed,
      need: now >= at ? { state: "BATCH_STATE_CANCELLED", processed, at } : null
    }
  }
  if (deadline < pEnd) {
    return {
      state: "BATCH_STATE_RUNNING",
      processed: processedAt(Math.min(now, deadline)),
      need: now >= deadline ? { state: "BATCH_STATE_EXPIRED", processed: processedAt(deadline), at: deadline } : null
    }
  }
  return {
    state: "BATCH_STATE_RUNNING",
    processed: processedAt(now),
    need: now >= pEnd ? { state: "BATCH_STATE_SUCCEEDED", processed: total, at: pEnd } : null
  }
}

// ===== the operation a client sees =====

/** an int64 stat in proto3 JSON: a string, left out when 0 */
const stat = (out: Record<string, string>, key: string, n: number) => {
  if (n !== 0) out[key] = String(n)
}

const stats = (total: number, succeeded: number, failed: number) => {
  const out: Record<string, string> = {}
  stat(out, "requestCount", total)
  stat(out, "successfulRequestCount", succeeded)
  stat(out, "failedRequestCount", failed)
  stat(out, "pendingRequestCount", total - succeeded - failed)
  return out
}

/**
 * The batch as an `Operation` JSON text at `now`. `output` is the JSON text of
 * `metadata.output` (a responses file, or the inline responses), or undefined:
 * inline responses are spliced in as text, never parsed.
 */
export const operation = (rec: BatchRecord, now: number, output: string | undefined): string => {
  const name = `batches/${rec.id}`
  const f = rec.final
  let state: BatchState
  let batchStats: Record<string, string>
  let update = rec.created_ms
  if (f !== null) {
    state = f.state
    batchStats = stats(f.total, f.succeeded, f.failed)
    update = f.ended_ms
  } else {
    const d = derive(rec, now)
    state = d.state
    const v = rec.validation
    const total = v !== null && v.ok ? v.total : 0
    const failed = v !== null && v.ok ? countBelow(v.failing, d.processed) : 0
    batchStats = stats(total, d.processed - failed, failed)
    if (d.state === "BATCH_STATE_RUNNING") update = rec.created_ms + rec.knobs.pendingMs
  }
  const metadata: Record<string, unknown> = {
    "@type": rec.kind === "generate" ? TYPES.generateContentBatch : TYPES.embedContentBatch,
    model: rec.model,
    name,
    displayName: rec.displayName
  }
  if (rec.inputFile !== null) metadata.inputConfig = { fileName: rec.inputFile }
  metadata.createTime = iso(rec.created_ms)
  if (f !== null) metadata.endTime = iso(f.ended_ms)
  metadata.updateTime = iso(update)
  metadata.batchStats = batchStats
  metadata.state = state
  metadata.priority = rec.priority
  const head: Record<string, unknown> = { name, metadata }
  if (f !== null) {
    head.done = true
    if (f.error !== null) head.error = f.error
  }
  const text = JSON.stringify(head)
  if (output === undefined) return text
  // metadata.output, spliced in before metadata's closing brace
  const metaEnd = text.indexOf(",\"priority\":")
  const close = text.indexOf("}", metaEnd)
  return `${text.slice(0, close)},"output":${output}${text.slice(close)}`
}

// ===== injected line failures =====

/** the `google.rpc.Code` injected into a request, if any: a hash of (seed, batch id, key) */
export const injected = (knobs: Knobs, batchId: string, key: string): number | undefined => {
  if (knobs.lineFailures.length === 0) return undefined
  const u = Hash.unit(`${batchId}\u0000${key}`, knobs.seed)
  let acc = 0
  for (const f of knobs.lineFailures) {
    acc += f.rate
    if (u < acc) return codeOfName(f.code) ?? 13
  }
  return undefined
}

const INJECTED_MESSAGES: Readonly<Record<number, string>> = {
  3: "Request contains an invalid argument.",
  4: "Deadline expired before operation could complete.",
  8: "Resource has been exhausted (e.g. check quota).",
  13: "An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting",
  14: "The model is overloaded. Please try again later."
}

/** the `google.rpc.Status` of an injected line failure */
export const injectedStatus = (code: number): Failure & { readonly status: string } => ({
  code,
  message: INJECTED_MESSAGES[code] ?? `The request failed (${CODE_NAMES[code] ?? code}).`,
  status: CODE_NAMES[code] ?? "UNKNOWN"
})

// ===== input lines =====

const isObject = (u: unknown): u is Record<string, unknown> => typeof u === "object" && u !== null && !Array.isArray(u)

/**
 * The key, metadata and request of a line: a file line `{key, request}` or an
 * inline element `{request, metadata?}` (keyed by `metadata.key`, else by its
 * index); a reason when it has neither a key nor an index.
 */
export const lineParts = (
  line: unknown,
  index?: number
): { readonly key: string; readonly metadata: unknown; readonly request: unknown } | string => {
  if (!isObject(line)) return "the line is not a JSON object"
  const metadata = line.metadata
  const key = typeof line.key === "string"
    ? line.key
    : isObject(metadata) && typeof metadata.key === "string"
    ? metadata.key
    : index !== undefined
    ? String(index)
    : undefined
  if (key === undefined || key.length === 0) return "the line has no \"key\""
  if (!isObject(line.request)) return "the line has no \"request\" object"
  return { key, metadata, request: line.request }
}

/** what an input line becomes: an injected failure, the API's refusal, or the answer */
const answerLine = (rec: BatchRecord, key: string, request: unknown) => {
  const code = injected(rec.knobs, rec.id, key)
  if (code !== undefined) return injectedStatus(code)
  return Answer.answer(rec.kind, request, rec.model, derivedId(`${rec.id}:${key}:response`, 20))
}

/**
 * Validates an input file, streaming it: every line must be a JSON object
 * with a `key` and a `request` (otherwise the batch fails, naming the line);
 * the indices of the requests that will fail (injected, or refused by the
 * API's checks) are kept for the running counts.
 */
export const validateFile = (store: Store, rec: BatchRecord): Effect.Effect<Validation> =>
  Effect.gen(function*() {
    const id = rec.inputFile!.slice("files/".length)
    const file = store.files.get(id)
    if (file === undefined || !fs.existsSync(store.dataPath(id))) {
      return { ok: false, error: { code: 5, message: `The input file ${rec.inputFile} does not exist.` } } satisfies Validation
    }
    let error: Failure | undefined
    const failing: Array<number> = []
    let count = 0
    yield* Files.forEachLine(store.dataPath(id), (data, start, end, _offset, lineNo) => {
      if (error !== undefined) return
      let blank = true
      for (let i = start; i < end; i++) {
        const c = data[i]!
        if (c !== 32 && c !== 9 && c !== 13) {
          blank = false
          break
        }
      }
      if (blank) return
      const index = count++
      let parsed: unknown
      try {
        parsed = JSON.parse(data.toString("utf8", start, end))
      } catch {
        error = { code: 3, message: `Invalid JSON in the input file ${rec.inputFile} at line ${lineNo}.` }
        return
      }
      const parts = lineParts(parsed)
      if (typeof parts === "string") {
        error = { code: 3, message: `Invalid request in the input file ${rec.inputFile} at line ${lineNo}: ${parts}.` }
        return
      }
      if ("code" in answerLine(rec, parts.key, parts.request)) failing.push(index)
    })
    if (error !== undefined) return { ok: false, error } satisfies Validation
    if (count === 0) return { ok: false, error: { code: 3, message: `The input file ${rec.inputFile} has no requests.` } } satisfies Validation
    return { ok: true, total: count, failing } satisfies Validation
  })

/** the indices of the inline requests that will fail, from their lines as stored */
export const failingOf = (rec: BatchRecord, lines: ReadonlyArray<{ readonly key: string; readonly request: unknown }>) => {
  const failing: Array<number> = []
  lines.forEach((line, i) => {
    if ("code" in answerLine(rec, line.key, line.request)) failing.push(i)
  })
  return failing
}

// ===== finishing: the results =====


/** the output file of a batch, as the API names it */
export const outputFileId = (batchId: string) => `batch-${batchId}`

/**
 * Answers the processed requests of a batch and writes its results (shuffled,
 * seeded by the batch id) in slices that yield to the event loop: for a file
 * batch a `files/batch-<id>` file of `{"key", "response" | "error"}` lines,
 * for an inline batch `<id>.results.jsonl` of `InlinedResponse`s
 * (`{"response" | "error", "metadata"}`). Requests not processed (expired,
 * cancelled) get no line. Deterministic: the same batch gives the same bytes.
 * Returns the final record and the output file, if one was written.
 */
export const finish = (
  store: Store,
  rec: BatchRecord,
  ending: Ending
): Effect.Effect<{ readonly final: Final; readonly outputBytes: number }> =>
  Effect.gen(function*() {
    const v = rec.validation
    if (v === null || !v.ok) return yield* Effect.die(new Error(`batch ${rec.id} was not validated`))
    const total = v.total
    const inputId = rec.inputFile?.slice("files/".length)
    const input = inputId !== undefined ? store.dataPath(inputId) : store.requestsPath(rec.id)
    if (!fs.existsSync(input)) return yield* Effect.die(new Error(`the requests of batch ${rec.id} are gone`))
    const offsets = new Float64Array(total)
    const lengths = new Uint32Array(total)
    let index = 0
    yield* Files.forEachLine(input, (data, start, end, fileOffset) => {
      if (index >= total) return
      let blank = true
      for (let i = start; i < end; i++) {
        const c = data[i]!
        if (c !== 32 && c !== 9 && c !== 13) {
          blank = false
          break
        }
      }
      if (blank) return
      offsets[index] = fileOffset
      lengths[index] = end - start
      index++
    })
    if (index !== total) return yield* Effect.die(new Error(`the requests of batch ${rec.id} changed after validation`))
    const k = rec.knobs
    const perm = Hash.permutation(total, k.shuffle, Hash.hashString(rec.id, k.seed))
    const inline = rec.inputFile === null
    const temp = store.tempPath(inline ? `${rec.id}.results` : outputFileId(rec.id))
    let succeeded = 0
    let failed = 0
    let bytes = 0
    yield* Effect.acquireUseRelease(
      Effect.sync(() => ({ input: fs.openSync(input, "r"), output: fs.openSync(temp, "w") })),
      (fds) =>
        Effect.gen(function*() {
          let buffer = Buffer.allocUnsafe(64 * 1024)
          let p = 0
          while (p < total) {
            const sliceStart = performance.now()
            const out: Array<string> = []
            while (p < total && (performance.now() - sliceStart < SLICE_MS || out.length < 8)) {
              const i = perm[p++]!
              if (i >= ending.processed) continue
              const length = lengths[i]!
              if (buffer.length < length) buffer = Buffer.allocUnsafe(Math.max(length, buffer.length * 2))
              fs.readSync(fds.input, buffer, 0, length, offsets[i]!)
              const parts = lineParts(JSON.parse(buffer.toString("utf8", 0, length)), inline ? i : undefined)
              if (typeof parts === "string") return yield* Effect.die(new Error(`batch ${rec.id}: ${parts}`))
              const result = answerLine(rec, parts.key, parts.request)
              let entry: Record<string, unknown>
              if ("code" in result) {
                failed++
                entry = { error: { code: result.code, message: result.message, status: CODE_NAMES[result.code] ?? "UNKNOWN" } }
              } else {
                succeeded++
                entry = {
                  response: rec.kind === "embed" ? { ...result.body, tokenCount: String(result.inputTokens) } : result.body
                }
              }
              // inline responses echo the request's metadata (if it had any), file lines carry the key
              out.push(JSON.stringify(inline ? (parts.metadata !== undefined ? { ...entry, metadata: parts.metadata } : entry) : { key: parts.key, ...entry }))
            }
            if (out.length > 0) {
              const chunk = Buffer.from(out.join("\n") + "\n")
              fs.writeSync(fds.output, chunk)
              bytes += chunk.length
            }
            yield* Files.yieldToEventLoop
          }
        }),
      (fds) =>
        Effect.sync(() => {
          fs.closeSync(fds.input)
          fs.closeSync(fds.output)
        })
    ).pipe(Effect.onError(() => Effect.sync(() => fs.rmSync(temp, { force: true }))))
    let output: string | null = null
    if (inline) {
      fs.renameSync(temp, store.resultsPath(rec.id))
      output = "inline"
    } else if (succeeded + failed > 0) {
      const id = outputFileId(rec.id)
      fs.renameSync(temp, store.dataPath(id))
      store.putFile({
        id,
        seq: store.nextSeq(),
        displayName: `batch-${rec.id}`,
        mimeType: "application/jsonl",
        bytes,
        sha256: yield* sha256Of(store.dataPath(id)),
        created_ms: ending.at,
        source: "GENERATED"
      })
      output = `files/${id}`
    } else fs.rmSync(temp, { force: true })
    const final: Final = {
      state: ending.state,
      ended_ms: ending.at,
      total,
      succeeded,
      failed,
      output,
      error: ending.state === "BATCH_STATE_CANCELLED"
        ? { code: 1, message: "CANCELLED" }
        : ending.state === "BATCH_STATE_EXPIRED"
        ? { code: 4, message: "The batch expired before all of its requests were processed." }
        : null
    }
    return { final, outputBytes: bytes }
  })

/** base64 SHA-256 of a file, read as a stream */
const sha256Of = (file: string) =>
  Effect.promise(() =>
    new Promise<string>((resolve, reject) => {
      const hash = crypto.createHash("sha256")
      fs.createReadStream(file).on("data", (d) => hash.update(d)).on("end", () => resolve(hash.digest("base64"))).on("error", reject)
    })
  )
