/**
 * Injected HTTP faults of the Google emulators: an error status on chosen
 * endpoints, for the first N calls or at a rate. Deterministic given the seed:
 * "the first N" counts calls in arrival order since the emulator started, and
 * rates are draws from a hash of (seed, rule, ordinal), never `Math.random`.
 *
 * @internal
 */
import * as crypto from "node:crypto"
import { GoogleError } from "./http.ts"

/** an HTTP fault on an endpoint (`"*"`: any) */
export interface EndpointFault<Name extends string> {
  readonly endpoint: Name | "*"
  /** any HTTP error status; 429 and 5xx are retried by the official clients */
  readonly status: number
  /** the first N calls that reach this rule fail */
  readonly times?: number | undefined
  /** after `times`, each call fails with this probability; neither: every call fails */
  readonly rate?: number | undefined
}

/** a number in [0, 1) from a hash of `key` and `seed` */
export const unit = (key: string, seed: number): number =>
  crypto.createHash("sha256").update(`${seed}\u0000${key}`).digest().readUInt32BE(0) / 0x1_0000_0000

/** whether the `index`-th (0-based) occurrence fires */
export const fires = (index: number, times: number | undefined, rate: number | undefined, seed: number, key: string): boolean => {
  if (times === undefined && rate === undefined) return true
  if (times !== undefined && index < times) return true
  return rate !== undefined && unit(`${key}\u0000${index}`, seed) < rate
}

/** what is wrong with endpoint faults read from JSON, or undefined */
export const check = <Name extends string>(faults: ReadonlyArray<EndpointFault<Name>>, endpoints: ReadonlyArray<Name>): string | undefined => {
  for (const [i, f] of faults.entries()) {
    if (f.endpoint !== "*" && !endpoints.includes(f.endpoint)) {
      return `endpointFaults[${i}].endpoint: '${String(f.endpoint)}' is not one of '*', ${endpoints.map((e) => `'${e}'`).join(", ")}`
    }
    if (!Number.isInteger(f.status) || f.status < 400 || f.status > 599) {
      return `endpointFaults[${i}].status: ${String(f.status)} is not an HTTP error status (400-599)`
    }
  }
  return undefined
}

const REASON: Record<number, string> = {
  400: "invalid",
  403: "rateLimitExceeded",
  404: "notFound",
  429: "rateLimitExceeded",
  500: "backendError",
  502: "backendError",
  503: "backendError"
}

const MESSAGE: Record<number, string> = {
  429: "Exceeded rate limits: too many api requests per user per method for this user_method. For more information, see https://cloud.google.com/bigquery/docs/troubleshoot-quotas",
  500: "Backend error. Job aborted.",
  502: "Bad gateway.",
  503: "The service is currently unavailable."
}

/** the fault state: `(endpoint) => error to answer, or undefined`; every rule a call reaches counts it */
export const make = <Name extends string>(faults: ReadonlyArray<EndpointFault<Name>>, seed: number) => {
  const seen = faults.map(() => 0)
  return (name: Name): GoogleError | undefined => {
    for (const [i, f] of faults.entries()) {
      if (f.endpoint !== "*" && f.endpoint !== name) continue
      const index = seen[i]!++
      if (fires(index, f.times, f.rate, seed, `endpoint\u0000${i}\u0000${f.endpoint}`)) {
        return new GoogleError({
          status: f.status,
          message: MESSAGE[f.status] ?? `The request failed with status ${f.status} (injected by the emulator).`,
          reason: REASON[f.status] ?? (f.status >= 500 ? "backendError" : "invalid")
        })
      }
    }
    return undefined
  }
}
