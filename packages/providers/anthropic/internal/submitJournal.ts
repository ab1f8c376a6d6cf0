/**
 * The adapter's submit journal: a small JSON file per batch file that
 * records every attempt to create that batch at Anthropic — when it started,
 * how it ended (the batch id it got, a refusal, or no answer) — and what
 * `find` learned about the remote batches it looked at.
 *
 * Anthropic batches carry no metadata, so nothing on the server says which
 * offpeak batch a remote batch belongs to. The journals are what let `find`
 * answer (see `ownership.ts` for the rules):
 *
 * - no journal: no create was ever sent for this batch file (the intent is
 *   written and flushed before the request leaves), so there is nothing to find;
 * - an attempt with an id: that is the batch;
 * - an attempt the API refused (4xx, 529): no batch came of it;
 * - an attempt `find` looked for (after a grace for list lag) and found
 *   nothing of: absent;
 * - other attempts without an id (the process died, or the call failed or
 *   timed out, while the create was in flight) are ambiguous: the batch may
 *   or may not exist, and `find` looks among the batches created while the
 *   attempt was in flight.
 *
 * The journals of the other batch files of the folder (the same run) say
 * which remote batches are someone else's (their ids and duplicates) and which
 * attempts might still own a batch nobody has identified. A journal is kept
 * after its batch file is collected: its claim still rules its batch out.
 *
 * Verdicts about remote batches are cached so that a batch's results are
 * downloaded at most once to tell whose they are: per remote batch, the digest
 * of the set of custom ids its results carry (`remote/<id>.json`, shared by
 * the folder's journals), and per journal, the match or mismatch with its own
 * file.
 *
 * Journals live in a folder beside the batch files' folder (`<dir>.anthropic-journal/`),
 * not among them: the pipeline sweeps files of its batch folder that no open
 * batch owns when a run starts, before `find` is asked.
 */
import * as crypto from "node:crypto"
import * as fs from "node:fs"
import * as path from "node:path"

/** one create attempt */
export interface Attempt {
  /** when the attempt started (epoch ms, local clock), before the request left */
  readonly startedAt: number
  /** the remote batch id, once known (answered by create, or adopted by `find`) */
  readonly id: string | null
  /** when the id became known (epoch ms, local clock) */
  readonly at: number | null
  /** the batch's `created_at` as the create answer gave it (epoch ms, provider clock): measures the clock offset */
  readonly created?: number | null | undefined
  /** when the create call failed or was interrupted without an answer (epoch ms, local clock) */
  readonly endedAt?: number | null | undefined
  /** the API refused the create (a 4xx or 529 answer): no batch came of this attempt */
  readonly refused?: boolean | undefined
  /** the id was found by listing (`find`), not answered by create */
  readonly adopted?: boolean | undefined
  /**
   * `find` looked for its batch (after the list-lag grace) and there was none: it is not looked for again, nor
   * does it stop another file from adopting a batch; only its own file's duplicate watch still minds it
   */
  readonly absent?: boolean | undefined
}

/** what this journal's file and a remote batch were found to be */
export type Verdict = "match" | "mismatch"

/** what was done about a duplicate of this file's batch: it had ended (its results are harmless) or was cancelled */
export type Duplicate = "ended" | "cancelled"

/** the journal of one batch file */
export interface Journal {
  readonly batchId: string
  readonly count: number
  readonly attempts: ReadonlyArray<Attempt>
  /** remote batches whose results were compared with this file's custom ids */
  readonly verdicts?: Readonly<Record<string, Verdict>> | undefined
  /** remote batches that hold this file's requests although this file holds another batch */
  readonly duplicates?: Readonly<Record<string, Duplicate>> | undefined
}

/** the custom ids an ended remote batch's results carry: their count and the digest of their set */
export interface RemoteIds {
  readonly id: string
  readonly lines: number
  readonly digest: string
}

const DIR_SUFFIX = ".anthropic-journal"

/** the folder holding the journals of the batch files of `dir` */
const journalDir = (batchFile: string) => `${path.dirname(batchFile)}${DIR_SUFFIX}`

/** where the journal of a batch file lives */
export const pathOf = (batchFile: string): string => path.join(journalDir(batchFile), `${path.basename(batchFile)}.json`)

const isJournal = (u: unknown): u is Journal =>
  typeof u === "object" && u !== null && typeof (u as Journal).batchId === "string" &&
  Array.isArray((u as Journal).attempts)

const parse = (file: string): Journal | undefined => {
  try {
    const journal = JSON.parse(fs.readFileSync(file, "utf8")) as unknown
    return isJournal(journal) ? journal : undefined
  } catch {
    // missing, being replaced, or unreadable: no journal
    return undefined
  }
}

/** the journal of a batch file, if one was written for `batchId` */
export const read = (batchFile: string, batchId: string): Journal | undefined => {
  const journal = parse(pathOf(batchFile))
  return journal !== undefined && journal.batchId === batchId ? journal : undefined
}

const writeDurably = (target: string, text: string) => {
  fs.mkdirSync(path.dirname(target), { recursive: true })
  const tmp = `${target}.${process.pid}.tmp`
  const fd = fs.openSync(tmp, "w")
  try {
    fs.writeSync(fd, text)
    fs.fsyncSync(fd)
  } finally {
    fs.closeSync(fd)
  }
  fs.renameSync(tmp, target)
}

/** writes a journal durably: temp file, fsync, rename */
export const write = (batchFile: string, journal: Journal): void => writeDurably(pathOf(batchFile), JSON.stringify(journal))

/** reads the journal fresh, applies `f` and writes the result; the journal must exist */
export const update = (batchFile: string, batchId: string, f: (journal: Journal) => Journal): Journal => {
  const current = read(batchFile, batchId)
  if (current === undefined) throw new Error(`the submit journal of ${path.basename(batchFile)} is gone`)
  const next = f(current)
  write(batchFile, next)
  return next
}

/** records the start of an attempt (before the create request is sent) */
export const begin = (batchFile: string, batchId: string, count: number, startedAt: number): Journal => {
  const previous = read(batchFile, batchId)
  const journal: Journal = {
    ...previous,
    batchId,
    count,
    attempts: [...(previous?.attempts ?? []), { startedAt, id: null, at: null }]
  }
  write(batchFile, journal)
  return journal
}

const indexOf = (journal: Journal, startedAt: number) => {
  const index = journal.attempts.findIndex((a) => a.startedAt === startedAt && a.id === null)
  return index >= 0 ? index : journal.attempts.findLastIndex((a) => a.id === null)
}

/** records the batch id an attempt produced, and the batch's `created_at` (provider clock) */
export const complete = (
  batchFile: string,
  batchId: string,
  startedAt: number,
  id: string,
  at: number,
  created: number | null
): Journal =>
  update(batchFile, batchId, (journal) => {
    const index = indexOf(journal, startedAt)
    const done: Attempt = { ...(journal.attempts[index] ?? { startedAt }), id, at, created, endedAt: null }
    return {
      ...journal,
      attempts: index < 0 ? [...journal.attempts, done] : journal.attempts.map((a, i) => (i === index ? done : a))
    }
  })

/** records that an attempt's create call ended without an answer (`refused`: the API said no, so no batch exists) */
export const failed = (batchFile: string, batchId: string, startedAt: number, endedAt: number, refused: boolean): Journal =>
  update(batchFile, batchId, (journal) => {
    const index = journal.attempts.findIndex((a) => a.startedAt === startedAt && a.id === null)
    if (index < 0) return journal
    return {
      ...journal,
      attempts: journal.attempts.map((a, i) => (i === index ? { ...a, endedAt, ...(refused ? { refused } : {}) } : a))
    }
  })

/** records a batch found by listing as the one an attempt (by index) created */
export const adopt = (journal: Journal, index: number, id: string, at: number): Journal => ({
  ...journal,
  attempts: journal.attempts.map((a, i) => (i === index ? { ...a, id, at, adopted: true } : a))
})

/** marks every attempt without an id (and not refused) as looked for and absent */
export const markAbsent = (journal: Journal): Journal => ({
  ...journal,
  attempts: journal.attempts.map((a) => (a.id === null && a.refused !== true ? { ...a, absent: true } : a))
})

/** records verdicts about remote batches */
export const withVerdicts = (journal: Journal, verdicts: Readonly<Record<string, Verdict>>): Journal => ({
  ...journal,
  verdicts: { ...journal.verdicts, ...verdicts }
})

/** records a duplicate of this file's batch */
export const withDuplicate = (journal: Journal, id: string, what: Duplicate): Journal => ({
  ...journal,
  duplicates: { ...journal.duplicates, [id]: what }
})

/**
 * The journals of the other batch files of the same folder (kept after their
 * batch file is collected). Temporary files another process left are removed.
 */
export const others = (batchFile: string): Array<Journal> => {
  const dir = journalDir(batchFile)
  const own = path.basename(pathOf(batchFile))
  let names: Array<string>
  try {
    names = fs.readdirSync(dir)
  } catch {
    return []
  }
  const out: Array<Journal> = []
  for (const name of names) {
    if (name === own) continue
    const file = path.join(dir, name)
    if (name.endsWith(".tmp")) {
      if (!name.includes(`.${process.pid}.`)) fs.rmSync(file, { force: true })
      continue
    }
    if (!name.endsWith(".json")) continue
    const journal = parse(file)
    if (journal !== undefined) out.push(journal)
  }
  return out
}

// ----- the custom ids of remote batches -----

/** the digest of a set of custom ids (order and repeats do not matter) */
export const digestOf = (ids: Iterable<string>): string => {
  const sorted = [...new Set(ids)].sort()
  const hash = crypto.createHash("sha256")
  for (const id of sorted) hash.update(id).update("\n")
  return hash.digest("hex")
}

const remotePath = (batchFile: string, id: string) =>
  path.join(journalDir(batchFile), "remote", `${id.replace(/[^A-Za-z0-9_-]/g, "_")}.json`)

/** the custom ids recorded for an ended remote batch, if its results were read before */
export const readRemote = (batchFile: string, id: string): RemoteIds | undefined => {
  try {
    const remote = JSON.parse(fs.readFileSync(remotePath(batchFile, id), "utf8")) as RemoteIds
    return remote.id === id && typeof remote.digest === "string" && typeof remote.lines === "number" ? remote : undefined
  } catch {
    return undefined
  }
}

/** records the custom ids an ended remote batch's results carry */
export const writeRemote = (batchFile: string, remote: RemoteIds): void =>
  writeDurably(remotePath(batchFile, remote.id), JSON.stringify(remote))
