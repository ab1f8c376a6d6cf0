/**
 * The emulators' finished-batch log (their `finishedLog` knob), for
 * benchmarks in other processes timing what happens after a batch completes.
 * Two JSON lines per batch, times as wall-clock epoch milliseconds:
 *
 * - {@link Finished}, when its results become readable (the record that makes
 *   the batch terminal is written), with its byte counts;
 * - {@link Seen}, when a client first reads it as terminal (the poll that
 *   tells it the batch is done).
 *
 * @internal
 */
import { Effect } from "effect"
import * as fs from "node:fs"

/** one line of the log */
export interface Finished {
  readonly id: string
  /** the provider's terminal status, e.g. `completed`, `ended` */
  readonly status: string
  readonly requests: number
  readonly createdAtMs: number
  /** when the batch's results became readable (wall clock, epoch ms) */
  readonly endedAtMs: number
  /** bytes of the batch's requests as received (the uploaded file, or the inline requests one per line) */
  readonly inputBytes: number
  /** bytes of its results (output and error files, or the results JSONL) */
  readonly outputBytes: number
}

/** the first read of the batch that showed it terminal */
export interface Seen {
  readonly id: string
  readonly seenAtMs: number
}

/** the size of a file, 0 when it is absent */
export const fileSize = (file: string): number => {
  try {
    return fs.statSync(file).size
  } catch {
    return 0
  }
}

const append = (file: string, line: Finished | Seen) => fs.appendFileSync(file, JSON.stringify(line) + "\n")

/**
 * A store's `putBatch` that also logs every batch whose record turns terminal
 * (`final` set) to `file`; the store's own when `file` is undefined.
 */
export const putBatch = <Rec extends { readonly id: string; readonly final: unknown }>(
  store: { readonly batches: ReadonlyMap<string, Rec>; putBatch(rec: Rec): void },
  file: string | undefined,
  describe: (rec: Rec) => Omit<Finished, "id" | "endedAtMs">
): (rec: Rec) => void => {
  if (file === undefined) return store.putBatch
  return (rec) => {
    const before = store.batches.get(rec.id)
    store.putBatch(rec)
    if (rec.final !== null && (before === undefined || before.final === null)) {
      append(file, { id: rec.id, endedAtMs: Date.now(), ...describe(rec) })
    }
  }
}

/**
 * A runtime's `read` that also logs the first read of each batch that shows
 * it terminal (`ended` of what `read` returns) to `file`; the runtime's own
 * when `file` is undefined.
 */
export const read = <A>(
  runtime: { read(id: string): Effect.Effect<A> },
  file: string | undefined,
  ended: (a: A) => boolean
): (id: string) => Effect.Effect<A> => {
  if (file === undefined) return runtime.read
  const seen = new Set<string>()
  return (id) =>
    Effect.map(runtime.read(id), (a) => {
      if (!seen.has(id) && ended(a)) {
        seen.add(id)
        append(file, { id, seenAtMs: Date.now() })
      }
      return a
    })
}
