/**
 * The emulator's live state: the store, the knobs new batches are created
 * under, the server-wide faults, and the background jobs (validation, writing
 * the output files) that reads of a batch start when its derived state needs
 * them. Jobs are keyed by batch id (one at a time per batch), run two at a
 * time, and are interrupted when the server's scope closes; a restarted
 * emulator starts them again.
 */
import { Cause, Clock, Effect, FiberMap, Semaphore } from "effect"
import * as Engine from "../../local/Engine.ts"
import * as Batch from "./batch.ts"
import * as Faults from "./faults.ts"
import type { BatchObject, BatchRecord, Knobs, Store } from "./store.ts"

/** the emulator's live state, shared by the routes */
export interface Runtime {
  readonly store: Store
  readonly knobs: Knobs
  readonly maxFileBytes: number
  /** how late every create is answered, in ms (its batch exists from the moment the request arrived) */
  readonly createLatencyMs: number
  /** how fast each upload is read, in bytes per second (0: as fast as it comes) */
  readonly uploadBytesPerSecond: number
  /** the server-wide faults and their counters */
  readonly faults: Faults.Faults
  /** the batch as a client sees it now (persisting any state it reached), starting the work it needs */
  readonly read: (id: string) => Effect.Effect<BatchObject | undefined>
  /** the prompt cache every answer of this emulator meets (in memory: a restart empties it, as it would expire) */
  readonly promptCache: Engine.PromptCache
  /** requests a cancel: the batch (cancelling), or the status that forbids it */
  readonly cancel: (id: string) => Effect.Effect<{ readonly batch: BatchObject } | { readonly refused: string } | undefined>
}

const internalError = (rec: BatchRecord, at: number, cause: Cause.Cause<unknown>): BatchObject => ({
  ...Batch.derive(rec, at).view,
  status: "failed",
  failed_at: Math.floor(at / 1000),
  errors: {
    object: "list",
    data: [{ code: "internal_error", message: `The emulator failed: ${Cause.pretty(cause).split("\n")[0]}`, param: null, line: null }]
  }
})

/** the runtime over a loaded store; its jobs are interrupted when the scope closes */
export const make = Effect.fnUntraced(function*(
  store: Store,
  knobs: Knobs,
  maxFileBytes: number,
  faultKnobs: Faults.FaultKnobs,
  createLatencyMs = 0,
  uploadBytesPerSecond = 0
) {
  const faults = Faults.make(faultKnobs)
  const promptCache = Engine.promptCache()
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
            const now = yield* Clock.currentTimeMillis
            store.putBatch({ ...rec, final: Batch.ordered(internalError(rec, now, cause)) })
          })
      )
    )

  const validateJob = (id: string) =>
    Effect.gen(function*() {
      const rec = store.batches.get(id)
      if (rec === undefined || rec.validation !== null) return
      const validation = yield* Batch.validate(store, rec)
      const now = yield* Clock.currentTimeMillis
      // no yield between the admission check and the write: validations ending together see each other
      const current = store.batches.get(id)!
      store.putBatch({ ...current, validation: Batch.admit(store, current, validation, now) })
    })

  const finishJob = (id: string, ending: Batch.Ending) =>
    Effect.gen(function*() {
      const rec = store.batches.get(id)
      if (rec === undefined || rec.final !== null) return
      const { files, final } = yield* Batch.finish(store, rec, ending, promptCache)
      for (const file of files) store.putFile({ ...file, seq: store.nextSeq() })
      store.putBatch({ ...store.batches.get(id)!, final: Batch.ordered(final), processed: ending.processed })
    })

  const read = (id: string): Effect.Effect<BatchObject | undefined> =>
    Effect.gen(function*() {
      const rec = store.batches.get(id)
      if (rec === undefined) return undefined
      const now = yield* Clock.currentTimeMillis
      const derived = Batch.derive(rec, now)
      if (derived.final !== undefined) {
        const final = Batch.ordered(derived.final)
        store.putBatch({ ...rec, final })
        return final
      }
      const need = derived.need
      if (need === "validate") {
        yield* FiberMap.run(jobs, id, { onlyIfMissing: true })(guard(id, validateJob(id)))
      } else if (need !== null) {
        yield* FiberMap.run(jobs, id, { onlyIfMissing: true })(guard(id, finishJob(id, need)))
      }
      return Batch.ordered(derived.view)
    })

  const cancel = (id: string) =>
    Effect.gen(function*() {
      const view = yield* read(id)
      if (view === undefined) return undefined
      const rec = store.batches.get(id)!
      const now = yield* Clock.currentTimeMillis
      const derived = Batch.derive(rec, now)
      if (rec.final !== null) return { refused: rec.final.status }
      if (derived.need !== null && derived.need !== "validate") return { refused: derived.need.status }
      if (view.status === "cancelling") return { batch: view }
      const updated: BatchRecord = { ...rec, cancel_ms: now }
      store.putBatch(updated)
      return { batch: Batch.ordered(Batch.derive(updated, now).view) }
    })

  return { store, knobs, maxFileBytes, createLatencyMs, uploadBytesPerSecond, faults, read, cancel, promptCache } satisfies Runtime
})
