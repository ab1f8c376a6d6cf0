/**
 * The Batcher groups a stream of encoded requests into provider batches, and holds none of their lines: each line
 * comes out at once in an {@link Append} to its group's open batch, and a {@link Close} says the batch is complete.
 * Whoever forms the batch (the runner writes it to its file) keeps the bytes; memory stays bounded by the input's
 * chunks, whatever the size of a batch.
 *
 * - A batch never holds more than `maxRequests` lines nor more than `maxBytes`
 *   bytes of encoded file (newlines included).
 * - Lines of different `group`s (OpenAI: model and endpoint) never share a batch.
 * - A batch still open `flushAfter` after its first line is emitted as it is,
 *   so a slow source does not keep requests waiting.
 * - A line that cannot fit any batch (over `maxRequestBytes` or `maxBytes`)
 *   comes out alone as {@link TooLarge}, with the reason.
 *
 * The Batcher is pull-based: it reads its input only as fast as the stage
 * after it takes batches, so "at most N batches in flight" downstream keeps
 * the source from being read ahead.
 *
 * @since 0.1.0
 */
import { Duration, Stream } from "effect"

/**
 * One encoded request.
 *
 * @since 0.1.0
 * @category models
 */
export interface Item {
  /** the custom id (fingerprint) */
  readonly id: string
  /** the ledger's number for the request */
  readonly request: number
  readonly line: string
  /** bytes of `line` plus its newline */
  readonly bytes: number
  readonly group: string
  /** the model the request asks (a batch holds one group, so one model) */
  readonly model?: string | undefined
  /** the request's worst case at the batch price (input + max output tokens), in picodollars, when a budget is set */
  readonly worst?: bigint | undefined
}

/**
 * Lines for the open batch of `group` (opened by the first `Append` after the group's last {@link Close}).
 *
 * @since 0.1.0
 * @category models
 */
export interface Append {
  readonly _tag: "Append"
  readonly group: string
  readonly items: ReadonlyArray<Item>
}

/**
 * The open batch of `group` is complete (full, timed out, or the input ended): `requests` lines, `bytes` bytes.
 *
 * @since 0.1.0
 * @category models
 */
export interface Close {
  readonly _tag: "Close"
  readonly group: string
  readonly requests: number
  readonly bytes: number
}

/**
 * A request that no batch can take.
 *
 * @since 0.1.0
 * @category models
 */
export interface TooLarge {
  readonly _tag: "TooLarge"
  readonly item: Item
  readonly message: string
}

/**
 * What the Batcher emits.
 *
 * @since 0.1.0
 * @category models
 */
export type Output = Append | Close | TooLarge

/**
 * Limits of a Batcher.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options {
  readonly maxRequests: number
  readonly maxBytes: number
  /** defaults to `maxBytes` */
  readonly maxRequestBytes?: number | undefined
  /** how long a batch may stay open after its first line */
  readonly flushAfter: Duration.Input
}

const TICKS_PER_WINDOW = 4

interface Open {
  /** lines taken since the last `Append` came out */
  pending: Array<Item>
  requests: number
  bytes: number
  ticks: number
}

const Tick = Symbol.for("@offpeak/core/Batcher/Tick")
type Event = ReadonlyArray<Item> | typeof Tick

const formatBytes = (n: number): string =>
  n >= 1 << 20 ? `${(n / (1 << 20)).toFixed(1)} MiB` : n >= 1024 ? `${(n / 1024).toFixed(1)} KiB` : `${n} B`

/**
 * Groups requests into batches.
 *
 * Within a group, outputs come in order: the `Append`s of a batch, then its `Close`. Groups interleave.
 *
 * @example
 * ```ts
 * requests.pipe(Batcher.batches({ maxRequests: 50_000, maxBytes: 200 * 1024 * 1024, flushAfter: "30 seconds" }))
 * ```
 *
 * @since 0.1.0
 * @category combinators
 */
export const batches = (options: Options) => <E, R>(self: Stream.Stream<Item, E, R>): Stream.Stream<Output, E, R> => {
  if (!(options.maxRequests >= 1) || !(options.maxBytes >= 1)) {
    throw new RangeError(`Batcher: maxRequests and maxBytes must be >= 1 (got ${options.maxRequests}, ${options.maxBytes})`)
  }
  const maxRequestBytes = Math.min(options.maxRequestBytes ?? options.maxBytes, options.maxBytes)
  const window = Duration.toMillis(Duration.fromInputUnsafe(options.flushAfter))
  const tickEvery = Duration.millis(Math.max(1, Math.floor(window / TICKS_PER_WINDOW)))
  const events: Stream.Stream<Event, E, R> = Stream.merge(
    Stream.chunks(self),
    Stream.map(Stream.tick(tickEvery), (): typeof Tick => Tick),
    { haltStrategy: "left" }
  )
  /** the lines a batch took since its last `Append`, out now */
  const flush = (out: Array<Output>, group: string, batch: Open) => {
    if (batch.pending.length > 0) {
      out.push({ _tag: "Append", group, items: batch.pending })
      batch.pending = []
    }
  }
  const close = (out: Array<Output>, open: Map<string, Open>, group: string, batch: Open) => {
    flush(out, group, batch)
    open.delete(group)
    out.push({ _tag: "Close", group, requests: batch.requests, bytes: batch.bytes })
  }
  return Stream.mapAccumArray(
    events,
    () => new Map<string, Open>(),
    (open, evs) => {
      const out: Array<Output> = []
      for (const ev of evs) {
        if (ev === Tick) {
          for (const [group, batch] of open) {
            batch.ticks++
            if (batch.ticks > TICKS_PER_WINDOW) close(out, open, group, batch)
          }
          continue
        }
        for (const item of ev) {
          if (item.bytes > maxRequestBytes) {
            out.push({
              _tag: "TooLarge",
              item,
              message: `request is ${formatBytes(item.bytes)} encoded, over the ${
                formatBytes(maxRequestBytes)
              } a single request may take in a batch`
            })
            continue
          }
          let batch = open.get(item.group)
          if (batch !== undefined && batch.bytes + item.bytes > options.maxBytes) {
            close(out, open, item.group, batch)
            batch = undefined
          }
          if (batch === undefined) {
            batch = { pending: [], requests: 0, bytes: 0, ticks: 0 }
            open.set(item.group, batch)
          }
          batch.pending.push(item)
          batch.requests++
          batch.bytes += item.bytes
          if (batch.requests >= options.maxRequests) close(out, open, item.group, batch)
        }
      }
      // what the open batches took from this input comes out now: the Batcher keeps no line
      for (const [group, batch] of open) flush(out, group, batch)
      return [open, out]
    },
    {
      onHalt: (open) => {
        const out: Array<Output> = []
        for (const [group, batch] of open) close(out, open, group, batch)
        return out
      }
    }
  )
}
