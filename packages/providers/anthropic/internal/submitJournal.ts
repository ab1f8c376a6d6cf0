/**
 * The adapter's submit journal: a small JSON file per batch file that
 * records every attempt to create that batch at Anthropic — when it started
 * and, once the API answered, the batch id it got.
 *
 * Anthropic batches carry no metadata, so nothing on the server says which
 * offpeak batch a remote batch belongs to. The journal is what lets `find`
 * answer without guessing in the common cases:
 *
 * - no journal: no create was ever sent for this batch file (the intent is
 *   written and flushed before the request leaves), so there is nothing to find;
 * - an attempt with an id: that is the batch;
 * - attempts without an id (the process died, or the call failed, while the
 *   create was in flight): the batch may or may not exist; `find` then looks at
 *   the batches created since the first attempt started.
 *
 * The ids recorded by the journals of sibling batch files (same folder) are
 * batches that belong to someone else, which rules them out when looking.
 *
 * Journals live in a folder beside the batch files' folder (`<dir>.anthropic-journal/`),
 * not among them: the pipeline sweeps files of its batch folder that no open
 * batch owns when a run starts, before `find` is asked.
 */
import * as fs from "node:fs"
import * as path from "node:path"

/** one create attempt */
export interface Attempt {
  /** when the attempt started (epoch ms, local clock) */
  readonly startedAt: number
  /** the remote batch id, once known */
  readonly id: string | null
  /** when the id became known (epoch ms, local clock) */
  readonly at: number | null
}

/** the journal of one batch file */
export interface Journal {
  readonly batchId: string
  readonly count: number
  readonly attempts: ReadonlyArray<Attempt>
}

const DIR_SUFFIX = ".anthropic-journal"

/** the folder holding the journals of the batch files of `dir` */
const journalDir = (batchFile: string) => `${path.dirname(batchFile)}${DIR_SUFFIX}`

/** where the journal of a batch file lives */
export const pathOf = (batchFile: string): string => path.join(journalDir(batchFile), `${path.basename(batchFile)}.json`)

const isJournal = (u: unknown): u is Journal =>
  typeof u === "object" && u !== null && typeof (u as Journal).batchId === "string" &&
  Array.isArray((u as Journal).attempts)

/** the journal of a batch file, if one was written for `batchId` */
export const read = (batchFile: string, batchId: string): Journal | undefined => {
  let text: string
  try {
    text = fs.readFileSync(pathOf(batchFile), "utf8")
  } catch {
    return undefined
  }
  try {
    const journal = JSON.parse(text) as unknown
    return isJournal(journal) && journal.batchId === batchId ? journal : undefined
  } catch {
    return undefined
  }
}

/** writes a journal durably: temp file, fsync, rename */
export const write = (batchFile: string, journal: Journal): void => {
  const target = pathOf(batchFile)
  fs.mkdirSync(path.dirname(target), { recursive: true })
  const tmp = `${target}.${process.pid}.tmp`
  const fd = fs.openSync(tmp, "w")
  try {
    fs.writeSync(fd, JSON.stringify(journal))
    fs.fsyncSync(fd)
  } finally {
    fs.closeSync(fd)
  }
  fs.renameSync(tmp, target)
}

/** records the start of an attempt (before the create request is sent) */
export const begin = (batchFile: string, batchId: string, count: number, startedAt: number): Journal => {
  const previous = read(batchFile, batchId)
  const journal: Journal = {
    batchId,
    count,
    attempts: [...(previous?.attempts ?? []), { startedAt, id: null, at: null }]
  }
  write(batchFile, journal)
  return journal
}

/** records the batch id an attempt produced (the latest attempt without one when `startedAt` is not found) */
export const complete = (batchFile: string, journal: Journal, startedAt: number, id: string, at: number): Journal => {
  let index = journal.attempts.findIndex((a) => a.startedAt === startedAt && a.id === null)
  if (index < 0) index = journal.attempts.findLastIndex((a) => a.id === null)
  const attempts = index < 0
    ? [...journal.attempts, { startedAt, id, at }]
    : journal.attempts.map((a, i) => (i === index ? { ...a, id, at } : a))
  const updated: Journal = { ...journal, attempts }
  write(batchFile, updated)
  return updated
}

/**
 * The journals of the other batch files of the same folder whose batch file
 * still exists; those whose batch file is gone (the pipeline removes a batch
 * file once its results are collected, and `find` is never asked about it
 * again) are removed.
 */
const siblings = (batchFile: string): Array<string> => {
  const dir = journalDir(batchFile)
  const own = path.basename(pathOf(batchFile))
  let names: Array<string>
  try {
    names = fs.readdirSync(dir)
  } catch {
    return []
  }
  const out: Array<string> = []
  for (const name of names) {
    if (name === own) continue
    const file = path.join(dir, name)
    if (name.endsWith(".tmp") || !name.endsWith(".json")) {
      if (name.endsWith(".tmp") && !name.includes(`.${process.pid}.`)) fs.rmSync(file, { force: true })
      continue
    }
    if (!fs.existsSync(path.join(path.dirname(batchFile), name.slice(0, -".json".length)))) {
      fs.rmSync(file, { force: true })
      continue
    }
    out.push(file)
  }
  return out
}

/** removes the journals of batch files that are gone */
export const sweep = (batchFile: string): void => void siblings(batchFile)

/** remote ids recorded by the journals of the other batch files of the same folder: batches that belong to them */
export const claimedBySiblings = (batchFile: string): Set<string> => {
  const claimed = new Set<string>()
  for (const file of siblings(batchFile)) {
    try {
      const journal = JSON.parse(fs.readFileSync(file, "utf8")) as unknown
      if (isJournal(journal)) for (const a of journal.attempts) if (typeof a.id === "string") claimed.add(a.id)
    } catch {
      // a journal being replaced or unreadable claims nothing
    }
  }
  return claimed
}
