/**
 * The emulator's server-wide faults: HTTP errors on chosen endpoints, creates
 * that go through and still answer 500, downloads cut mid-body, and the pick
 * of the batches that will fail as a whole. Every choice is either "the first
 * N" (counted since the emulator started) or a draw from a hash of (seed,
 * what is being counted, its ordinal), never from `Math.random` or the clock:
 * the same calls in the same order meet the same faults.
 */
import { Hash } from "../../local/Kit.ts"
import * as Answer from "./answer.ts"
import type { InjectedFailure } from "./store.ts"

// ===== knobs =====

/** the endpoints a fault can target, by their SDK method name */
export const ENDPOINTS = [
  "files.create",
  "files.retrieve",
  "files.content",
  "files.list",
  "files.delete",
  "batches.create",
  "batches.retrieve",
  "batches.list",
  "batches.cancel",
  "chat.completions.create",
  "embeddings.create"
] as const

export type EndpointName = typeof ENDPOINTS[number]

/** an HTTP fault on an endpoint (see `Emulator.Options.endpointFaults`) */
export interface EndpointFault {
  readonly endpoint: EndpointName | "*"
  readonly status: number
  readonly times?: number | undefined
  readonly rate?: number | undefined
  readonly retryAfter?: number | undefined
}

/** a whole-batch failure rule (see `Emulator.Options.failBatches`) */
export interface FailBatches {
  readonly rate?: number | undefined
  readonly times?: number | undefined
  readonly code: string
  readonly message?: string | undefined
}

/** the server-wide fault knobs */
export interface FaultKnobs {
  readonly seed: number
  readonly endpointFaults: ReadonlyArray<EndpointFault>
  readonly createSucceedsThenFails: number
  readonly resetDownloads: { readonly times: number; readonly afterBytes: number } | null
  readonly failBatches: FailBatches | null
}

/** what is wrong with fault knobs read from JSON, or undefined */
export const check = (knobs: FaultKnobs): string | undefined => {
  for (const [i, f] of knobs.endpointFaults.entries()) {
    if (f.endpoint !== "*" && !(ENDPOINTS as ReadonlyArray<string>).includes(f.endpoint)) {
      return `endpointFaults[${i}].endpoint: '${String(f.endpoint)}' is not one of '*', ${ENDPOINTS.map((e) => `'${e}'`).join(", ")}`
    }
    if (!Number.isInteger(f.status) || f.status < 400 || f.status > 599) {
      return `endpointFaults[${i}].status: ${String(f.status)} is not an HTTP error status (400-599)`
    }
  }
  if (knobs.failBatches !== null && (typeof knobs.failBatches.code !== "string" || knobs.failBatches.code.length === 0)) {
    return "failBatches.code: a non-empty string is required"
  }
  return undefined
}

// ===== draws =====

/**
 * Whether the `index`-th (0-based) occurrence fires: the first `times` do;
 * after them each fires with probability `rate` (a hash of seed, key, index);
 * with neither, every one does.
 */
const fires = (index: number, times: number | undefined, rate: number | undefined, seed: number, key: string): boolean => {
  if (times === undefined && rate === undefined) return true
  if (times !== undefined && index < times) return true
  return rate !== undefined && Hash.unit(`${key}\u0000${index}`, seed) < rate
}

/** the live fault state: counters since the emulator started */
export interface Faults {
  /** the fault answering this call to `name` (the call is counted), or undefined */
  readonly endpoint: (name: EndpointName) => EndpointFault | undefined
  /** counts a batch that was created; true: answer 500 although it exists */
  readonly createFailsAfter: () => boolean
  /** counts a file download about to succeed; a number: send that many bytes, then drop the connection */
  readonly resetDownload: () => number | undefined
  /** counts a batch being created; its whole-batch failure, or null */
  readonly batchFailure: () => InjectedFailure | null
}

export const make = (knobs: FaultKnobs): Faults => {
  const seen = knobs.endpointFaults.map(() => 0)
  let creates = 0
  let downloads = 0
  let batches = 0
  return {
    endpoint: (name) => {
      for (const [i, f] of knobs.endpointFaults.entries()) {
        if (f.endpoint !== "*" && f.endpoint !== name) continue
        const index = seen[i]!++
        if (fires(index, f.times, f.rate, knobs.seed, `endpoint\u0000${i}\u0000${f.endpoint}`)) return f
      }
      return undefined
    },
    createFailsAfter: () => creates++ < knobs.createSucceedsThenFails,
    resetDownload: () => {
      const reset = knobs.resetDownloads
      if (reset === null) return undefined
      return downloads++ < reset.times ? Math.max(0, Math.floor(reset.afterBytes)) : undefined
    },
    batchFailure: () => {
      const rule = knobs.failBatches
      const index = batches++
      if (rule === null || !fires(index, rule.times, rule.rate, knobs.seed, "failBatches")) return null
      return { code: rule.code, message: rule.message ?? null }
    }
  }
}

// ===== answers =====

/** the error body of an injected endpoint fault, in the API's error shape */
export const faultBody = (status: number, path: string, retryAfter: number): Answer.ErrorBody => {
  switch (status) {
    case 429:
      return Answer.errorBody(`Rate limit reached for requests to ${path}. Please try again in ${retryAfter}s.`, {
        type: "requests",
        code: "rate_limit_exceeded"
      })
    case 500:
      return Answer.errorBody("The server had an error while processing your request. Sorry about that!", { type: "server_error" })
    case 502:
      return Answer.errorBody("Bad gateway.", { type: "server_error", code: "bad_gateway" })
    case 503:
      return Answer.errorBody("The server is overloaded or not ready yet.", { type: "server_error", code: "service_unavailable" })
    default:
      return Answer.errorBody(`The request failed with status ${status}.`, {
        type: status >= 500 ? "server_error" : "invalid_request_error"
      })
  }
}
