/**
 * Crash points for the crash-torture tests: named places in the pipeline and
 * the adapters where the process can be made to die with SIGKILL, to prove
 * that a run killed anywhere resumes with every row exactly once and no batch
 * paid twice.
 *
 * Inert unless `OFFPEAK_FAILPOINTS` is set, e.g.
 * `OFFPEAK_FAILPOINTS=batch.created:2` kills the process the second time a
 * batch has been created at the provider, before the ledger records it.
 *
 * @since 0.1.0
 */
import { Effect } from "effect"

/**
 * The crash points, in the order a batch meets them.
 *
 * @since 0.1.0
 * @category constants
 */
export const names = [
  "source.admitted", // a chunk of source rows is in the ledger
  "batch.sealed", // a batch file is written and the ledger knows the batch
  "budget.reserved", // the batch's worst case is reserved of the budget, nothing sent yet
  "batch.uploaded", // the adapter uploaded the batch file, before it creates the batch
  "batch.create.sent", // the create request went out whole and its answer is not in: the provider may have the batch
  "batch.created", // the provider created the batch, before the ledger has its id
  "batch.submitted", // the ledger has the remote id
  "batch.polled", // a status poll returned
  "results.recorded", // a chunk of result lines is in the ledger, the rest not yet downloaded
  "part.assigned", // a part's rows are fixed in the ledger, nothing written
  "part.writing", // a part file is half written (temporary file)
  "part.written", // the sinks have the part, the ledger has not committed it
  "batch.collected" // every request of a batch is accounted for
] as const

/**
 * A crash point's name.
 *
 * @since 0.1.0
 * @category models
 */
export type Name = typeof names[number]

const parse = (spec: string | undefined): ReadonlyMap<string, number> => {
  const out = new Map<string, number>()
  for (const entry of (spec ?? "").split(",")) {
    const [name, n] = entry.trim().split(":")
    if (name) out.set(name, Number(n ?? 1) || 1)
  }
  return out
}

const armed = parse(process.env.OFFPEAK_FAILPOINTS)
const hits = new Map<string, number>()

/**
 * Counts a pass through a crash point, and kills the process with SIGKILL on
 * the armed pass. Synchronous, for code outside Effect.
 *
 * @since 0.1.0
 * @category crash points
 */
export const hitSync = (name: Name): void => {
  if (armed.size === 0) return
  const at = armed.get(name)
  if (at === undefined) return
  const n = (hits.get(name) ?? 0) + 1
  hits.set(name, n)
  if (n === at) {
    process.stderr.write(`failpoint ${name}:${n}: SIGKILL\n`)
    process.kill(process.pid, "SIGKILL")
    // the signal is asynchronous: stop this thread until it lands, so nothing after the crash point runs
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 10_000)
  }
}

/**
 * {@link hitSync} as an Effect.
 *
 * @since 0.1.0
 * @category crash points
 */
export const hit = (name: Name): Effect.Effect<void> => armed.size === 0 ? Effect.void : Effect.sync(() => hitSync(name))
