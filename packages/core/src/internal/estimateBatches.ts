/**
 * The estimate's batches: requests are split as the Batcher splits them (per group; a batch closes before a line
 * would pass `maxBytes`, and once it holds `maxRequests`; at the end, open batches close in the order they opened),
 * without holding the lines in memory — a dry run appends each line to its batch's file as it comes. Each batch
 * keeps a tally of its requests by model and input tokens, so its cost can be priced per request (tiers depend on a
 * request's own input) with a few price look-ups, and, in `auto` mode, at the price of the way it goes out.
 *
 * The Batcher's time flush (`flushAfter`) is not modelled: a source slower than that makes smaller batches.
 *
 * @internal
 */
import * as fs from "node:fs"
import * as path from "node:path"

/** requests of one model with the same input tokens */
export interface Tally {
  readonly model: string
  readonly inputTokens: number
  n: number
  /** Σ max output tokens */
  boundOutput: number
  /** Σ expected output tokens (when a sample gave a mean) */
  expectedOutput: number
}

/** tallies keyed by model and input tokens */
export type Tallies = Map<string, Tally>

/** one request, as the estimate batches it */
export interface Item {
  readonly group: string
  readonly bytes: number
  /** the encoded line (kept only while a dry run writes it) */
  readonly line?: string | undefined
  readonly model: string
  readonly inputTokens: number
  readonly boundOutput: number
  readonly expectedOutput: number
}

/** a batch once closed */
export interface Closed {
  readonly seq: number
  readonly group: string
  readonly requests: number
  readonly bytes: number
  /** how it goes out: `sync` in `auto` mode below `syncBelow` requests, or in `sync` mode */
  readonly mode: "batch" | "sync"
  /** its file, in a dry run */
  readonly file?: string | undefined
}

interface Open {
  readonly seq: number
  requests: number
  bytes: number
  readonly tallies: Tallies
  pending: Array<string>
  pendingBytes: number
  readonly file: string | undefined
}

/** buffered lines of a dry-run file are appended once they reach this */
const FLUSH_BYTES = 1 << 20

/** merges `from` into `into` */
export const merge = (into: Tallies, from: Tallies): void => {
  for (const [key, t] of from) {
    const have = into.get(key)
    if (have === undefined) into.set(key, { ...t })
    else {
      have.n += t.n
      have.boundOutput += t.boundOutput
      have.expectedOutput += t.expectedOutput
    }
  }
}

/** a batch simulation (see the module) */
export const make = (options: {
  readonly maxRequests: number
  readonly maxBytes: number
  /** the run's mode: `auto` sends batches of fewer than `syncBelow` requests synchronously */
  readonly mode: "batch" | "sync" | "auto"
  readonly syncBelow: number
  /** a dry run: each batch's lines go to `<dir>/batch-0001.jsonl`, … */
  readonly dir?: string | undefined
}) => {
  const open = new Map<string, Open>()
  const closed: Array<Closed> = []
  /** requests by the way they go out */
  const batchTallies: Tallies = new Map()
  const syncTallies: Tallies = new Map()
  let seq = 0

  const flush = (batch: Open) => {
    if (batch.file === undefined || batch.pending.length === 0) return
    fs.appendFileSync(batch.file, batch.pending.join(""))
    batch.pending = []
    batch.pendingBytes = 0
  }

  const close = (group: string, batch: Open) => {
    open.delete(group)
    flush(batch)
    const mode = options.mode === "sync" || (options.mode === "auto" && batch.requests < options.syncBelow) ? "sync" : "batch"
    merge(mode === "sync" ? syncTallies : batchTallies, batch.tallies)
    closed.push({ seq: batch.seq, group, requests: batch.requests, bytes: batch.bytes, mode, file: batch.file })
  }

  const add = (item: Item): void => {
    let batch = open.get(item.group)
    if (batch !== undefined && batch.bytes + item.bytes > options.maxBytes) {
      close(item.group, batch)
      batch = undefined
    }
    if (batch === undefined) {
      seq++
      const file = options.dir === undefined ? undefined : path.join(options.dir, `batch-${String(seq).padStart(4, "0")}.jsonl`)
      if (file !== undefined) fs.writeFileSync(file, "")
      batch = { seq, requests: 0, bytes: 0, tallies: new Map(), pending: [], pendingBytes: 0, file }
      open.set(item.group, batch)
    }
    batch.requests++
    batch.bytes += item.bytes
    const key = `${item.model}\u0000${item.inputTokens}`
    const t = batch.tallies.get(key)
    if (t === undefined) {
      batch.tallies.set(key, {
        model: item.model,
        inputTokens: item.inputTokens,
        n: 1,
        boundOutput: item.boundOutput,
        expectedOutput: item.expectedOutput
      })
    } else {
      t.n++
      t.boundOutput += item.boundOutput
      t.expectedOutput += item.expectedOutput
    }
    if (batch.file !== undefined && item.line !== undefined) {
      batch.pending.push(item.line, "\n")
      batch.pendingBytes += item.bytes
      if (batch.pendingBytes >= FLUSH_BYTES) flush(batch)
    }
    if (batch.requests >= options.maxRequests) close(item.group, batch)
  }

  /** closes the batches still open, in the order they opened (as the Batcher does when its input ends) */
  const end = (): void => {
    for (const [group, batch] of [...open]) close(group, batch)
  }

  return { add, end, closed: closed as ReadonlyArray<Closed>, batchTallies, syncTallies }
}
