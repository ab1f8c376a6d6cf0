/**
 * A batch's files: `<id>.jsonl` (its encoded lines, what is uploaded or sent inline) and `<id>.ids` (their custom ids,
 * in line order: they map a validation error's line to its request, and split a batch), written atomically before the
 * ledger knows the batch, removed once it is collected; files no open batch owns are swept when a run starts.
 * A batch being formed is written as its lines come ({@link open}): no batch's lines are held in memory.
 *
 * @internal
 */
import { Effect } from "effect"
import * as fs from "node:fs/promises"
import * as path from "node:path"
import type * as Ledger from "../../Ledger.ts"
import type { RunError } from "../../Run.ts"
import * as Utf8 from "../utf8.ts"

const message = (u: unknown) => u instanceof Error ? u.message : String(u)

/** a batch being formed: its lines appended to `<file>.tmp` and their ids to `<file>.ids.tmp`, renamed when sealed */
export interface Forming {
  /** appends lines (with their ids) at the end of the batch */
  readonly append: (items: ReadonlyArray<{ readonly id: string; readonly line: string }>) => Effect.Effect<void, RunError>
  /** syncs and closes both files and gives them their names (the ids first): the batch's files are whole */
  readonly seal: Effect.Effect<void, RunError>
  /** closes and removes what was written: the batch will not be sealed (the run was interrupted or failed) */
  readonly discard: Effect.Effect<void>
}

/** starts the files of a batch being formed */
export const open = (fail: (message: string) => RunError) => (file: string): Effect.Effect<Forming, RunError> =>
  Effect.tryPromise({
    try: async (): Promise<Forming> => {
      const lines = await fs.open(`${file}.tmp`, "w")
      const ids = await fs.open(`${file}.ids.tmp`, "w").catch(async (e) => {
        await lines.close()
        throw e
      })
      let closed = false
      const close = async () => {
        if (closed) return
        closed = true
        await Promise.allSettled([lines.close(), ids.close()])
      }
      return {
        append: (items) =>
          Effect.tryPromise({
            try: async () => {
              if (items.length === 0) return
              await lines.write(Utf8.encode(items.length, (i) => items[i]!.line, true))
              await ids.write(Utf8.encode(items.length, (i) => items[i]!.id, true))
            },
            catch: (e) => fail(`cannot write batch file ${file}: ${message(e)}`)
          }).pipe(Effect.uninterruptible),
        seal: Effect.tryPromise({
          try: async () => {
            await Promise.all([lines.sync(), ids.sync()])
            await close()
            await fs.rename(`${file}.ids.tmp`, `${file}.ids`)
            await fs.rename(`${file}.tmp`, file)
          },
          catch: (e) => fail(`cannot write batch file ${file}: ${message(e)}`)
        }).pipe(Effect.uninterruptible),
        discard: Effect.promise(async () => {
          await close()
          await Promise.all([fs.rm(`${file}.tmp`, { force: true }), fs.rm(`${file}.ids.tmp`, { force: true })])
        })
      }
    },
    catch: (e) => fail(`cannot write batch file ${file}: ${message(e)}`)
  })

/** writes `<id>.jsonl` (the lines) and `<id>.ids` (their custom ids, in order) whole: a batch formed at once */
export const write = (fail: (message: string) => RunError) => (file: string, items: ReadonlyArray<{ readonly id: string; readonly line: string }>) =>
  Effect.flatMap(open(fail)(file), (forming) =>
    forming.append(items).pipe(
      Effect.andThen(forming.seal),
      Effect.onError(() => forming.discard)
    )).pipe(Effect.uninterruptible)

/** the lines of a sealed batch with their custom ids, in file order */
export const read = (fail: (message: string) => RunError) => (file: string) =>
  Effect.tryPromise({
    try: async () => {
      const lines = (await fs.readFile(file, "utf8")).split("\n")
      const ids = (await fs.readFile(`${file}.ids`, "utf8")).split("\n")
      if (lines.at(-1) === "") lines.pop()
      if (ids.at(-1) === "") ids.pop()
      if (lines.length !== ids.length) throw new Error(`${lines.length} lines but ${ids.length} ids`)
      return lines.map((line, i) => ({ id: ids[i]!, line }))
    },
    catch: (e) => fail(`cannot read batch file ${file}: ${message(e)}`)
  })

/** removes a batch's file and its `.ids` sidecar */
export const remove = (file: string) =>
  Effect.promise(() => Promise.all([fs.rm(file, { force: true }), fs.rm(`${file}.ids`, { force: true })]))

/** removes batch files no open batch owns: left by a kill before a seal, or after a collect */
export const sweep = (batchDir: string, open: ReadonlyArray<Ledger.Batch>) =>
  Effect.promise(async () => {
    const keep = new Set(open.map((b) => path.basename(b.file)))
    for (const name of await fs.readdir(batchDir)) {
      const owner = name.replace(/\.ids$/, "").replace(/\.tmp$/, "").replace(/\.ids$/, "")
      if (!keep.has(owner) || name.endsWith(".tmp")) await fs.rm(path.join(batchDir, name), { force: true })
    }
  })
