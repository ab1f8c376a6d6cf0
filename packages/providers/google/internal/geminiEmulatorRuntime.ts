/**
 * The Gemini emulator's live state: the store, the knobs new batches are
 * created under, the server-wide faults and their counters, the upload
 * sessions, and the background jobs (validating an input file, writing a
 * batch's results) that reads of a batch start when its derived state needs
 * them. Jobs are keyed by batch id (one at a time per batch), run two at a
 * time, and are interrupted when the server's scope closes; a restarted
 * emulator starts them again.
 *
 * @internal
 */
import { Hash } from "../../local/Kit.ts"
import { Cause, Clock, Effect, FiberMap, Semaphore } from "effect"
import type * as crypto from "node:crypto"
import * as Engine from "../../local/Engine.ts"
import * as Batch from "./geminiEmulatorBatch.ts"
import type { BatchRecord, Failure, Knobs, Store } from "./geminiEmulatorStore.ts"
import { codeOfName } from "./geminiWire.ts"

// ===== faults =====

/** the endpoints a fault can target, named after the SDK method that calls them */
export const ENDPOINTS = [
  "files.upload",
  "files.get",
  "files.list",
  "files.delete",
  "files.download",
  "batches.create",
  "batches.createEmbeddings",
  "batches.get",
  "batches.list",
  "batches.cancel",
  "batches.delete",
  "models.generateContent",
  "models.embedContent"
] as const

/** an endpoint a fault can target */
export type EndpointName = typeof ENDPOINTS[number]

/** an HTTP fault on an endpoint (see `GeminiEmulator.Options.endpointFaults`) */
export interface EndpointFault {
  readonly endpoint?: EndpointName | "*" | undefined
  readonly status: number
  readonly times?: number | undefined
  readonly rate?: number | undefined
  /** seconds, sent as the RetryInfo `retryDelay` of a 429 (default 1) */
  readonly retryAfter?: number | undefined
  /** also send a `retry-after` header (seconds) with a 429 */
  readonly retryAfterHeader?: boolean | undefined
}

/** a whole-batch failure rule (see `GeminiEmulator.Options.failBatches`) */
export interface FailBatches {
  readonly times?: number | undefined
  readonly rate?: number | undefined
  /** a `google.rpc.Code` name (default `INTERNAL`) */
  readonly code?: string | undefined
  readonly message?: string | undefined
}

/** the server-wide fault knobs */
export interface FaultKnobs {
  readonly seed: number
  readonly endpointFaults: ReadonlyArray<EndpointFault>
  readonly createSucceedsThenFails: number
  readonly createLatency: { readonly ms: number; readonly times?: number | undefined } | null
  readonly failBatches: FailBatches | null
}

/** what is wrong with fault knobs read from JSON, or undefined */
export const check = (knobs: FaultKnobs): string | undefined => {
  for (const [i, f] of knobs.endpointFaults.entries()) {
    if (f.endpoint !== undefined && f.endpoint !== "*" && !(ENDPOINTS as ReadonlyArray<string>).includes(f.endpoint)) {
      return `endpointFaults[${i}].endpoint: '${String(f.endpoint)}' is not one of '*', ${ENDPOINTS.map((e) => `'${e}'`).join(", ")}`
    }
    if (!Number.isInteger(f.status) || f.status < 400 || f.status > 599) {
      return `endpointFaults[${i}].status: ${String(f.status)} is not an HTTP error status (400-599)`
    }
  }
  return undefined
}

/** the first `times` fire; after them each with probability `rate`; with neither, every one */
const fires = (index: number, times: number | undefined, rate: number | undefined, seed: number, key: string): boolean => {
  if (times === undefined && rate === undefined) return true
  if (times !== undefined && index < times) return true
  return rate !== undefined && Hash.unit(`${key}\u0000${index}`, seed) < rate
}

// ===== uploads =====

/** a resumable upload in progress */
export interface UploadSession {
  readonly id: string
  readonly displayName: string | null
  readonly mimeType: string
  readonly declared: number | null
  readonly temp: string
  readonly hash: crypto.Hash
  received: number
}

// ===== the runtime =====

/** the emulator's live state, shared by the routes */
export interface Runtime {
  readonly store: Store
  readonly knobs: Knobs
  readonly maxInlineBytes: number
  readonly maxFileBytes: number
  readonly faultKnobs: FaultKnobs
  readonly uploads: Map<string, UploadSession>
  /** the prompt cache (implicit caching) every answer of this emulator meets; in memory, emptied by a restart */
  readonly promptCache: Engine.PromptCache
  /** the batch as stored now (persisting any state it reached), starting the work it needs; undefined when unknown or deleted */
  readonly read: (id: string) => Effect.Effect<BatchRecord | undefined>
  /** asks for a cancel: the batch, or the reason it cannot be cancelled */
  readonly cancel: (id: string) => Effect.Effect<{ readonly batch: BatchRecord } | { readonly refused: string } | undefined>
  /** the fault answering this call of `name` (the call is counted), or undefined */
  readonly fault: (name: EndpointName) => EndpointFault | undefined
  /** counts a batch that was created; true: answer 500 although it exists */
  readonly createFailsAfter: () => boolean
  /** counts a batch that was created; how long to wait before answering (0: at once) */
  readonly createDelay: () => number
  /** counts a batch being created; its whole-batch failure, or null */
  readonly batchFailure: () => Failure | null
}

/** the runtime over a loaded store; its jobs are interrupted when the scope closes */
export const make = Effect.fnUntraced(function*(options: {
  readonly store: Store
  readonly knobs: Knobs
  readonly maxInlineBytes: number
  readonly maxFileBytes: number
  readonly faults: FaultKnobs
}) {
  const { store } = options
  const jobs = yield* FiberMap.make<string>()
  const permits = yield* Semaphore.make(2)

  /** a job's failure (not its interruption) ends the batch as failed, so clients never poll forever */
  const guard = (id: string, job: Effect.Effect<void>) =>
    job.pipe(
      Semaphore.withPermit(permits),
      Effect.catchCause((cause) =>
        Cause.hasInterruptsOnly(cause)
          ? Effect.failCause(cause)
          : Effect.gen(function*() {
            const rec = store.batches.get(id)
            if (rec === undefined || rec.final !== null) return
            yield* Effect.logError(`gemini emulator: batch ${id} failed`, cause)
            const now = yield* Clock.currentTimeMillis
            store.putBatch({
              ...rec,
              final: {
                state: "BATCH_STATE_FAILED",
                ended_ms: now,
                total: rec.validation !== null && rec.validation.ok ? rec.validation.total : 0,
                succeeded: 0,
                failed: 0,
                output: null,
                error: { code: 13, message: `The emulator failed: ${Cause.pretty(cause).split("\n")[0]}` }
              }
            })
          })
      )
    )

  const validateJob = (id: string) =>
    Effect.gen(function*() {
      const rec = store.batches.get(id)
      if (rec === undefined || rec.validation !== null || rec.deleted_ms !== null) return
      const validation = yield* Batch.validateFile(store, rec)
      store.putBatch({ ...store.batches.get(id)!, validation })
    })

  const finishJob = (id: string, ending: Batch.Ending) =>
    Effect.gen(function*() {
      const rec = store.batches.get(id)
      if (rec === undefined || rec.final !== null || rec.deleted_ms !== null) return
      const { final } = yield* Batch.finish(store, rec, ending)
      store.putBatch({ ...store.batches.get(id)!, final })
    })

  const read = (id: string): Effect.Effect<BatchRecord | undefined> =>
    Effect.gen(function*() {
      const rec = store.batches.get(id)
      if (rec === undefined || rec.deleted_ms !== null) return undefined
      if (rec.final !== null) return rec
      const now = yield* Clock.currentTimeMillis
      const derived = Batch.derive(rec, now)
      if (derived.final !== undefined) {
        const updated: BatchRecord = { ...rec, final: derived.final }
        store.putBatch(updated)
        return updated
      }
      if (derived.need === "validate") {
        yield* FiberMap.run(jobs, id, { onlyIfMissing: true })(guard(id, validateJob(id)))
      } else if (derived.need !== null) {
        yield* FiberMap.run(jobs, id, { onlyIfMissing: true })(guard(id, finishJob(id, derived.need)))
      }
      return store.batches.get(id)
    })

  const cancel = (id: string) =>
    Effect.gen(function*() {
      const rec = yield* read(id)
      if (rec === undefined) return undefined
      if (rec.final !== null) return { refused: `the batch is already in state ${rec.final.state}` }
      if (rec.cancel_ms !== null) return { batch: rec }
      const now = yield* Clock.currentTimeMillis
      const need = Batch.derive(rec, now).need
      if (need !== null && need !== "validate") return { refused: "the batch has finished processing" }
      const updated: BatchRecord = { ...rec, cancel_ms: now }
      store.putBatch(updated)
      return { batch: updated }
    })

  const fk = options.faults
  const seen = fk.endpointFaults.map(() => 0)
  let creates = 0
  let delayed = 0
  let batches = 0
  const fault = (name: EndpointName): EndpointFault | undefined => {
    for (const [i, f] of fk.endpointFaults.entries()) {
      if (f.endpoint !== undefined && f.endpoint !== "*" && f.endpoint !== name) continue
      const index = seen[i]!++
      if (fires(index, f.times, f.rate, fk.seed, `endpoint\u0000${i}\u0000${f.endpoint ?? "*"}`)) return f
    }
    return undefined
  }
  const batchFailure = (): Failure | null => {
    const rule = fk.failBatches
    const index = batches++
    if (rule === null || !fires(index, rule.times, rule.rate, fk.seed, "failBatches")) return null
    const code = rule.code === undefined ? 13 : codeOfName(rule.code) ?? 13
    return { code, message: rule.message ?? "The batch failed: an internal error has occurred." }
  }

  return {
    store,
    knobs: options.knobs,
    maxInlineBytes: options.maxInlineBytes,
    maxFileBytes: options.maxFileBytes,
    faultKnobs: fk,
    uploads: new Map<string, UploadSession>(),
    promptCache: Engine.promptCache(),
    read,
    cancel,
    fault,
    createFailsAfter: () => creates++ < fk.createSucceedsThenFails,
    createDelay: () => {
      const late = fk.createLatency
      if (late === null) return 0
      return late.times === undefined || delayed++ < late.times ? Math.max(0, late.ms) : 0
    },
    batchFailure
  } satisfies Runtime
})
