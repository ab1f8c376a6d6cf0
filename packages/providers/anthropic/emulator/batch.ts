/**
 * A Message Batch's life, derived from its timestamps: where it is now
 * (`derive`, `view`) and the results written once it ends (`finish`). No
 * timers: every read derives the state from the creation time, the knobs the
 * batch was created under and the time a cancel was asked for, so a restarted
 * emulator carries on where it stopped.
 *
 * Timeline of a batch of N requests at `lps` requests per second: in progress,
 * request i (0-based) done at `created + (i + 1) / lps`; ended once all are
 * done. It ends at `created + completionWindowMs` instead when that comes
 * first, the requests not done by then `expired`. A cancel moves it to
 * `canceling` for `cancellingMs`, then it ends, the requests not done when
 * the cancel came `canceled`. Counts stay at `processing: N` until it ends.
 */
import { Files, Hash } from "../../local/Kit.ts"
import { Effect } from "effect"
import * as fs from "node:fs"
import * as Answer from "./answer.ts"
import type { BatchObject, BatchRecord, Final, InjectedType, Knobs, RequestCounts, Store } from "./store.ts"
import { derivedId } from "./store.ts"

const iso = (ms: number) => new Date(ms).toISOString()

/** results stay available this long after creation, then the batch is archived */
export const ARCHIVE_AFTER_MS = 29 * 86_400_000

/** yields to the event loop (not only to other fibers), so HTTP requests are served between slices of work */


/** how long a slice of synchronous work may run before yielding */
const SLICE_MS = 8

// ===== state derivation =====

/** how a batch ends: how many requests (in order) were processed, why the rest were not, and when */
export interface Ending {
  readonly reason: "completed" | "expired" | "canceled"
  readonly processed: number
  readonly at: number
}

/** where a batch that has not been finished yet is */
export interface Derived {
  readonly status: "in_progress" | "canceling"
  /** the batch has ended at this point: its results must be written */
  readonly need: Ending | null
}

/** where a batch without results should be at `now` */
export const derive = (rec: BatchRecord, now: number): Derived => {
  const k = rec.knobs
  const total = rec.total
  const lps = k.linesPerSecond
  const processedAt = (t: number) => Math.max(0, Math.min(total, Math.floor(((t - rec.created_ms) * lps) / 1000)))
  const pEnd = rec.created_ms + Math.ceil((total * 1000) / lps)
  const deadline = rec.created_ms + k.completionWindowMs
  const cancel = rec.cancel_ms
  if (cancel !== null && cancel < Math.min(pEnd, deadline)) {
    const at = cancel + k.cancellingMs
    return { status: "canceling", need: now >= at ? { reason: "canceled", processed: processedAt(cancel), at } : null }
  }
  if (deadline < pEnd) {
    return {
      status: "in_progress",
      need: now >= deadline ? { reason: "expired", processed: processedAt(deadline), at: deadline } : null
    }
  }
  return { status: "in_progress", need: now >= pEnd ? { reason: "completed", processed: total, at: pEnd } : null }
}

/** the results URL of a batch, on the host the client reached the emulator at */
export const resultsUrl = (origin: string, id: string) => `${origin}/v1/messages/batches/${id}/results`

/** the batch as a client sees it at `now`; `origin` is where its results are served */
export const view = (rec: BatchRecord, now: number, origin: string): BatchObject => {
  const common = {
    id: rec.id,
    type: "message_batch" as const,
    created_at: iso(rec.created_ms),
    expires_at: iso(rec.created_ms + rec.knobs.completionWindowMs),
    cancel_initiated_at: rec.cancel_ms !== null ? iso(rec.cancel_ms) : null
  }
  if (rec.final !== null) {
    const archived = now >= rec.created_ms + ARCHIVE_AFTER_MS ? iso(rec.created_ms + ARCHIVE_AFTER_MS) : null
    return {
      id: common.id,
      type: common.type,
      processing_status: "ended",
      request_counts: rec.final.counts,
      ended_at: iso(rec.final.ended_ms),
      created_at: common.created_at,
      expires_at: common.expires_at,
      archived_at: archived,
      cancel_initiated_at: common.cancel_initiated_at,
      results_url: resultsUrl(origin, rec.id)
    }
  }
  return {
    id: common.id,
    type: common.type,
    processing_status: derive(rec, now).status,
    request_counts: { processing: rec.total, succeeded: 0, errored: 0, canceled: 0, expired: 0 },
    ended_at: null,
    created_at: common.created_at,
    expires_at: common.expires_at,
    archived_at: null,
    cancel_initiated_at: common.cancel_initiated_at,
    results_url: null
  }
}

// ===== injected failures =====

/** the failure type injected into a request, if any: a hash of (seed, batch id, custom_id) */
export const injected = (knobs: Knobs, batchId: string, customId: string): InjectedType | undefined => {
  if (knobs.lineFailures.length === 0) return undefined
  const u = Hash.hashString(`${batchId}\u0000${customId}`, knobs.seed) / 4294967296
  let acc = 0
  for (const f of knobs.lineFailures) {
    acc += f.rate
    if (u < acc) return f.type
  }
  return undefined
}


// ===== finishing: the results file =====


const CACHE_MARK = Buffer.from("cache_control")

/**
 * Answers the processed requests of a batch and writes its results file
 * (shuffled, seeded by the batch id), in slices that yield to the event loop.
 * Deterministic: the same batch gives the same bytes.
 *
 * Prompt caching: the first request (in request order) with a given cached
 * prefix writes it, the later ones read it (the real API's minimum cacheable
 * length is not enforced, so small prompts show the effect too).
 */
export const finish = (store: Store, rec: BatchRecord, ending: Ending): Effect.Effect<Final> =>
  Effect.gen(function*() {
    const input = store.requestsPath(rec.id)
    if (!fs.existsSync(input)) return yield* Effect.die(new Error(`the requests of batch ${rec.id} are gone`))
    const total = rec.total
    const offsets = new Float64Array(total)
    const lengths = new Uint32Array(total)
    const cacheKeys = new Map<number, string>()
    const firstWriter = new Map<string, number>()
    let index = 0
    yield* Files.forEachLine(input, (data, start, end, fileOffset) => {
      if (end === start || index >= total) return
      offsets[index] = fileOffset
      lengths[index] = end - start
      const line = data.subarray(start, end)
      if (line.indexOf(CACHE_MARK) >= 0) {
        const parsed = Answer.parse((JSON.parse(line.toString("utf8")) as { params: unknown }).params, rec.version)
        if (typeof parsed !== "string" && parsed.cache !== undefined) {
          cacheKeys.set(index, parsed.cache.key)
          if (!firstWriter.has(parsed.cache.key)) firstWriter.set(parsed.cache.key, index)
        }
      }
      index++
    })
    if (index !== total) return yield* Effect.die(new Error(`the requests of batch ${rec.id} changed after creation`))

    const k = rec.knobs
    const perm = Hash.permutation(total, k.shuffle, Hash.hashString(rec.id, k.seed))
    const temp = store.tempPath(`${rec.id}.results`)
    const counts = { succeeded: 0, errored: 0, canceled: 0, expired: 0 }
    const unprocessed = ending.reason === "expired" ? "expired" : "canceled"

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
              const length = lengths[i]!
              if (buffer.length < length) buffer = Buffer.allocUnsafe(Math.max(length, buffer.length * 2))
              fs.readSync(fds.input, buffer, 0, length, offsets[i]!)
              const line = JSON.parse(buffer.toString("utf8", 0, length)) as { custom_id: string; params: unknown }
              const customId = line.custom_id
              const lineKey = `${rec.id}:${customId}`
              if (i >= ending.processed) {
                counts[unprocessed]++
                out.push(JSON.stringify({ custom_id: customId, result: { type: unprocessed } }))
                continue
              }
              const requestId = derivedId("req_", `${lineKey}:request`, 22)
              const failure = injected(k, rec.id, customId)
              const parsed = failure === undefined ? Answer.parse(line.params, rec.version) : undefined
              if (failure !== undefined || typeof parsed === "string") {
                counts.errored++
                const error = failure !== undefined
                  ? Answer.injectedError(failure)
                  : { type: "invalid_request_error", message: parsed as string }
                out.push(JSON.stringify({
                  custom_id: customId,
                  result: { type: "errored", error: Answer.errorBody(error.type, error.message, requestId) }
                }))
                continue
              }
              const key = cacheKeys.get(i)
              const cache: Answer.CacheUse = key === undefined ? null : firstWriter.get(key) === i ? "write" : "read"
              const answer = Answer.answer(
                parsed!,
                { message: derivedId("msg_", `${lineKey}:message`), toolUse: derivedId("toolu_", `${lineKey}:tool`) },
                cache,
                "batch"
              )
              counts.succeeded++
              out.push(JSON.stringify({ custom_id: customId, result: { type: "succeeded", message: answer.message } }))
            }
            if (out.length > 0) fs.writeSync(fds.output, out.join("\n") + "\n")
            yield* Files.yieldToEventLoop
          }
        }),
      (fds) =>
        Effect.sync(() => {
          fs.closeSync(fds.input)
          fs.closeSync(fds.output)
        })
    ).pipe(Effect.onError(() => Effect.sync(() => fs.rmSync(temp, { force: true }))))

    fs.renameSync(temp, store.resultsPath(rec.id))
    const final: RequestCounts = { processing: 0, ...counts }
    return { ended_ms: ending.at, counts: final }
  })
