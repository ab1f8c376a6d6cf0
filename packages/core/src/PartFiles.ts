/**
 * A file sink made of part files: one file per part, written atomically
 * (temporary file, fsync, rename), plus a `_manifest.json` listing every part.
 *
 * Writing a part again replaces its file and its manifest entry, which makes
 * the sink idempotent per part. File formats (JSONL, CSV) are a {@link Format}.
 *
 * Dispositions: `replace` (default) — once a run completes, the folder holds
 * that run's parts only (the parts of earlier runs are removed then, so a failed
 * run leaves the earlier output whole); `append` — earlier runs' parts stay
 * (an incremental pipeline, whose runs each deliver the rows that changed).
 *
 * @since 0.1.0
 */
import { Effect, Semaphore } from "effect"
import * as Failpoint from "./Failpoint.ts"
import * as Utf8 from "./internal/utf8.ts"
import * as fs from "node:fs/promises"
import * as path from "node:path"
import type * as Sink from "./Sink.ts"
import { Refused, SinkError, Unavailable } from "./Sink.ts"

/**
 * How rows become file content.
 *
 * @since 0.1.0
 * @category models
 */
export interface Format<A> {
  /** file extension without the dot */
  readonly extension: string
  /** text written once at the top of every part file (a CSV header) */
  readonly header?: string | undefined
  /** one row's text, newline included */
  readonly encodeRow: (row: A) => string
}

/**
 * One entry of `_manifest.json`.
 *
 * @since 0.1.0
 * @category models
 */
export interface ManifestEntry {
  readonly file: string
  readonly runId: string
  readonly seq: number
  readonly rows: number
  readonly bytes: number
}

/**
 * The manifest file's name.
 *
 * @since 0.1.0
 * @category constants
 */
export const MANIFEST = "_manifest.json"

/**
 * The file name of a part.
 *
 * @since 0.1.0
 * @category utilities
 */
export const partFileName = (part: Sink.Part, extension: string): string =>
  `part-${part.runId}-${String(part.seq).padStart(6, "0")}.${extension}`

const WRITE_CHUNK = 1 << 20

/** a row the format cannot encode */
class RowError extends Error {
  readonly row: number
  constructor(row: number, message: string) {
    super(message)
    this.row = row
  }
}

let tmpCounter = 0

/** removes temporary files a killed process left for `target` */
const removeStaleTemps = async (target: string) => {
  const dir = path.dirname(target)
  const prefix = `${path.basename(target)}.tmp-`
  for (const name of await fs.readdir(dir)) {
    if (name.startsWith(prefix)) await fs.rm(path.join(dir, name), { force: true })
  }
}

const writeAtomic = async (target: string, chunks: Iterable<string>, crashPoint = false): Promise<number> => {
  await removeStaleTemps(target)
  const tmp = `${target}.tmp-${process.pid}-${++tmpCounter}`
  const handle = await fs.open(tmp, "w")
  let bytes = 0
  try {
    // texts gathered up to WRITE_CHUNK characters, then encoded into one buffer (never joined into one string)
    const pending: Array<string> = []
    let length = 0
    const flush = async () => {
      const buffer = Utf8.encode(pending.length, (i) => pending[i]!, false)
      pending.length = 0
      length = 0
      await handle.write(buffer)
      bytes += buffer.length
    }
    for (const chunk of chunks) {
      pending.push(chunk)
      length += chunk.length
      if (length >= WRITE_CHUNK) await flush()
    }
    if (pending.length > 0) await flush()
    if (crashPoint) Failpoint.hitSync("part.writing")
    await handle.sync()
  } finally {
    await handle.close()
  }
  await fs.rename(tmp, target)
  return bytes
}

/**
 * Reads a directory's manifest; an absent manifest is an empty one.
 *
 * @since 0.1.0
 * @category utilities
 */
export const readManifest = async (dir: string): Promise<ReadonlyArray<ManifestEntry>> => {
  try {
    const text = await fs.readFile(path.join(dir, MANIFEST), "utf8")
    return (JSON.parse(text) as { parts: ReadonlyArray<ManifestEntry> }).parts
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return []
    throw error
  }
}

/**
 * A part-file sink in `dir`.
 *
 * @example
 * ```ts
 * PartFiles.make({ dir: "out/triage", format: { extension: "jsonl", encodeRow: (r) => JSON.stringify(r) + "\n" } })
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = <A>(options: {
  readonly dir: string
  readonly format: Format<A>
  readonly name?: string | undefined
  /** what a completed run does to earlier runs' parts: `replace` (default) or `append` */
  readonly disposition?: "replace" | "append" | undefined
}): Sink.Sink<A> => {
  const dir = path.resolve(options.dir)
  const name = options.name ?? dir
  const manifestLock = Semaphore.makeUnsafe(1)
  const fail = (cause: unknown) =>
    cause instanceof RowError
      ? new SinkError({
        sink: name,
        message: cause.message,
        reason: new Refused({ message: cause.message, row: cause.row })
      })
      : new SinkError({
        sink: name,
        message: cause instanceof Error ? cause.message : String(cause),
        reason: new Unavailable({ message: cause instanceof Error ? cause.message : String(cause) })
      })

  // a part is written whole or not at all: interrupting waits for the write in progress (parts are bounded)
  const write = (part: Sink.Part, rows: ReadonlyArray<A>) =>
    Effect.tryPromise({
      try: async () => {
        await fs.mkdir(dir, { recursive: true })
        const file = partFileName(part, options.format.extension)
        const encodeRow = options.format.encodeRow
        const header = options.format.header
        function* content() {
          if (header !== undefined) yield header
          for (let i = 0; i < rows.length; i++) {
            let text: string
            try {
              text = encodeRow(rows[i]!)
            } catch (e) {
              // the row's own value cannot be written (a bigint in JSON, a cycle): only that row is refused
              throw new RowError(i, `row ${i + 1} of part ${part.seq} cannot be written: ${e instanceof Error ? e.message : String(e)}`)
            }
            yield text
          }
        }
        const bytes = await writeAtomic(path.join(dir, file), content(), true)
        return { file, runId: part.runId, seq: part.seq, rows: rows.length, bytes } satisfies ManifestEntry
      },
      catch: fail
    }).pipe(
      Effect.flatMap((entry) =>
        Effect.tryPromise({
          try: async () => {
            const parts = (await readManifest(dir)).filter((p) => p.file !== entry.file)
            parts.push(entry)
            parts.sort((a, b) => a.runId < b.runId ? -1 : a.runId > b.runId ? 1 : a.seq - b.seq)
            await writeAtomic(path.join(dir, MANIFEST), [JSON.stringify({ parts }, null, 1) + "\n"])
          },
          catch: fail
        }).pipe(Semaphore.withPermits(manifestLock, 1))
      ),
      Effect.uninterruptible
    )

  /** `replace`: the parts of every other run leave the manifest, then their files go */
  const finish = (run: { readonly runId: string; readonly disposition: Sink.Disposition }) =>
    run.disposition !== "replace" ? Effect.void : Effect.tryPromise({
      try: async () => {
        const parts = await readManifest(dir)
        const stale = parts.filter((p) => p.runId !== run.runId)
        if (stale.length === 0) return
        await writeAtomic(path.join(dir, MANIFEST), [
          JSON.stringify({ parts: parts.filter((p) => p.runId === run.runId) }, null, 1) + "\n"
        ])
        for (const p of stale) await fs.rm(path.join(dir, p.file), { force: true })
      },
      catch: fail
    }).pipe(Semaphore.withPermits(manifestLock, 1), Effect.uninterruptible)

  return { name, write, dispositions: ["replace", "append"], disposition: options.disposition, finish }
}
