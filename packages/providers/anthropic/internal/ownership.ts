/**
 * Which remote batch is ours: the rules `find` follows to pick the batch an
 * ambiguous create attempt (no answer: a crash, a timeout, a broken
 * connection) made, from the batches the provider lists, with the submit
 * journals of the run's batch files as evidence. Pure: the adapter lists,
 * downloads and writes; these functions decide.
 *
 * **Windows.** An attempt can only have created a batch while its request was
 * in flight: from its start to when its call ended (recorded), to when the
 * process that sent it died (before this process started), or, for a call
 * still in flight here, to now — never later than its start plus the create
 * call's timeout. On the provider's clock that interval is shifted by the
 * offset between the clocks. The offset is measured from answered creates of
 * the run (the batch's `created_at` lies between the attempt's start and its
 * answer) and widened by a small margin; until one was answered, by the
 * configured clock skew either side.
 *
 * **Candidates** of a batch file: listed batches with its request count,
 * created within the window of one of its ambiguous attempts, claimed by no
 * other journal of the run (their ids and duplicates), and not already found
 * to hold other custom ids.
 *
 * **Decision.** An ended candidate is proven ours when its results carry
 * exactly the file's custom ids (a verdict cached per remote batch). A running
 * candidate cannot be proven before it ends; it is adopted only when it is the
 * only candidate and no ambiguous attempt of another journal could have made
 * it. Otherwise `find` waits for the candidates to end and decides on their
 * custom ids. With no candidate left, nothing of ours exists: `find` answers
 * none (after a grace for list lag, which the adapter applies) and the
 * attempts are marked absent, so they no longer hold up other files.
 *
 * **Duplicates.** A batch file that holds a batch and has attempts without
 * an answer (ambiguous, or found absent) may have a second batch at the provider (a create that went
 * through although its call failed, listed too late to be found). A batch
 * proven (ended) to carry its custom ids is recorded as a harmless duplicate;
 * a running one is cancelled only when the clock offset is measured (tight
 * windows) and nothing else of the run could have made it.
 */
import type * as Journal from "./submitJournal.ts"

/** a listed remote batch, as the rules need it */
export interface Listed {
  readonly id: string
  /** `created_at`, epoch ms on the provider's clock */
  readonly createdMs: number
  /** its request count */
  readonly count: number
  /** `processing_status` is `ended` (its results can be read) */
  readonly ended: boolean
}

/** the clocks and bounds the windows are computed with */
export interface Clock {
  /** now, epoch ms, local clock */
  readonly now: number
  /** when this process started: an attempt started before it was in flight at most until then */
  readonly processStart: number
  /** how far the provider's clock may be from ours when no create was answered yet */
  readonly skewMs: number
  /** the widening of a measured offset */
  readonly marginMs: number
  /** the create call's timeout: no attempt is in flight longer */
  readonly createTimeoutMs: number
}

/** an interval on the provider's clock, inclusive */
export interface Window {
  readonly lo: number
  readonly hi: number
}

/** the offset `provider clock − local clock`, as an interval */
export interface Offset {
  readonly lo: number
  readonly hi: number
}

/** the attempts that may have created a batch whose id nobody knows: no id, not refused, not found absent */
export const ambiguous = (journal: Journal.Journal): ReadonlyArray<Journal.Attempt> =>
  journal.attempts.filter((a) => a.id === null && a.refused !== true && a.absent !== true)

/** the attempts without an answer: the ambiguous ones and those `find` found absent (a batch may still show up late) */
export const unanswered = (journal: Journal.Journal): ReadonlyArray<Journal.Attempt> =>
  journal.attempts.filter((a) => a.id === null && a.refused !== true)

/** the id a journal holds (the first attempt with one) */
export const held = (journal: Journal.Journal): string | undefined => journal.attempts.find((a) => a.id !== null)?.id ?? undefined

/**
 * The clock offset measured by every answered create of the run: the batch's
 * `created_at` lies between the attempt's start and its answer. The
 * intersection of those intervals, or their union when a clock step made them
 * disagree; undefined when no create was answered.
 */
export const offsetOf = (journals: ReadonlyArray<Journal.Journal>): Offset | undefined => {
  const spans: Array<Offset> = []
  for (const journal of journals) {
    for (const a of journal.attempts) {
      if (a.id !== null && a.adopted !== true && typeof a.created === "number" && typeof a.at === "number") {
        spans.push({ lo: a.created - a.at, hi: a.created - a.startedAt })
      }
    }
  }
  if (spans.length === 0) return undefined
  const lo = Math.max(...spans.map((s) => s.lo))
  const hi = Math.min(...spans.map((s) => s.hi))
  return lo <= hi ? { lo, hi } : { lo: Math.min(...spans.map((s) => s.lo)), hi: Math.max(...spans.map((s) => s.hi)) }
}

/** the last moment (local clock) an attempt's request can have been in flight */
export const endOf = (attempt: Journal.Attempt, clock: Clock): number => {
  const end = typeof attempt.endedAt === "number"
    ? attempt.endedAt
    : attempt.startedAt < clock.processStart
    ? clock.processStart
    : clock.now
  return Math.min(end, attempt.startedAt + clock.createTimeoutMs)
}

/** when, on the provider's clock, a batch this attempt created can have been created */
export const windowOf = (attempt: Journal.Attempt, clock: Clock, offset: Offset | undefined): Window => {
  const end = endOf(attempt, clock)
  return offset !== undefined
    ? { lo: attempt.startedAt + offset.lo - clock.marginMs, hi: end + offset.hi + clock.marginMs }
    : { lo: attempt.startedAt - clock.skewMs, hi: end + clock.skewMs }
}

const within = (w: Window, ms: number) => ms >= w.lo && ms <= w.hi

/** remote ids the journals hold or recorded as duplicates */
export const claimsOf = (journals: ReadonlyArray<Journal.Journal>): Set<string> => {
  const claimed = new Set<string>()
  for (const journal of journals) {
    for (const a of journal.attempts) if (a.id !== null) claimed.add(a.id)
    for (const id of Object.keys(journal.duplicates ?? {})) claimed.add(id)
  }
  return claimed
}

/** true when an ambiguous attempt of one of `journals` could have created `batch` */
export const othersCouldOwn = (
  batch: Listed,
  journals: ReadonlyArray<Journal.Journal>,
  clock: Clock,
  offset: Offset | undefined
): boolean =>
  journals.some((j) => j.count === batch.count && ambiguous(j).some((a) => within(windowOf(a, clock, offset), batch.createdMs)))

/** what the run's journals say, read at one moment */
export interface Evidence {
  readonly own: Journal.Journal
  readonly others: ReadonlyArray<Journal.Journal>
  /** the digest of the own file's custom ids, once computed */
  readonly digest?: string | undefined
  /** the custom ids recorded for an ended remote batch */
  readonly remote: (id: string) => Journal.RemoteIds | undefined
  /** remote batches whose results could not be read (they count as still running) */
  readonly unreadable: ReadonlySet<string>
}

/** how a remote batch compares with the own file: from the journal's verdicts, else from the recorded custom ids */
export const verdictOf = (evidence: Evidence, id: string): Journal.Verdict | undefined => {
  const cached = evidence.own.verdicts?.[id]
  if (cached !== undefined) return cached
  const remote = evidence.remote(id)
  if (remote === undefined || evidence.digest === undefined) return undefined
  return remote.lines === evidence.own.count && remote.digest === evidence.digest ? "match" : "mismatch"
}

/** what `find` does next */
export type Decision =
  /** the journal holds the id */
  | { readonly _tag: "Known"; readonly id: string }
  /** nothing of ours can exist among the listed batches */
  | { readonly _tag: "None" }
  /** ended candidates whose custom ids are not known yet: read them, then decide again */
  | { readonly _tag: "Confirm"; readonly ids: ReadonlyArray<string> }
  /** this batch is ours: proven by its custom ids, or the only one that can be */
  | { readonly _tag: "Adopt"; readonly id: string; readonly attempt: number; readonly proven: boolean }
  /** several batches could be ours, or one that another attempt could also have made: wait for them to end */
  | { readonly _tag: "Wait"; readonly ids: ReadonlyArray<string> }

/** the candidates of the own file among `listed`: made while one of `attempts` (default: the ambiguous ones) was in flight */
export const candidatesOf = (
  evidence: Evidence,
  listed: ReadonlyArray<Listed>,
  clock: Clock,
  attempts: ReadonlyArray<Journal.Attempt> = ambiguous(evidence.own)
): ReadonlyArray<Listed> => {
  const offset = offsetOf([evidence.own, ...evidence.others])
  const windows = attempts.map((a) => windowOf(a, clock, offset))
  const claimed = claimsOf(evidence.others)
  for (const id of Object.keys(evidence.own.duplicates ?? {})) claimed.add(id)
  return listed.filter((b) =>
    b.count === evidence.own.count && !claimed.has(b.id) && windows.some((w) => within(w, b.createdMs)) &&
    verdictOf(evidence, b.id) !== "mismatch"
  )
}

/** the ambiguous attempt (by index) that most likely made `batch`: the latest whose window holds it */
const attemptFor = (evidence: Evidence, batch: Listed, clock: Clock): number => {
  const offset = offsetOf([evidence.own, ...evidence.others])
  let best = -1
  evidence.own.attempts.forEach((a, i) => {
    if (a.id !== null || a.refused === true) return
    if (best < 0 || within(windowOf(a, clock, offset), batch.createdMs)) best = i
  })
  return best
}

/** decides which listed batch, if any, the own file's ambiguous attempts created */
export const decide = (evidence: Evidence, listed: ReadonlyArray<Listed>, clock: Clock): Decision => {
  const known = held(evidence.own)
  if (known !== undefined) return { _tag: "Known", id: known }
  if (ambiguous(evidence.own).length === 0) return { _tag: "None" }
  const candidates = candidatesOf(evidence, listed, clock)
  // closest first to the start of an attempt: an own batch is created right after one started
  const starts = ambiguous(evidence.own).map((a) => a.startedAt)
  const distance = (b: Listed) => Math.min(...starts.map((s) => Math.abs(b.createdMs - s)))
  const sorted = [...candidates].sort((a, b) => distance(a) - distance(b))
  const proven = sorted.find((b) => verdictOf(evidence, b.id) === "match")
  if (proven !== undefined) return { _tag: "Adopt", id: proven.id, attempt: attemptFor(evidence, proven, clock), proven: true }
  const unread = sorted.filter((b) => b.ended && !evidence.unreadable.has(b.id) && verdictOf(evidence, b.id) === undefined)
  if (unread.length > 0) return { _tag: "Confirm", ids: unread.map((b) => b.id) }
  const open = sorted.filter((b) => !b.ended || evidence.unreadable.has(b.id))
  if (open.length === 0) return { _tag: "None" }
  const offset = offsetOf([evidence.own, ...evidence.others])
  if (open.length === 1 && !open[0]!.ended && !othersCouldOwn(open[0]!, evidence.others, clock, offset)) {
    return { _tag: "Adopt", id: open[0]!.id, attempt: attemptFor(evidence, open[0]!, clock), proven: false }
  }
  return { _tag: "Wait", ids: open.map((b) => b.id) }
}

/** what to do about a batch that may duplicate the own file's batch */
export type DuplicateAction =
  /** read its custom ids first */
  | { readonly _tag: "Confirm"; readonly id: string }
  /** it ended holding the own file's custom ids: record it (its results are harmless, joined by custom id) */
  | { readonly _tag: "Ended"; readonly id: string }
  /** it is running and nothing else of the run can have made it: cancel it */
  | { readonly _tag: "Cancel"; readonly id: string }

/**
 * The duplicates of the own file's batch among `listed`: batches in the
 * window of an ambiguous attempt of a file that already holds a batch,
 * unclaimed, with its request count, that no ambiguous attempt of another
 * journal could have made. Ended ones are recorded once proven by their custom
 * ids; running ones are cancelled only with a measured clock offset.
 */
export const duplicates = (evidence: Evidence, listed: ReadonlyArray<Listed>, clock: Clock): ReadonlyArray<DuplicateAction> => {
  const own = held(evidence.own)
  const open = unanswered(evidence.own)
  if (own === undefined || open.length === 0) return []
  const offset = offsetOf([evidence.own, ...evidence.others])
  const out: Array<DuplicateAction> = []
  for (const b of candidatesOf(evidence, listed, clock, open)) {
    if (b.id === own) continue
    const verdict = verdictOf(evidence, b.id)
    if (b.ended) {
      // proven by its custom ids, whoever else might have made it
      if (verdict === "match") out.push({ _tag: "Ended", id: b.id })
      else if (verdict === undefined && !evidence.unreadable.has(b.id)) out.push({ _tag: "Confirm", id: b.id })
    } else if (offset !== undefined && !othersCouldOwn(b, evidence.others, clock, offset)) {
      out.push({ _tag: "Cancel", id: b.id })
    }
  }
  return out
}

/**
 * How long `find` waits, after the end of the latest ambiguous attempt, before
 * it trusts a list without any candidate (a batch may be listed a little after
 * it was created).
 */
export const graceDeadline = (journal: Journal.Journal, clock: Clock, graceMs: number): number =>
  Math.max(-Infinity, ...ambiguous(journal).map((a) => endOf(a, clock))) + graceMs

/** the earliest creation time (provider clock) a batch of `attempts` can have; `journals`: the run's, for the offset */
export const earliest = (journals: ReadonlyArray<Journal.Journal>, attempts: ReadonlyArray<Journal.Attempt>, clock: Clock): number => {
  const offset = offsetOf(journals)
  return Math.min(...attempts.map((a) => windowOf(a, clock, offset).lo))
}
