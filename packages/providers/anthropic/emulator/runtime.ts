/**
 * The emulator's live state: the store, the knobs new batches are created
 * under, the endpoint faults, and the background jobs (writing a batch's
 * results once it ended) that reads of a batch start when its derived state
 * needs them. Jobs are keyed by batch id (one at a time per batch), run two
 * at a time, and are interrupted when the server's scope closes; a restarted
 * emulator starts them again.
 */
import { Hash } from "../../local/Kit.ts"
import { Cause, Clock, Effect, FiberMap, Semaphore } from "effect"
import * as fs from "node:fs"
import * as Batch from "./batch.ts"
import type { BatchRecord, Knobs, Store } from "./store.ts"

/** the endpoints a fault can be injected into */
export type Endpoint = "create" | "retrieve" | "list" | "cancel" | "delete" | "results" | "messages"

/** an injected HTTP failure of an endpoint */
export interface EndpointFault {
  /** which endpoint (default: every endpoint) */
  readonly endpoint?: Endpoint | "*" | undefined
  /** 429, 500, 503, 529, … */
  readonly status: number
  /** fail the first `times` calls */
  readonly times?: number | undefined
  /** fail this share of calls (drawn from a hash of the seed and the call number) */
  readonly rate?: number | undefined
  /** sent as `retry-after` (seconds, rounded up) and `retry-after-ms` (default 1000) */
  readonly retryAfterMs?: number | undefined
  /**
   * `create` only: `before` (default) refuses the call, nothing is created; `after` creates the batch and then
   * answers with the error, as a server that failed after doing the work (the client cannot tell it went through)
   */
  readonly phase?: "before" | "after" | undefined
}

/** creates received and not answered yet (a gauge), and totals */
export interface Creates {
  /** create requests received */
  received: number
  /** create requests answered (with the batch or an error) */
  answered: number
  /** create requests being handled now: received, not answered, the client still there */
  inFlight: number
}

/** the emulator's live state, shared by the routes */
export interface Runtime {
  readonly store: Store
  readonly knobs: Knobs
  readonly maxRequestsPerBatch: number
  readonly maxBodyBytes: number
  /** a create is answered this long after its batch was created (default 0) */
  readonly createLatencyMs: number
  /** a batch is listed only this long after it was created (default 0) */
  readonly listLagMs: number
  /** the create gauges */
  readonly creates: Creates
  /** prompt-cache prefixes seen by `POST /v1/messages` (in memory: a restart empties the cache, as it would expire) */
  readonly syncCache: Set<string>
  /** the batch as stored now (persisting any state it reached), starting the work it needs; undefined when unknown or deleted */
  readonly read: (id: string) => Effect.Effect<BatchRecord | undefined>
  /** asks for a cancel: the batch, or the reason it cannot be canceled */
  readonly cancel: (id: string) => Effect.Effect<{ readonly batch: BatchRecord } | { readonly refused: string } | undefined>
  /** the fault to answer this call of `endpoint` with, if any (`phase`: which faults of `create` are asked about) */
  readonly fault: (endpoint: Endpoint, phase?: "before" | "after") => EndpointFault | undefined
}

/** the runtime over a loaded store; its jobs are interrupted when the scope closes */
export const make = Effect.fnUntraced(function*(options: {
  readonly store: Store
  readonly knobs: Knobs
  readonly maxRequestsPerBatch: number
  readonly maxBodyBytes: number
  readonly createLatencyMs?: number | undefined
  readonly listLagMs?: number | undefined
  readonly endpointFaults: ReadonlyArray<EndpointFault>
}) {
  const { knobs, store } = options
  const jobs = yield* FiberMap.make<string>()
  const permits = yield* Semaphore.make(2)

  /** a job's failure (not its interruption) ends the batch with every request errored, so clients never poll forever */
  const guard = (id: string, job: Effect.Effect<void>) =>
    job.pipe(
      Semaphore.withPermit(permits),
      Effect.catchCause((cause) =>
        Cause.hasInterruptsOnly(cause)
          ? Effect.failCause(cause)
          : Effect.gen(function*() {
            const rec = store.batches.get(id)
            if (rec === undefined || rec.final !== null) return
            yield* Effect.logError(`emulator: batch ${id} failed`, cause)
            const now = yield* Clock.currentTimeMillis
            fs.writeFileSync(store.resultsPath(id), "")
            store.putBatch({
              ...rec,
              final: { ended_ms: now, counts: { processing: 0, succeeded: 0, errored: rec.total, canceled: 0, expired: 0 } }
            })
          })
      )
    )

  const finishJob = (id: string, ending: Batch.Ending) =>
    Effect.gen(function*() {
      const rec = store.batches.get(id)
      if (rec === undefined || rec.final !== null || rec.deleted_ms !== null) return
      const final = yield* Batch.finish(store, rec, ending)
      store.putBatch({ ...store.batches.get(id)!, final })
    })

  const read = (id: string): Effect.Effect<BatchRecord | undefined> =>
    Effect.gen(function*() {
      const rec = store.batches.get(id)
      if (rec === undefined || rec.deleted_ms !== null) return undefined
      if (rec.final === null) {
        const now = yield* Clock.currentTimeMillis
        const need = Batch.derive(rec, now).need
        if (need !== null) yield* FiberMap.run(jobs, id, { onlyIfMissing: true })(guard(id, finishJob(id, need)))
      }
      return store.batches.get(id)
    })

  const cancel = (id: string) =>
    Effect.gen(function*() {
      const rec = yield* read(id)
      if (rec === undefined) return undefined
      if (rec.final !== null) return { refused: "it has already ended" }
      if (rec.cancel_ms !== null) return { batch: rec }
      const now = yield* Clock.currentTimeMillis
      if (Batch.derive(rec, now).need !== null) return { refused: "it has finished processing" }
      const updated: BatchRecord = { ...rec, cancel_ms: now }
      store.putBatch(updated)
      return { batch: updated }
    })

  const calls = new Map<string, number>()
  const used = new Map<number, number>()
  const fault = (endpoint: Endpoint, phase: "before" | "after" = "before"): EndpointFault | undefined => {
    const key = phase === "before" ? endpoint : `${endpoint}:${phase}`
    const n = (calls.get(key) ?? 0) + 1
    calls.set(key, n)
    for (const [i, f] of options.endpointFaults.entries()) {
      if (f.endpoint !== undefined && f.endpoint !== "*" && f.endpoint !== endpoint) continue
      if ((f.phase ?? "before") !== phase) continue
      if (f.times !== undefined) {
        const count = (used.get(i) ?? 0) + 1
        used.set(i, count)
        if (count <= f.times) return f
      } else if (f.rate !== undefined && Hash.hashString(`${i}\u0000${key}\u0000${n}`, knobs.seed) / 4294967296 < f.rate) {
        return f
      }
    }
    return undefined
  }

  return {
    store,
    knobs,
    maxRequestsPerBatch: options.maxRequestsPerBatch,
    maxBodyBytes: options.maxBodyBytes,
    createLatencyMs: Math.max(0, options.createLatencyMs ?? 0),
    listLagMs: Math.max(0, options.listLagMs ?? 0),
    creates: { received: 0, answered: 0, inFlight: 0 },
    syncCache: new Set<string>(),
    read,
    cancel,
    fault
  } satisfies Runtime
})
