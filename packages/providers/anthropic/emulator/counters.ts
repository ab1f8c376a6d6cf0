/**
 * What the emulator can tell a test about how it was used: creates received,
 * in flight and answered; per batch, when it was created and answered, its
 * custom ids and how many times its results were served; and the requests a
 * client sent again although their earlier send had not failed (still running,
 * or answered) — the "paid twice" a crash must never cause.
 */
import * as fs from "node:fs"
import type { Creates } from "./runtime.ts"
import type { BatchRecord, Store } from "./store.ts"

/** one batch, as the counters show it */
export interface BatchCounters {
  readonly id: string
  readonly created_ms: number
  /** when its create was answered; null: never (the client went away, or it is still waiting) */
  readonly answered_ms: number | null
  readonly total: number
  /** `in_progress` until its results are written, then `ended` */
  readonly status: "in_progress" | "ended"
  readonly cancel_ms: number | null
  readonly results_downloads: number
  /** its custom ids in request order (when asked for) */
  readonly custom_ids?: ReadonlyArray<string> | undefined
}

/** the counters */
export interface Counters {
  readonly creates: Creates
  /** batches that exist while their create was not answered */
  readonly unanswered: number
  readonly batches: ReadonlyArray<BatchCounters>
  readonly requests: {
    /** requests received in creates */
    readonly sent: number
    /** distinct custom ids among them */
    readonly distinct: number
    /** sends of a custom id whose previous send had not failed (its batch still running, or it succeeded) */
    readonly sentTwiceWithoutFailure: number
    /** sends of a custom id whose previous send had failed (errored, canceled, expired): retries */
    readonly retried: number
  }
  /** batches whose set of custom ids an earlier batch already had */
  readonly repeatedSets: number
}

const customIdsOf = (file: string): Array<string> => {
  let text: string
  try {
    text = fs.readFileSync(file, "utf8")
  } catch {
    return []
  }
  const out: Array<string> = []
  for (const line of text.split("\n")) {
    if (line.length === 0) continue
    try {
      const id = (JSON.parse(line) as { custom_id?: unknown }).custom_id
      if (typeof id === "string") out.push(id)
    } catch {
      // not a request
    }
  }
  return out
}

/** custom id → result type of an ended batch */
const outcomesOf = (file: string): Map<string, string> => {
  const out = new Map<string, string>()
  let text: string
  try {
    text = fs.readFileSync(file, "utf8")
  } catch {
    return out
  }
  for (const line of text.split("\n")) {
    if (line.length === 0) continue
    try {
      const parsed = JSON.parse(line) as { custom_id?: unknown; result?: { type?: unknown } }
      if (typeof parsed.custom_id === "string") out.set(parsed.custom_id, String(parsed.result?.type ?? "unknown"))
    } catch {
      // not a result
    }
  }
  return out
}

/** the counters now; `withIds`: include every batch's custom ids */
export const counters = (store: Store, creates: Creates, withIds: boolean): Counters => {
  const batches = [...store.batches.values()].sort((a, b) => a.seq - b.seq)
  const last = new Map<string, { readonly rec: BatchRecord }>()
  const outcomes = new Map<string, Map<string, string>>()
  const outcomeOf = (rec: BatchRecord, id: string): string => {
    if (rec.final === null) return "pending"
    let map = outcomes.get(rec.id)
    if (map === undefined) {
      map = outcomesOf(store.resultsPath(rec.id))
      outcomes.set(rec.id, map)
    }
    return map.get(id) ?? "missing"
  }
  const sets = new Set<string>()
  let sent = 0
  let twice = 0
  let retried = 0
  let repeatedSets = 0
  const out: Array<BatchCounters> = []
  for (const rec of batches) {
    const ids = rec.deleted_ms === null ? customIdsOf(store.requestsPath(rec.id)) : []
    const set = [...ids].sort().join("\n")
    if (ids.length > 0 && sets.has(set)) repeatedSets++
    sets.add(set)
    for (const id of ids) {
      sent++
      const before = last.get(id)
      if (before !== undefined) {
        const outcome = outcomeOf(before.rec, id)
        if (outcome === "pending" || outcome === "succeeded") twice++
        else retried++
      }
      last.set(id, { rec })
    }
    out.push({
      id: rec.id,
      created_ms: rec.created_ms,
      answered_ms: rec.answered_ms ?? null,
      total: rec.total,
      status: rec.final === null ? "in_progress" : "ended",
      cancel_ms: rec.cancel_ms,
      results_downloads: rec.results_downloads ?? 0,
      ...(withIds ? { custom_ids: ids } : {})
    })
  }
  return {
    creates: { ...creates },
    unanswered: batches.filter((b) => b.answered_ms === null).length,
    batches: out,
    requests: { sent, distinct: last.size, sentTwiceWithoutFailure: twice, retried },
    repeatedSets
  }
}
